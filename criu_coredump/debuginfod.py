"""A debuginfod client for the executables a checkpoint mapped, by build-id.

A checkpoint travels (a kubelet archive on a laptop); the binaries it mapped
stay behind.  CRIU recorded each mapped ELF file's build-id (files.img), and
debuginfod servers hand out executables by build-id
(GET URL/buildid/HEX/executable): the very file the process had mapped.

elfutils' conventions, so that gdb, eu-stack and we share one cache:
DEBUGINFOD_URLS (servers, space separated), DEBUGINFOD_CACHE_PATH (default
$XDG_CACHE_HOME/debuginfod_client, else ~/.cache/debuginfod_client; a
~/.debuginfod_client_cache that exists wins, as in elfutils), the cache
layout CACHE/HEX/executable, DEBUGINFOD_TIMEOUT (seconds without progress,
default 90) and DEBUGINFOD_MAXSIZE (bytes; 0 or unset: no limit).

Why urllib rather than libdebuginfod (ctypes): libdebuginfod puts whatever a
server sends in the cache before anyone can check it.  Here every file, new
or cached, is checked against the build-id the checkpoint recorded before it
is used, and a file enters the cache by an atomic rename only once checked.
A server that is down, slow or wrong costs a warning and that file's pages
(holes, exit 3), never the conversion.
"""
import os
import socket
import tempfile
import urllib.error
import urllib.request
from typing import Callable, List, Optional

from .buildid import read_build_id, same_build

DEFAULT_TIMEOUT = 90
USER_AGENT = "criu-coredump"


def urls_from(arg: Optional[str], environ=os.environ) -> List[str]:
    """Servers: --debuginfod URLS when given with a value, else
    DEBUGINFOD_URLS (which alone turns fetching on)."""
    text = arg if arg not in (None, "") else environ.get("DEBUGINFOD_URLS", "")
    return [u.rstrip("/") for u in text.split() if u]


def cache_path(environ=os.environ) -> str:
    p = environ.get("DEBUGINFOD_CACHE_PATH")
    if p:
        return p
    home = os.path.expanduser("~")
    old = os.path.join(home, ".debuginfod_client_cache")
    if os.path.isdir(old):
        return old
    xdg = environ.get("XDG_CACHE_HOME") or os.path.join(home, ".cache")
    return os.path.join(xdg, "debuginfod_client")


def _number(environ, name, default):
    try:
        return int(environ.get(name, "") or default)
    except ValueError:
        return default


class Client:
    """Fetches executables by build-id into the cache; warns through
    warn(path, what)."""

    def __init__(self, urls: List[str], warn: Callable = None, environ=os.environ):
        self.urls = urls
        self.cache = cache_path(environ)
        self.timeout = _number(environ, "DEBUGINFOD_TIMEOUT", DEFAULT_TIMEOUT) or None
        self.maxsize = _number(environ, "DEBUGINFOD_MAXSIZE", 0)
        self._warn = warn or (lambda path, what: None)
        self._dead = set()      # servers that failed once: not asked again
        self._done = {}         # build-id hex -> path or None (this run)

    def executable(self, build_id: bytes) -> Optional[str]:
        """The cached path of the executable of that build-id, fetched when
        not cached yet, verified either way; None when no server has it."""
        hexid = build_id.hex()
        if hexid in self._done:
            return self._done[hexid]
        path = os.path.join(self.cache, hexid, "executable")
        found = None
        if self._verified(path, build_id):
            found = path
        else:
            for url in self.urls:
                if url in self._dead:
                    continue
                if self._fetch(url, hexid, build_id, path):
                    found = path
                    break
        self._done[hexid] = found
        return found

    @staticmethod
    def _verified(path, build_id):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            return False
        try:
            return same_build(build_id, read_build_id(fd))
        except OSError:
            return False
        finally:
            os.close(fd)

    def _fetch(self, url, hexid, build_id, path):
        src = "%s/buildid/%s/executable" % (url, hexid)
        req = urllib.request.Request(src, headers={"User-Agent": USER_AGENT})
        try:
            resp = urllib.request.urlopen(req, timeout=self.timeout)
        except urllib.error.HTTPError as e:
            if e.code != 404:
                self._warn(src, "debuginfod server answered %d %s" % (e.code, e.reason))
            return False
        except (urllib.error.URLError, OSError, socket.timeout) as e:
            reason = getattr(e, "reason", e)
            self._dead.add(url)
            self._warn(url, "debuginfod server not reachable (%s); not asked "
                       "again in this run" % reason)
            return False
        d = os.path.dirname(path)
        tmp = None
        try:
            length = resp.headers.get("Content-Length")
            if self.maxsize and length and int(length) > self.maxsize:
                self._warn(src, "%s bytes, more than DEBUGINFOD_MAXSIZE: not "
                           "fetched" % length)
                return False
            os.makedirs(d, 0o700, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".coredump-", dir=d)
            total = 0
            with os.fdopen(fd, "wb") as f:
                while True:
                    chunk = resp.read(1 << 20)
                    if not chunk:
                        break
                    total += len(chunk)
                    if self.maxsize and total > self.maxsize:
                        self._warn(src, "more than DEBUGINFOD_MAXSIZE bytes: "
                                   "not fetched")
                        return False
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            if not self._verified(tmp, build_id):
                self._warn(src, "the server sent a file that is not of build-id "
                           "%s: refused" % hexid)
                return False
            os.chmod(tmp, 0o644)
            os.rename(tmp, path)   # atomic: the cache never holds half a file
            tmp = None
            return True
        except (OSError, socket.timeout, ValueError) as e:
            self._dead.add(url)
            self._warn(src, "fetch failed (%s)" % (getattr(e, "strerror", None) or e))
            return False
        finally:
            resp.close()
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
