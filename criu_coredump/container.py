"""Container checkpoint archives: which runtime wrote one, what it says about
the container, and the container's files at checkpoint time.

Layouts, from the runtimes' sources:

* Podman and CRI-O (checkpointctl's lib/metadata.go names the files):
  `config.dump`, `spec.dump`, `checkpoint/` (the CRIU images),
  `rootfs-diff.tar` (what the container changed), `deleted.files` (a JSON
  list of what it removed), `network.status`, `stats-dump`, ...  CRI-O
  (Kubernetes' forensic checkpointing, written by kubelet as
  checkpoint-<pod>_<namespace>-<container>-<time>.tar) is the same family,
  told apart by the spec's annotations (`io.container.manager: cri-o`,
  `io.kubernetes.pod.name`, ...: CRI-O's container_checkpoint.go writes
  config.dump with checkpointedTime).  A pod archive (`pod.dump`,
  `pod.options`) or a kubelet one holding pods (`checkpointed.pods`), or
  an archive with several containers' config.dump, is refused naming the
  containers: one core file set is one container.
* containerd (`ctr checkpoint` then `ctr image export`): an OCI image
  layout (`oci-layout`, `index.json`, `blobs/sha256/...`) whose checkpoint
  index lists the CRIU images as a tar of media type
  application/vnd.containerd.container.criu.checkpoint.criu.tar, the spec as
  ...checkpoint.config.v1+proto (a protobuf Any holding the spec's JSON)
  and the container's changes as an image layer (tar+gzip); names from
  containerd's images/mediatypes.go, container_checkpoint_opts.go and the
  index annotations of container.go.

A plain (uncompressed) archive is read in place: the small images are
copied out, the pages images are read where they lie in the archive
(ArchiveImageDir).  A compressed one is streamed once into a private
directory inside OUTDIR; for zstd and gzip (STREAMED) its pages images
are written with their size and no data, and a conversion reads the pages
from the archive again (StreamImageDir, archive_stream.py), so they are
written once, into the core.  Either way the private directory is removed
on every exit path.
"""
from __future__ import annotations

import json
import os
import posixpath
import re
import stat
from datetime import datetime, timezone

from . import archive
from .archive import BadArchive, Member
from .imagedir import ImageDir, ImageFile, StreamedImage
from .inputs import Input, archive_file
from .record import Record
from .rootfs import READ_FLAGS, regular
from .writer import copy_range

MT_CRIU = "application/vnd.containerd.container.criu.checkpoint.criu.tar"
MT_CONFIG = "application/vnd.containerd.container.checkpoint.config.v1+proto"
MT_RW = ("application/vnd.oci.image.layer.v1.tar+gzip",
         "application/vnd.containerd.container.rw.tar",
         "application/vnd.oci.image.layer.v1.tar")
MT_INDEX = ("application/vnd.oci.image.index.v1+json",
            "application/vnd.docker.distribution.manifest.list.v2+json")
PAGES = re.compile(r"pages-\d+\.img$")
SKIPPED = ("devshm-checkpoint.tar", "ctr.log", "network.status", "stats-dump",
           "stats-restore", "bind.mounts")
SMALL = 64 << 20   # metadata files larger than this are not metadata
# compressions whose archives' pages are read by decompressing them again
# (StreamImageDir) rather than unpacked with the small images: those that
# decompress faster than a file system writes.  xz and bzip2 decompress at
# a fraction of that: a second pass would cost more than the pages' copy.
STREAMED = ("zstd", "gzip")


class ContainerInfo(Record):
    """What --list and --json tell about the container of an archive."""

    def __init__(self, engine: str, name: str = "", id: str = "",
                 image: str = "", runtime: str = "", pod: str = "",
                 namespace: str = "", created: str = "", checkpointed: str = ""):
        self.engine = engine              # podman, cri-o, containerd
        self.name = name
        self.id = id
        self.image = image
        self.runtime = runtime            # the OCI runtime (runc, crun, ...)
        self.pod = pod
        self.namespace = namespace
        self.created = created
        self.checkpointed = checkpointed

    def record(self) -> dict:
        return {"engine": self.engine, "name": self.name or None,
                "id": self.id or None, "image": self.image or None,
                "runtime": self.runtime or None, "pod": self.pod or None,
                "namespace": self.namespace or None,
                "created": self.created or None,
                "checkpointed": self.checkpointed or None}

    def line(self) -> str:
        parts = ["container %s (%s)" % (self.name or "?", self.engine)]
        if self.pod:
            parts.append("pod %s/%s" % (self.namespace or "?", self.pod))
        for k in ("image", "runtime", "checkpointed"):
            v = getattr(self, k)
            if v:
                parts.append("%s %s" % (k, v))
        return ", ".join(parts)


