#!/usr/bin/env bash
# Run the whole test suite (kernel tests in network namespaces, broker tests on a real broker).
# SETUP_PYTHON and SETUP_VENV choose the Python and the venv (scripts/setup.sh).
#
# With no arguments the suite runs in two parts at once:
#   - the tests marked `kernel` or `broker` (they mostly wait on processes, packets and the
#     broker, and some of them time reactions), at normal priority, printed as they run;
#   - every other test (decision cores, codecs, schemas, property tests: CPU only), under
#     `nice -n 19` in the background, so it takes only the CPU the first part leaves idle and
#     never slows a timed test; its output is printed when it is done.
# With arguments, pytest runs once with them (`bash scripts/test.sh tests/prem -k flow`).
# pytest exits 5 when it collected no test: that is a broken setup, so it fails here too.
set -uo pipefail
cd "$(dirname "$0")/.."
SETUP_TESTS=1 bash scripts/setup.sh || exit 1
python="${SETUP_VENV:-.venv}/bin/python"

# The exit status of one pytest run, with "collected nothing" (5) made a failure.
checked() {
  if [ "$1" -eq 5 ]; then
    echo "pytest collected no tests ($2): the setup is broken" >&2
    return 1
  fi
  return "$1"
}

if [ $# -gt 0 ]; then
  "$python" -m pytest -q "$@"
  checked $? "pytest $*"
  exit $?
fi

pure_log=$(mktemp)
trap 'rm -f "$pure_log"' EXIT
nice -n 19 "$python" -m pytest -q -p no:cacheprovider -m "not kernel and not broker" \
  >"$pure_log" 2>&1 &
pure_pid=$!

echo "== tests that need the kernel or the broker (the others run niced alongside)"
"$python" -m pytest -q -m "kernel or broker"
checked $? "kernel or broker"
status=$?

wait "$pure_pid"
checked $? "neither kernel nor broker"
pure_status=$?
echo "== tests that need neither the kernel nor the broker"
cat "$pure_log"

[ "$status" -ne 0 ] && exit "$status"
exit "$pure_status"
