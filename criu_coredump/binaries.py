"""Which host file stands for each mapped file: the one below the root when
it is the build the process mapped, else the one a debuginfod server has
for the recorded build-id.

`Located` is a root (the RootFS interface: open, display, close) that the
memory plan reads mapped files through unchanged: it answers each path with
the file `locate()` picks, so the plan's own build-id check then passes for
a fetched file as for one found below --root, and gdb's sysroot (--gdb) is
made of links to those same files.
"""
import os
from typing import Dict, List, Optional

from .buildid import read_build_id, same_build
from .rootfs import READ_FLAGS, regular


def mapped_elf_files(files, proc) -> List[dict]:
    """[{path, build_id}] of the ELF files a process mapped (those CRIU
    recorded a build-id for), in address order, each once."""
    out, seen = [], set()
    if proc.mm is None:
        return out
    for v in proc.mm.vmas:
        f = files.get(v.shmid) if v.is_file else None
        if f is None or f.kind != "reg" or not f.build_id or f.id in seen:
            continue
        seen.add(f.id)
        out.append({"path": f.path, "build_id": f.build_id.hex()})
    return out


def locate(rootfs, path: str, build_id: Optional[bytes], client):
    """(fd, host path) of the file standing for `path`: below the root when
    its build-id is the recorded one (or none was recorded), else fetched
    by build-id; OSError when neither has it (the error of the root)."""
    err = None
    try:
        fd = rootfs.open(path)
    except OSError as e:
        fd, err = None, e
    if fd is not None:
        if not build_id:
            return fd, rootfs.display(path)
        try:
            ok = same_build(build_id, read_build_id(fd))
        except OSError:
            ok = False
        if ok or client is None:
            return fd, rootfs.display(path)
        os.close(fd)
    if client is not None and build_id:
        got = client.executable(build_id)
        if got is not None:
            return regular(os.open(got, READ_FLAGS | os.O_NOFOLLOW), got), got
    if err is not None:
        raise err
    # the root has another build and no server has this one: the root's
    # file, which the plan refuses naming both build-ids
    return rootfs.open(path), rootfs.display(path)


class Located:
    """A root whose files are the ones locate() picks (see the module)."""

    def __init__(self, rootfs, files, client):
        self.inner = rootfs
        self.client = client
        self.root = getattr(rootfs, "root", None)
        self.base = getattr(rootfs, "base", None)
        self._ids: Dict[str, bytes] = {}
        for f in files.values():
            if f.kind == "reg" and f.build_id:
                self._ids[f.path] = f.build_id
        self._shown: Dict[str, str] = {}

    def open(self, path):
        fd, shown = locate(self.inner, path, self._ids.get(path), self.client)
        self._shown[path] = shown
        return fd

    def display(self, path):
        return self._shown.get(path) or self.inner.display(path)

    def close(self):
        self.inner.close()
