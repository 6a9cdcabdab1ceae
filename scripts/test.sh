#!/usr/bin/env bash
# Run the whole test suite (kernel tests in network namespaces, broker tests on a real broker).
# pytest exits 5 when it collected no test: that is a broken setup, so it fails here too.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
.venv/bin/python -m pytest -q "$@"
status=$?
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: the setup is broken" >&2
  exit 1
fi
exit "$status"
