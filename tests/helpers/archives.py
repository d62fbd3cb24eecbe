"""Checkpoint archives assembled at test time, in tmp dirs, from the real
Podman archive of ../shared/fixtures/podman (never committed).

Python's tarfile writes them: a reader independent of ours.  The layouts
follow the runtimes' sources:

* CRI-O / kubelet: CRI-O's internal/lib/container_server checkpoint code
  (CheckpointContainer) writes config.dump (checkpointctl's ContainerConfig
  with checkpointedTime), spec.dump (the OCI spec with CRI-O's io.kubernetes.*
  annotations and io.container.manager=cri-o), checkpoint/, rootfs-diff.tar
  and deleted.files, as an uncompressed tar that kubelet names
  checkpoint-<pod>_<namespace>-<container>-<time>.tar.
* containerd: `ctr checkpoint` (container_checkpoint_opts.go, the tasks
  service's Checkpoint: the CRIU directory tarred as
  ...criu.checkpoint.criu.tar, the spec as a protobuf Any of media type
  ...checkpoint.config.v1+proto, the rw layer as an OCI tar+gzip layer,
  index annotations io.containerd.checkpoint.runtime, image.name) and
  `ctr image export` (an OCI image layout: oci-layout, index.json,
  blobs/sha256/<digest>).
"""
import gzip
import hashlib
import io
import json
import tarfile


def podman_fixture(d):
    """A FIXTURE dir for gdbcheck made in `d` from shared/fixtures/podman:
    its gdb.cmds and ref.core.xz, and root/ the image root unpacked by tar,
    as the fixture's README says."""
    import os
    import shutil
    import subprocess
    from .paths import FIXTURES
    podman = os.path.join(FIXTURES, "podman")
    for f in ("gdb.cmds", "ref.core.xz"):
        shutil.copy(os.path.join(podman, f), os.path.join(d, f))
    os.mkdir(os.path.join(d, "root"))
    subprocess.run(["tar", "xzf", os.path.join(podman, "image-rootfs.tar.gz"),
                    "-C", os.path.join(d, "root")], check=True)
    return str(d)


def podman_members(path):
    """[(TarInfo, bytes or None)] of a real Podman archive, in order."""
    out = []
    with tarfile.open(path) as t:
        for ti in t.getmembers():
            data = t.extractfile(ti).read() if ti.isfile() else None
            out.append((ti, data))
    return out


def write_tar(path, entries, fmt=tarfile.PAX_FORMAT, mode="w"):
    """entries: [(name, bytes)] files, or (TarInfo, bytes or None)."""
    with tarfile.open(path, mode, format=fmt) as t:
        for name, data in entries:
            if isinstance(name, tarfile.TarInfo):
                ti = name
            else:
                ti = tarfile.TarInfo(name)
                ti.size = len(data)
                ti.mode = 0o600
                ti.mtime = 1764043147
            t.addfile(ti, io.BytesIO(data) if data is not None else None)


def _data(members, name):
    return next(d for ti, d in members if ti.name.rstrip("/") == name)


def crio_entries(members, pod="counters", namespace="default",
                 container="victim", deleted=None):
    """A CRI-O container checkpoint's members, made from Podman's."""
    spec = json.loads(_data(members, "spec.dump"))
    spec["annotations"] = dict(spec.get("annotations") or {}, **{
        "io.container.manager": "cri-o",
        "io.kubernetes.pod.name": pod,
        "io.kubernetes.pod.namespace": namespace,
        "io.kubernetes.container.name": container,
        "io.kubernetes.cri-o.ImageName": "localhost/ccd-victim:1"})
    config = {"id": "0123456789abcdef" * 4,
              "name": "k8s_%s_%s_%s_1234_0" % (container, pod, namespace),
              "rootfsImage": "localhost/ccd-victim:1",
              "rootfsImageRef": "d28c09850aed",
              "rootfsImageName": "localhost/ccd-victim:1",
              "runtime": "runc",
              "createdTime": "2026-11-25T03:59:06.779484372Z",
              "checkpointedTime": "2026-11-25T04:10:00Z",
              "restoredTime": "0001-01-01T00:00:00Z", "restored": False}
    out = [("config.dump", json.dumps(config, indent=2).encode()),
           ("spec.dump", json.dumps(spec, indent=2).encode())]
    for ti, d in members:
        if ti.name.startswith("checkpoint/") or ti.name in (
                "rootfs-diff.tar", "checkpoint"):
            out.append((ti, d))
    out.append(("deleted.files", json.dumps(deleted or []).encode()))
    return out


def kubelet_name(pod, namespace, container):
    return "checkpoint-%s_%s-%s-2026-11-25T04:10:00Z.tar" % (pod, namespace, container)


def _blob(layout, data):
    digest = hashlib.sha256(data).hexdigest()
    layout.append(("blobs/sha256/" + digest, data))
    return {"digest": "sha256:" + digest, "size": len(data)}


def _any(type_url, value):
    """A protobuf Any, encoded by hand with its two length-delimited fields
    (the same bytes google.protobuf's Any gives; the test checks)."""
    def field(num, b):
        n = len(b)
        varint = b""
        while True:
            c = n & 0x7F
            n >>= 7
            varint += bytes([c | (0x80 if n else 0)])
            if not n:
                break
        return bytes([num << 3 | 2]) + varint + b
    return field(1, type_url.encode()) + field(2, value)


def containerd_entries(members, rw_tar=None, name="victim"):
    """An exported containerd checkpoint image (OCI layout) made from a
    Podman archive's CRIU images and spec.  rw_tar: the tar laid over the
    image as the container's changes (default: Podman's rootfs-diff.tar)."""
    criu = io.BytesIO()
    with tarfile.open(fileobj=criu, mode="w", format=tarfile.PAX_FORMAT) as t:
        for ti, d in members:
            if ti.name.startswith("checkpoint/") and ti.isfile():
                c = tarfile.TarInfo(ti.name[len("checkpoint/"):])
                c.size, c.mode, c.mtime = ti.size, ti.mode, ti.mtime
                t.addfile(c, io.BytesIO(d))
    spec = _data(members, "spec.dump")
    rw = gzip.compress(rw_tar if rw_tar is not None else _data(members, "rootfs-diff.tar"))
    layout = []
    d_criu = dict(_blob(layout, criu.getvalue()),
                  mediaType="application/vnd.containerd.container.criu.checkpoint.criu.tar")
    d_cfg = dict(_blob(layout, _any(
        "types.containerd.io/opencontainers/runtime-spec/1/Spec", spec)),
        mediaType="application/vnd.containerd.container.checkpoint.config.v1+proto")
    d_rw = dict(_blob(layout, rw), mediaType="application/vnd.oci.image.layer.v1.tar+gzip")
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [d_criu, d_cfg, d_rw],
             "annotations": {"image.name": "localhost/ccd-victim:1",
                             "io.containerd.checkpoint.runtime": "io.containerd.runc.v2",
                             "io.containerd.checkpoint.snapshotter": "overlayfs"}}
    d_index = dict(_blob(layout, json.dumps(index).encode()),
                   mediaType="application/vnd.oci.image.index.v1+json",
                   annotations={"io.containerd.image.name":
                                "containerd.io/checkpoint/%s:11-25-2026-04:10:00" % name,
                                "org.opencontainers.image.ref.name": "11-25-2026-04:10:00"})
    top = {"schemaVersion": 2, "manifests": [d_index]}
    return ([("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
             ("index.json", json.dumps(top).encode())] + layout)