# -- the members of an archive, wherever their bytes are ----------------------

class Tree:
    """An archive's members by name, and where each regular member's bytes
    are: (file, offset, size).  Links are never followed here: a layout
    file must be a regular member."""

    def __init__(self, name: str, members: dict[str, Member], where):
        self.name = name
        self.members = members
        self._where = where
        self.src = None  # (fd, base, size, kind, name) when compressed

    def regular(self, name: str) -> Member | None:
        m = self.members.get(name)
        if m is None:
            return None
        if m.type != archive.REG:
            raise BadArchive(self.name, "%s is a %s, not a file" % (name, m.type))
        return m

    def where(self, name: str):
        m = self.regular(name)
        return self._where(m)

    def read(self, name: str) -> bytes:
        m = self.regular(name)
        if m.size > SMALL:
            raise BadArchive(self.name, "%s is %d bytes: too big" % (name, m.size))
        path, off, size = self._where(m)
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            data = os.pread(fd, size, off)
        finally:
            os.close(fd)
        if len(data) < size:
            raise BadArchive(self.name, "%s: truncated" % name)
        return data

    def json(self, name: str):
        try:
            return json.loads(self.read(name))
        except (ValueError, UnicodeDecodeError) as e:
            raise BadArchive(self.name, "%s is not JSON: %s" % (name, e)) from None

    def names_under(self, prefix: str):
        p = prefix + "/" if prefix else ""
        return [n for n in self.members if n.startswith(p)]


def _plain_tree(path: str, fd: int, name: str, base=0, size=None) -> Tree:
    members = archive.index(archive.RangeReader(fd, base, size), name)
    for m in members.values():
        end = base + m.offset + m.size
        if m.type == archive.REG and end > os.fstat(fd).st_size:
            raise BadArchive(name, "truncated: member %s ends past the end "
                             "of the file" % m.name)
    return Tree(name, members, lambda m: (path, base + m.offset, m.size))


def _unpacked_tree(stream, name: str, dest: str, sizes_only=None,
                   keep=None) -> Tree:
    os.mkdir(dest, 0o700)
    members = archive.unpack(stream, name, dest, keep=keep, sparse_only=sizes_only)
    real = os.path.realpath(dest)
    for m in members.values():
        if m.type == archive.SYMLINK:
            # the real chain, not only the lexical check made while reading
            rp = os.path.realpath(os.path.join(dest, m.name))
            if rp != real and not rp.startswith(real + "/"):
                raise BadArchive(name, "symlink member %r points out of the "
                                 "archive (-> %s): refused" % (m.name, m.linkname))
    return Tree(name, members, lambda m: (os.path.join(dest, m.name), 0, m.size))


def _open_tree(path: str, fd: int, name: str, tmp: str, sub: str, base=0,
               size=None, sizes_only=None, keep=None, on_kind=None):
    """A Tree of the tar at [base, base+size) of fd: in place when plain,
    else streamed once into tmp/sub (what keep() refuses is not written).
    Returns (tree, plain); a streamed tree's `src` is (fd, base, size,
    kind, name): what archive_stream decompresses again."""
    kind, stream = archive.open_stream(fd, name, base, size)
    if on_kind is not None:
        on_kind(kind)
    if kind == "tar":
        return _plain_tree(path, fd, name, base, size), True
    tree = _unpacked_tree(stream, name, os.path.join(tmp, sub), sizes_only,
                          keep)
    tree.src = (fd, base, stream.src.size, kind, name)
    return tree, False


class ArchiveImageDir(ImageDir):
    """The image directory of a plain archive: the small images copied out
    into `path`, the pages images read where they lie in the archive
    (`placed`: name -> (archive, offset, size)), through ImageDir's seam."""

    def __init__(self, path: str, placed: dict[str, tuple]):
        super().__init__(path)
        self.placed = placed

    def open(self, name: str) -> ImageFile:
        p = self.placed.get(name)
        if p is None:
            return super().open(name)
        return ImageFile(regular(os.open(p[0], READ_FLAGS), p[0]), p[1], p[2])

    def size(self, name: str) -> int:
        p = self.placed.get(name)
        return p[2] if p is not None else super().size(name)

    def exists(self, name: str) -> bool:
        return name in self.placed or super().exists(name)

    def lexists(self, name: str) -> bool:
        return name in self.placed or super().lexists(name)

    def parent(self):
        return None  # an archive holds one checkpoint, no pre-dump chain


