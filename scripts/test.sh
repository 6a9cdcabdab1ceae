#!/usr/bin/env bash
# Run the whole test suite (kernel tests in network namespaces, broker tests on a real broker).
# SETUP_PYTHON and SETUP_VENV choose the Python and the venv (scripts/setup.sh).
# pytest exits 5 when it collected no test: that is a broken setup, so it fails here too.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
"${SETUP_VENV:-.venv}/bin/python" -m pytest -q "$@"
status=$?
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: the setup is broken" >&2
  exit 1
fi
exit "$status"
