"""README's source map names every module of the package, and only modules
that exist: a module added or moved without a line there fails here."""
import os
import re

from tests.helpers.paths import REPO


def _map():
    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    section = readme.split("### Source map", 1)[1].split("\n#", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return {name for row in rows
            for name in re.findall(r"`([\w/]+(?:\.py|/))`", row.split(" | ")[0])}


def test_every_module_is_in_the_source_map():
    pkg = os.path.join(REPO, "criu_coredump")
    modules = {n for n in os.listdir(pkg)
               if n.endswith(".py") and n != "__init__.py"}
    modules.add("arch/")
    named = _map()
    assert modules - named == set(), "not in README's source map"
    assert named - modules == set(), "in README's source map, not in the package"