class StreamImageDir(ImageDir):
    """The image directory of a compressed archive, unpacked below `root`
    with its pages images sized and empty: those are opened as
    StreamedImages read from the archive again (archive_stream.PagesStream,
    `stream`, whose members are named relative to `root`)."""

    def __init__(self, path: str, root: str, stream):
        super().__init__(path)
        self.root = root
        self.stream = stream

    def _member(self, name: str):
        rel = os.path.relpath(os.path.realpath(self.join(name)),
                              os.path.realpath(self.root))
        return rel if rel in self.stream.members else None

    def open(self, name: str) -> ImageFile:
        member = self._member(name)
        if member is None:
            return super().open(name)
        read = self.stream.pread
        return StreamedImage(lambda n, off: read(member, n, off),
                             self.stream.members[member][1],
                             lambda n, off: read(member, n, off, partial=True))

    def before_reads(self, pages):
        """Before the first small read (sources.PageSources.read): fetch
        what every process's will ask for, in one pass."""
        st = self.stream
        if st.prefetched:
            return
        st.prefetched = True
        from .archive_stream import small_reads
        wanted = []
        for name, off, n in small_reads(pages):
            member = self._member(name)
            if member is not None:
                wanted.append((member, off, n))
        st.prefetch(wanted)

    def parent(self):
        p = super().parent()
        return None if p is None else StreamImageDir(p.path, self.root,
                                                     self.stream)


def _time(value) -> str:
    """A timestamp as RFC 3339 UTC, or "" for Go's zero time."""
    if not value or str(value).startswith("0001-01-01"):
        return ""
    return str(value)


