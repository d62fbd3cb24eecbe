"""pycriu's image magics and message classes, each module loaded when first used.

`import pycriu` runs pycriu/__init__.py: its RPC module, its service client,
and pycriu.images, whose pb.py imports every *_pb2 module of CRIU (about 70).
That was half the CPU time of converting a small process, for the ten
messages a conversion reads.  Here pycriu's `images` directory is found
without importing the package (importlib.util.find_spec), and magic.py and
the *_pb2 module of a message are loaded when that message is first asked
for:

    from .criupb import magic, pb
    pb.core_entry      # core_pb2 (and the modules it imports) are loaded now

The *_pb2 modules import each other by top-level name (`import opts_pb2`),
which pycriu makes work by appending its images directory to sys.path; so
does this module, and it loads a message's module under that same top-level
name, so each message has one class whichever module imports it first.  A
message this table does not place, or that another pycriu version keeps in
another module, comes from pycriu.images.pb, imported whole as before.
"""
import importlib
import importlib.util
import os
import sys

from .errors import PYCRIU_MISSING

# the message -> its module in pycriu/images (CRIU's .proto file names)
_MODULE = {
    "core_entry": "core_pb2",
    "mm_entry": "mm_pb2",
    "file_entry": "fdinfo_pb2",
    "reg_file_entry": "regfile_pb2",
    "memfd_inode_entry": "memfd_pb2",
    "remap_file_path_entry": "remap_file_path_pb2",
    "ghost_file_entry": "ghost_file_pb2",
    "ghost_chunk_entry": "ghost_file_pb2",
    "pstree_entry": "pstree_pb2",
    "pagemap_head": "pagemap_pb2",
}


def _images_dir():
    """pycriu's images directory, found without importing pycriu; None
    when pycriu is laid out otherwise (then it is imported whole)."""
    try:
        spec = importlib.util.find_spec("pycriu")
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise ImportError(PYCRIU_MISSING)
    for d in spec.submodule_search_locations or ():
        images = os.path.join(d, "images")
        if os.path.isfile(os.path.join(images, "magic.py")):
            return os.path.realpath(images)
    return None


def _prepare():
    """What importing pycriu would have done before loading a message:
    pycriu 4.2+ picks protobuf's pure-Python implementation on Python 3.14
    (unless the user chose one), and pycriu.images puts its directory on
    sys.path for the *_pb2 modules' imports of each other."""
    if sys.version_info >= (3, 14):
        os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
    if _IMAGES is not None and _IMAGES not in sys.path:
        sys.path.append(_IMAGES)
    if _IMAGES is not None and not any(isinstance(f, _Finder) for f in sys.meta_path):
        # before the path search (PathFinder), which would look for each
        # *_pb2 module in every directory of sys.path before pycriu's
        finders = [getattr(f, "__name__", None) for f in sys.meta_path]
        at = finders.index("PathFinder") if "PathFinder" in finders else len(finders)
        sys.meta_path.insert(at, _Finder(_IMAGES))
    try:
        import google.protobuf  # noqa: F401  (comes with pycriu)
    except ImportError as exc:
        raise ImportError(PYCRIU_MISSING) from exc


class _Finder:
    """Finds pycriu's *_pb2 modules under the top-level names they import
    each other by, in pycriu's images directory at once.  The path search
    finds the same files (that directory is on sys.path, as pycriu puts
    it, last), but only after a miss in every directory before it: for the
    forty-odd modules a conversion loads, a tenth of a small run's
    start-up."""

    def __init__(self, images):
        self.images = images
        self.names = {f[:-3] for f in os.listdir(images) if f.endswith("_pb2.py")}

    def find_spec(self, name, path=None, target=None):
        if path is not None or name not in self.names:
            return None
        return importlib.util.spec_from_file_location(
            name, os.path.join(self.images, name + ".py"))


def _whole_pb():
    try:
        from pycriu.images import pb as whole
    except ImportError as exc:
        raise ImportError(PYCRIU_MISSING) from exc
    return whole


def _load_magic():
    if _IMAGES is None:
        try:
            from pycriu.images import magic as whole
        except ImportError as exc:
            raise ImportError(PYCRIU_MISSING) from exc
        return whole
    # a private name: a top-level `magic` could be another package's
    name = __name__ + "._pycriu_magic"
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(_IMAGES, "magic.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[name] = module
    return module


class _Messages:
    """pycriu.images.pb's message classes, as attributes, loaded on use."""

    def __getattr__(self, name):
        cls = None
        module = _MODULE.get(name)
        if module is not None and _IMAGES is not None and \
                os.path.isfile(os.path.join(_IMAGES, module + ".py")):
            cls = getattr(importlib.import_module(module), name, None)
        if cls is None:
            cls = getattr(_whole_pb(), name)
        setattr(self, name, cls)  # found once
        return cls


def preload():
    """Load every message module a conversion may read, now: before
    --jobs forks its workers, so that each does not load them again."""
    for name in _MODULE:
        getattr(pb, name)


_IMAGES = _images_dir()
_prepare()
magic = _load_magic()
pb = _Messages()
