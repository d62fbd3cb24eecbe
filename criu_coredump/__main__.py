"""`python -m criu_coredump`, and the `coredump` command pip installs
(setup.cfg: criu_coredump.__main__:run): the same main() as bin/coredump.
Closed standard descriptors are reserved before anything else is imported
(stdfds.py says why)."""
from .stdfds import reserve

reserve()

from .cli import exit_now, main  # noqa: E402


def run():
    exit_now(main())


if __name__ == "__main__":
    run()
