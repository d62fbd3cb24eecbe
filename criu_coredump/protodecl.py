"""Our own declarations of CRIU protobuf messages or fields that the
installed pycriu may not know (Debian 12's pycriu 3.17 has no riscv64 or
loongarch64 thread info, no aarch64 PAC keys, no 64-bit pagemap count).

A leaf module: it needs protobuf only.  A declaration is written as CRIU's
.proto has it, one (name, [(field, number, type)]) per message, the type
being a scalar name ("uint64", "uint32") or another message of the same
declaration; "repeated " in front of the type makes the field repeated.
"""
from .errors import PYCRIU_MISSING

try:
    # protobuf comes with pycriu (the distribution's python3-protobuf)
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
except ImportError as exc:  # pragma: no cover - exercised by the packaging test
    # the message images.py gives when pycriu is missing: the arch modules
    # may be imported first
    raise ImportError(PYCRIU_MISSING) from exc

PACKAGE = "criu_coredump"
_F = descriptor_pb2.FieldDescriptorProto
_SCALARS = {"uint64": _F.TYPE_UINT64, "uint32": _F.TYPE_UINT32,
            "int32": _F.TYPE_INT32, "bool": _F.TYPE_BOOL, "bytes": _F.TYPE_BYTES}


def message_class(fdp, name):
    """The class of message `name` of a FileDescriptorProto (package
    criu_coredump)."""
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    desc = pool.FindMessageTypeByName(PACKAGE + "." + name)
    if hasattr(message_factory, "GetMessageClass"):
        return message_factory.GetMessageClass(desc)
    return message_factory.MessageFactory(pool).GetPrototype(desc)


def declare(file_name, messages, want):
    """The class of message `want` among `messages`, declared in a file of
    its own (`file_name`, unique in the package).  Every field is declared
    optional (or repeated): a declaration reads, it never validates."""
    fdp = descriptor_pb2.FileDescriptorProto(name=file_name, package=PACKAGE)
    for mname, fields in messages:
        m = fdp.message_type.add(name=mname)
        for fname, number, typ in fields:
            label = _F.LABEL_OPTIONAL
            if typ.startswith("repeated "):
                label, typ = _F.LABEL_REPEATED, typ[len("repeated "):]
            f = m.field.add(name=fname, number=number, label=label)
            if typ in _SCALARS:
                f.type = _SCALARS[typ]
            else:
                f.type, f.type_name = _F.TYPE_MESSAGE, ".%s.%s" % (PACKAGE, typ)
    return message_class(fdp, want)


_declared = {}  # (message class, field name) -> whether its declaration has it


def declares(msg, field):
    """Whether the installed pycriu's class of msg declares `field` (else a
    field CRIU wrote is kept as unknown and read with our own declaration);
    asked per thread, so answered once per class."""
    key = (type(msg), field)
    known = _declared.get(key)
    if known is None:
        known = _declared[key] = field in msg.DESCRIPTOR.fields_by_name
    return known