def _mtime(m: Member | None) -> str:
    if m is None or not m.mtime:
        return ""
    return datetime.fromtimestamp(m.mtime, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _config_info(tree: Tree, prefix: str) -> ContainerInfo:
    j = lambda n: posixpath.join(prefix, n) if prefix else n
    cfg = tree.json(j("config.dump")) if tree.members.get(j("config.dump")) else {}
    spec = tree.json(j("spec.dump")) if tree.members.get(j("spec.dump")) else {}
    if not isinstance(cfg, dict) or not isinstance(spec, dict):
        raise BadArchive(tree.name, "config.dump or spec.dump is not a JSON object")
    ann = spec.get("annotations") or {}
    manager = ann.get("io.container.manager", "")
    if manager == "cri-o" or (manager != "libpod" and "io.kubernetes.pod.name" in ann):
        engine = "cri-o"
    else:
        engine = "podman"
    info = ContainerInfo(engine=engine)
    info.name = ann.get("io.kubernetes.container.name") or str(cfg.get("name") or "")
    info.id = str(cfg.get("id") or "")
    info.image = str(cfg.get("rootfsImageName") or cfg.get("rootfsImage")
                     or ann.get("io.kubernetes.cri-o.ImageName") or "")
    info.runtime = str(cfg.get("runtime") or "")
    info.pod = ann.get("io.kubernetes.pod.name", "")
    info.namespace = ann.get("io.kubernetes.pod.namespace", "")
    info.created = _time(cfg.get("createdTime"))
    # CRI-O (and later Podman) record it; else when CRIU wrote its inventory
    info.checkpointed = _time(cfg.get("checkpointedTime")) or \
        _mtime(tree.members.get(j("checkpoint/inventory.img")))
    return info


def _refuse_many(tree: Tree, what: str, names: list[str]):
    raise BadArchive(tree.name, "%s holds %d containers (%s): give one "
                     "container's checkpoint archive" % (what, len(names),
                                                          ", ".join(names)))


def _several(tree: Tree):
    """Pod and kubelet archives, and any archive with more than one
    container's config.dump: refused, naming what they hold."""
    if "checkpointed.pods" in tree.members:
        meta = tree.json("checkpointed.pods")
        names = []
        for pod in (meta.get("CheckpointedPods") or []) if isinstance(meta, dict) else []:
            for c in pod.get("Containers") or []:
                names.append("%s/%s" % (pod.get("io.kubernetes.pod.name", "?"),
                                        c.get("io.kubernetes.container.name", "?")))
        _refuse_many(tree, "a kubelet checkpoint archive", names or ["?"])
    if "pod.dump" in tree.members or "pod.options" in tree.members:
        names = []
        if "pod.options" in tree.members:
            opts = tree.json("pod.options")
            names = [str(c) for c in (opts.get("containers") or [])] \
                if isinstance(opts, dict) else []
        _refuse_many(tree, "a pod checkpoint archive", names or ["?"])
    configs = sorted(n for n in tree.members
                     if n == "config.dump" or n.endswith("/config.dump"))
    if len(configs) > 1:
        names = []
        for c in configs:
            prefix = posixpath.dirname(c)
            try:
                names.append(_config_info(tree, prefix).name or prefix or "?")
            except BadArchive:
                names.append(prefix or "?")
        _refuse_many(tree, "the archive", names)
    return configs[0] if configs else None


def _found(tree: Tree) -> str:
    names = sorted(tree.members)
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    return "no CRIU checkpoint in this archive (no checkpoint/ with " \
        "config.dump, no OCI layout with a CRIU layer, no pstree.img); it " \
        "holds %d members: %s" % (len(names), shown or "none")


def _any_value(blob: bytes) -> bytes:
    """The value (field 2) of a protobuf Any: containerd keeps the spec so."""
    from google.protobuf import any_pb2
    a = any_pb2.Any()
    a.ParseFromString(blob)
    return a.value


class _Opener:
    """Opens an archive into a private directory (see open_input)."""

    def __init__(self, path, parent, listing):
        self.path = path
        self.listing = listing
        self.tmp = archive.private_dir(parent)
        self.inp = Input(path=path, images_dir="", tmp=self.tmp)
        self.fds = []
        self.streaming = False  # the tree being opened: pages left unpacked

    def open_fd(self, path):
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self.fds.append(fd)
        return fd

    def close_fds(self):
        for fd in self.fds:
            os.close(fd)
        self.fds = []

    def _wanted(self, m):
        """What a compressed archive's stream writes out: not what a
        runtime keeps for a restore only (/dev/shm, logs, network status,
        statistics, artifacts), so the temporary space is about the pages."""
        base = m.name.rsplit("/", 1)[-1]
        top = m.name.split("/", 1)[0]
        return base not in SKIPPED and top != "artifacts"

    def _sizes_only(self, m):
        # the pages get their size and no data: --list reads none, and a
        # conversion reads them from the archive again (StreamImageDir)
        return ((self.listing or self.streaming)
                and PAGES.search(m.name) is not None)

    def _kind(self, kind):
        self.streaming = kind in STREAMED and not self.listing

    def _streamed(self, tree: Tree, root: str, d: str):
        """The ImageDir of an unpacked image directory d (below root, the
        unpacked tree's directory) whose pages are read from the archive
        again; d itself (a path) for --list, which reads no pages."""
        if not self.streaming:
            return d
        from .archive_stream import PagesStream
        members = {}
        for m in tree.members.values():
            if m.type == archive.REG and PAGES.search(m.name):
                members[m.name] = (m.offset, m.size)
        for m in tree.members.values():  # a hard link reads its target
            if m.type == archive.HARDLINK and m.linkname in members:
                members[m.name] = members[m.linkname]
        # the file read in the first pass, whatever has its name later
        fd = os.dup(tree.src[0])
        try:
            stream = PagesStream((fd,) + tree.src[1:], members, self.tmp)
        except BaseException:
            os.close(fd)
            raise
        self.inp.streams.append(stream)
        return StreamImageDir(d, root, stream)

    def run(self):
        fd = self.open_fd(self.path)
        tree, plain = _open_tree(self.path, fd, self.path, self.tmp, "x",
                                 sizes_only=self._sizes_only, keep=self._wanted,
                                 on_kind=self._kind)
        self.inp.shown["x"] = self.path + ":"
        config = _several(tree)
        if config is not None:
            prefix = posixpath.dirname(config)
            self.inp.container = _config_info(tree, prefix)
            j = lambda n: posixpath.join(prefix, n) if prefix else n
            self._images(tree, plain, j("checkpoint"))
            if tree.members.get(j("rootfs-diff.tar")):
                self._diff(tree, j("rootfs-diff.tar"))
            if tree.members.get(j("deleted.files")):
                deleted = tree.json(j("deleted.files"))
                if not isinstance(deleted, list):
                    raise BadArchive(self.path, "deleted.files is not a list")
                self.inp.deleted = [str(p) for p in deleted]
        elif "index.json" in tree.members and "oci-layout" in tree.members:
            self._containerd(tree)
        else:
            trees = [n for n in tree.members
                     if n == "pstree.img" or n.endswith("/pstree.img")]
            if len(trees) != 1:
                raise BadArchive(self.path, _found(tree))
            self._images(tree, plain, posixpath.dirname(trees[0]))
        return self.inp

    def _images(self, tree: Tree, plain: bool, prefix: str):
        """The image directory: in place for a plain archive (small images
        copied out, pages read where they lie), the unpacked one else."""
        names = [n for n in tree.names_under(prefix)
                 if "/" not in n[len(prefix) + 1 if prefix else 0:]]
        if not any(n.endswith("pstree.img") for n in names):
            raise BadArchive(self.path, "%s/ holds no pstree.img: not a CRIU "
                             "image directory" % (prefix or "."))
        if not plain:
            d = os.path.join(self.tmp, "x", prefix)
            st = os.lstat(d)
            if not stat.S_ISDIR(st.st_mode):
                raise BadArchive(self.path, "%s is not a directory" % prefix)
            self.inp.images_dir = self._streamed(
                tree, os.path.join(self.tmp, "x"), d)
            return
        d = os.path.join(self.tmp, "ckpt")
        os.mkdir(d, 0o700)
        placed = {}
        self.inp.shown["ckpt"] = "%s:%s" % (tree.name, prefix + "/" if prefix else "")
        for n in names:
            m = tree.members[n]
            if m.type != archive.REG:
                continue
            base = n.rsplit("/", 1)[-1]
            src, off, size = tree.where(n)
            if PAGES.fullmatch(base):
                placed[base] = (src, off, size)
                continue
            _copy_out(src, off, size, os.path.join(d, base), self.path)
        self.inp.images_dir = ArchiveImageDir(d, placed)

    def _diff(self, tree: Tree, name: str):
        """rootfs-diff.tar (or containerd's rw layer) unpacked: its symlinks
        may be absolute (they are the container's), they are followed only
        below the diff by RootFS, never while unpacking."""
        src, off, size = tree.where(name)
        fd = self.open_fd(src)
        label = "%s:%s" % (self.path, name)
        kind, stream = archive.open_stream(fd, label, off, size)
        d = os.path.join(self.tmp, "diff")
        os.mkdir(d, 0o700)
        self.inp.shown["diff"] = label + ":"
        archive.unpack(stream, label, d, links_out=True)
        self.inp.diff_dir = d

    def _containerd(self, tree: Tree):
        top = tree.json("index.json")
        index, top_ann = self._checkpoint_index(tree, top)
        ann = dict(top_ann)
        ann.update(index.get("annotations") or {})
        criu = config = rw = None
        for d in index.get("manifests") or []:
            mt = d.get("mediaType")
            if mt == MT_CRIU:
                criu = d
            elif mt == MT_CONFIG:
                config = d
            elif mt in MT_RW:
                rw = d
        if criu is None:
            raise BadArchive(self.path, "OCI layout without a CRIU checkpoint "
                             "layer (media type %s)" % MT_CRIU)
        info = ContainerInfo(engine="containerd")
        ref = ann.get("io.containerd.image.name") or \
            ann.get("org.opencontainers.image.ref.name", "")
        m = re.match(r"(?:.*/)?checkpoint/([^:]+):(\d\d)-(\d\d)-(\d{4})-(\d\d:\d\d:\d\d)$", ref)
        if m:  # containerd's default name: containerd.io/checkpoint/ID:MM-DD-YYYY-hh:mm:ss
            info.name = m.group(1)
            info.checkpointed = "%s-%s-%sT%sZ" % (m.group(4), m.group(2),
                                                   m.group(3), m.group(5))
        else:
            info.name = ref
        info.image = ann.get("image.name") or \
            ann.get("org.opencontainers.image.ref.name", "")
        info.runtime = ann.get("io.containerd.checkpoint.runtime", "")
        if config is not None:
            try:
                spec = json.loads(_any_value(tree.read(self._blob(config))))
                info.id = (spec.get("hostname") or "") if isinstance(spec, dict) else ""
            except Exception:
                pass  # the spec only adds details
        self.inp.container = info
        # the CRIU layer: a tar of the image directory, read in place where
        # it lies (inside a plain archive, or the unpacked blob)
        src, off, size = tree.where(self._blob(criu))
        fd = self.open_fd(src)
        inner, plain = _open_tree(src, fd, "%s:%s" % (self.path, self._blob(criu)),
                                  self.tmp, "x2", off, size, self._sizes_only,
                                  on_kind=self._kind)
        inner.name = self.path
        self.inp.shown["x2"] = "%s:%s:" % (self.path, self._blob(criu))
        self.inp.container.checkpointed = info.checkpointed or _mtime(
            inner.members.get("inventory.img"))
        if not plain:
            self._images_unpacked(inner)
        else:
            self._images(inner, True, "")
        if rw is not None:
            self._diff(tree, self._blob(rw))

    def _images_unpacked(self, inner: Tree):
        if "pstree.img" not in inner.members:
            raise BadArchive(self.path, "the CRIU layer holds no pstree.img")
        d = os.path.join(self.tmp, "x2")
        self.inp.images_dir = self._streamed(inner, d, d)

    def _blob(self, desc) -> str:
        digest = str(desc.get("digest", ""))
        alg, _, hexd = digest.partition(":")
        if not re.fullmatch(r"[a-z0-9]+", alg or "") or \
                not re.fullmatch(r"[0-9a-f]+", hexd or ""):
            raise BadArchive(self.path, "bad digest %r in the OCI index" % digest)
        return "blobs/%s/%s" % (alg, hexd)

    def _checkpoint_index(self, tree, top):
        """The index listing the CRIU layer: index.json itself, or the one
        index it points to (what `ctr image export` writes)."""
        if not isinstance(top, dict):
            raise BadArchive(self.path, "index.json is not a JSON object")
        mts = [d.get("mediaType") for d in top.get("manifests") or []]
        if MT_CRIU in mts:
            return top, {}
        idx = [d for d in top.get("manifests") or [] if d.get("mediaType") in MT_INDEX]
        for d in idx:
            inner = tree.json(self._blob(d))
            if isinstance(inner, dict) and MT_CRIU in [
                    x.get("mediaType") for x in inner.get("manifests") or []]:
                return inner, d.get("annotations") or {}
        raise BadArchive(self.path, "OCI layout without a CRIU checkpoint layer "
                         "(media type %s)" % MT_CRIU)


def _copy_out(src, off, size, dest, name):
    """Copy [off, off+size) of src into a new file dest (a small image),
    as the core's pages are copied (writer.copy_range): copy_file_range
    refuses two file systems of different types (EXDEV, Linux 5.19 and
    later: an archive on disk, OUTDIR on a tmpfs /tmp, Debian 13's
    default), and the copy goes on another way."""
    sfd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
    try:
        dfd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            if copy_range(sfd, dfd, size, off, 0, name, dest) < size:
                raise BadArchive(name, "truncated: %s ends early"
                                 % os.path.basename(dest))
        finally:
            os.close(dfd)
    finally:
        os.close(sfd)


def open_input(path: str, parent: str | None = None,
               listing: bool = False) -> Input:
    """-i opened.  A directory (or anything that is not a regular file) is
    returned as it is: the image code reports on it as before.  An archive
    is opened into a private directory inside `parent` (OUTDIR; the
    temporary directory when there is none); the caller closes the Input
    (it is a context manager), which removes that directory."""
    if not archive_file(path):
        return Input(path=path, images_dir=path)
    archive.sniff(path)
    op = _Opener(path, parent, listing)
    try:
        return op.run()
    except BaseException:
        op.inp.close()
        raise
    finally:
        op.close_fds()


def root_input(root: str | None, inp: Input,
               parent: str | None = None) -> str | None:
    """--root as a tar of the image's root: unpacked (it is read many times,
    by us and by gdb) into the private directory; a directory is returned
    as it is."""
    if not archive_file(root):
        return root
    archive.sniff(root)
    if inp.tmp is None:
        inp.tmp = archive.private_dir(parent)
    d = os.path.join(inp.tmp, "root")
    os.mkdir(d, 0o700)
    inp.shown["root"] = root + ":"
    fd = os.open(root, os.O_RDONLY | os.O_CLOEXEC)
    try:
        kind, stream = archive.open_stream(fd, root)
        archive.unpack(stream, root, d, links_out=True)
    finally:
        os.close(fd)
    inp.root_dir = d
    return d
