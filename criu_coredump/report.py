"""What `coredump` tells its user when the work is done.

One line per core for people (`summary_line`), the same facts as one JSON
document for scripts (`json_document`), and the exit code that sums up a run
(`exit_code`).  Kept apart from the CLI so that the wording and the JSON
keys live in one place, and `--list` and `--gdb` reuse them.
"""

from .errors import EXIT_INCOMPLETE, EXIT_OK, one_line

JSON_FORMAT = 1  # bumped when a key changes meaning or disappears


def human_size(n):
    """1536 -> '1.5 KiB'; bytes below 1 KiB are shown exactly."""
    if n < 1024:
        return "%d B" % n
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        n /= 1024.0
        if n < 1024 or unit == "TiB":
            return "%.1f %s" % (n, unit)


def _plural(n, word):
    return "%d %s%s" % (n, word, "" if n == 1 else "s")


def summary_line(r):
    """The line printed for one written core (a CoreResult); the comm comes
    from the images, so it is escaped to stay one printable line."""
    warned = _plural(len(r.warnings), "warning") if r.warnings else "no warnings"
    return one_line("%s: pid %d (%s), %s, %s, %s, %s of memory (%s in holes), %s" % (
        r.path, r.pid, r.comm, r.arch, _plural(r.threads, "thread"),
        _plural(r.segments, "segment"), human_size(r.dumped),
        human_size(r.holes), warned))


def status(r):
    """written | incomplete | skipped | failed, for one CoreResult."""
    if r.error is not None:
        return "failed"
    if r.skipped:
        return "skipped"
    return "incomplete" if r.incomplete else "written"


def core_record(r):
    """The JSON object of one process (see the README for the keys)."""
    return {
        "pid": r.pid,
        "comm": r.comm,
        "arch": r.arch or None,
        "status": status(r),
        "path": r.path,
        "threads": r.threads,
        "segments": r.segments,
        "dumped_bytes": r.dumped,
        "hole_bytes": r.holes,
        "lazy_pages": r.lazy_pages,
        "warnings": list(r.warnings),
        "skipped": r.skipped,
        "error": str(r.error) if r.error is not None else None,
    }


def json_document(results, code, images_dir, out_dir, error=None):
    """The whole --json answer: every process, the exit code, and the error
    that stopped the run before any process (None when there was none)."""
    import json  # only --json needs it
    return json.dumps({
        "format": JSON_FORMAT,
        "images_dir": images_dir,
        "out_dir": out_dir,
        "exit_code": code,
        "error": error,
        "cores": [core_record(r) for r in results],
    }, indent=2)


def exit_code(results):
    """0 when every process is done; a failed process makes it 3 when others
    were done, or that failure's own code when none was (all failed, or the
    others were skipped zombies).
    Works on anything with `.error` and (optionally) `.incomplete`."""
    failed = [r for r in results if r.error is not None]
    done = [r for r in results if r.error is None and not getattr(r, "skipped", None)]
    if failed and not done:  # nothing written (a skipped zombie is not a core)
        return max(r.error.exit_code for r in failed)
    if failed or any(getattr(r, "incomplete", False) for r in results):
        return EXIT_INCOMPLETE
    return EXIT_OK
