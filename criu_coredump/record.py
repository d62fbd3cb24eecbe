"""Record: the repr and == of the package's plain records, without dataclasses.

The records (model.Vma, model.Process, arch.Arch, convert.CoreResult, ...)
were dataclasses.  Importing dataclasses (it imports inspect, ast, dis,
tokenize) and typing, and the code @dataclass generates and compiles for
each class, at every start, were a third of the CPU time of converting a
small process: paid once per run, and once per process of a tree.  A record
now writes its own __init__, whose parameters are its fields in order, and
inherits from here what @dataclass gave it: a repr naming the fields, ==
comparing them, and no hash (FrozenRecord: a hash of the fields, for the
records that were frozen and may be dict keys).

Annotations in the modules using it are not evaluated (`from __future__
import annotations`), so `int | None` and `list[str]` need neither typing
nor a recent Python.
"""


_FIELDS = {}


def fields(cls):
    """The field names of a record class: its __init__'s parameters."""
    names = _FIELDS.get(cls)
    if names is None:
        code = cls.__init__.__code__
        names = _FIELDS[cls] = code.co_varnames[
            1:code.co_argcount + code.co_kwonlyargcount]
    return names


class Record:
    __slots__ = ()

    def _values(self):
        return tuple(getattr(self, f) for f in fields(type(self)))

    def __repr__(self):
        return "%s(%s)" % (type(self).__name__, ", ".join(
            "%s=%r" % (f, getattr(self, f)) for f in fields(type(self))))

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()

    __hash__ = None


class FrozenRecord(Record):
    """A record that is never changed once made: hashed once (an Arch is
    the key of per-arch caches, looked up for every note)."""
    __slots__ = ()

    def __hash__(self):
        h = self.__dict__.get("_hash")
        if h is None:
            h = self.__dict__["_hash"] = hash(self._values())
        return h
