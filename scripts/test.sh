#!/usr/bin/env bash
# Command 2 of the README: the whole test suite (installs what it needs).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
