#!/usr/bin/env bash
# The main job: set up, then run the paper's Figure 7 scenario end to end on the namespace test
# bed (every service as its own process, a real HTTP stream, the broker started if none runs).
# Without root it says so and runs the simulated scenario (the NSA's decisions, no kernel).
set -euo pipefail
cd "$(dirname "$0")/.."
# SETUP_PYTHON and SETUP_VENV choose the Python and the venv (scripts/setup.sh).
venv=${SETUP_VENV:-.venv}
if [ "$(id -u)" -ne 0 ]; then
    echo "the test bed needs root (network namespaces, netfilter); showing the simulated run" >&2
    echo "(no namespaces, memory back end) instead. Run as root for the real one." >&2
    if [ ! -x "$venv/bin/multinet" ]; then
        echo "first run 'bash scripts/setup.sh' as root once to install the project" >&2
        exit 2
    fi
    exec "$venv/bin/multinet" testbed run --simulate "$@"
fi
bash scripts/setup.sh
exec "$venv/bin/multinet" testbed run "$@"
