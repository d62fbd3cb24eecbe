"""`python -m criu_coredump`, and the `coredump` command pip installs
(setup.cfg: criu_coredump.__main__:main): the same main() as bin/coredump.
Closed standard descriptors are reserved before anything else is imported
(stdfds.py says why)."""
import sys

from .stdfds import reserve

reserve()

from .cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
