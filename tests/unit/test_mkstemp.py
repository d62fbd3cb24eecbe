"""writer.mkstemp: a new file of mode 0600 under a random name, never
following or replacing what is planted at the name."""
import os
import stat

from criu_coredump import writer


def test_a_new_private_file_under_a_random_name(tmp_path):
    old = os.umask(0)
    try:
        fd, path = writer.mkstemp(str(tmp_path), ".core.1.", ".tmp")
    finally:
        os.umask(old)
    os.write(fd, b"data")
    os.close(fd)
    name = os.path.basename(path)
    assert os.path.dirname(path) == str(tmp_path)
    assert name.startswith(".core.1.") and name.endswith(".tmp")
    assert len(name) == len(".core.1.") + 12 + len(".tmp")
    st = os.lstat(path)
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert open(path, "rb").read() == b"data"
    assert os.listdir(str(tmp_path)) == [name]


def test_what_is_planted_at_the_name_is_left_alone(tmp_path, monkeypatch):
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    os.symlink(str(victim), str(tmp_path / ("p.%s.tmp" % ("aa" * 6))))
    (tmp_path / ("p.%s.tmp" % ("bb" * 6))).write_bytes(b"keep too")
    names = iter([b"\xaa" * 6, b"\xbb" * 6, b"\xcc" * 6])
    monkeypatch.setattr(os, "urandom", lambda n: next(names))
    fd, path = writer.mkstemp(str(tmp_path), "p.", ".tmp")
    os.write(fd, b"new")
    os.close(fd)
    assert os.path.basename(path) == "p.%s.tmp" % ("cc" * 6)
    assert victim.read_bytes() == b"keep"
    assert (tmp_path / ("p.%s.tmp" % ("bb" * 6))).read_bytes() == b"keep too"
    assert open(path, "rb").read() == b"new"
