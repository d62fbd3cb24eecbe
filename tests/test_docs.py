"""The manual page and the README say what the program does: every option
of --help is in the man page, the versions agree, groff renders it without
a warning, and the README's exit codes are the ones --help lists."""
import os
import re
import subprocess

import pytest

from criu_coredump import __version__

from .helpers.paths import REPO
from .helpers.tools import need, run_coredump

pytestmark = pytest.mark.slow

MAN = os.path.join(REPO, "doc", "coredump.1")


def _option_names(text, indent):
    """Option names in the headings of a list of options: the lines that
    start with `indent` then `-`, up to the description ("-i IMGDIR,
    --images-dir IMGDIR   the ..." gives -i and --images-dir)."""
    names = set()
    for line in re.findall(r"^%s(-.*)$" % indent, text, re.M):
        heading = re.split(r"\s{2,}", line)[0]
        names.update(re.findall(r"(?<![\w-])--?[a-z][\w-]*", heading))
    return names


def _help_options():
    text = run_coredump("--help", check=0).stdout
    # "options:" (Python 3.10+) or "optional arguments:" (3.9), up to the epilog
    section = re.search(r"^(?:options|optional arguments):\n(.*?)\n\n", text,
                        re.S | re.M).group(1)
    return _option_names(section, "  ")


def _rendered_man():
    groff = need("groff")
    # -P-c: grotty's overstrike output, as groff 1.22 (Debian 12) gives by
    # default; groff 1.23 (Debian 13) would write SGR escape sequences
    p = subprocess.run([groff, "-man", "-Tascii", "-P-c", "-ww", MAN], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, check=True)
    return re.sub(".\b", "", p.stdout), p.stderr  # drop bold/underline overstrikes


def test_every_help_option_is_in_the_man_page():
    opts = _help_options()
    assert {"-i", "--images-dir", "-o", "--list", "--gdb", "--json", "-q",
            "--version", "--pid", "--root", "--filter"} <= opts
    man, _ = _rendered_man()
    # the body's indentation: 7 columns up to groff 1.23, 5 from 1.24 (sid)
    indent = re.search(r"^NAME\n( +)\S", man, re.M).group(1)
    described = _option_names(man, indent)
    assert opts - described == set()


def test_man_page_renders_cleanly_with_the_package_version():
    man, warnings = _rendered_man()
    assert warnings == ""
    assert "criu-coredump %s" % __version__ in man
    for section in ("NAME", "SYNOPSIS", "OPTIONS", "EXIT STATUS", "EXAMPLES"):
        assert re.search(r"^%s$" % section, man, re.M)


def test_readme_lists_the_exit_codes_of_help():
    text = run_coredump("--help", check=0).stdout
    codes = set(re.findall(r"^  (\d+) ", text.split("exit codes:")[1], re.M))
    assert {"0", "1", "2", "3", "130"} <= codes
    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    table = set(re.findall(r"^\| (\d+) \|", readme, re.M))
    assert codes | {"127"} == table
