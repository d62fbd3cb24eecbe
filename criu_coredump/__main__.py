"""`python -m criu_coredump`: the same main() as bin/coredump."""
import sys

from .cli import main

sys.exit(main())
