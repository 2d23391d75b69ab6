#!/usr/bin/env bash
# The README's test command: set up a fresh machine, then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
exec "${PYTHON:-python3}" -m pytest "$@"
