#!/usr/bin/env bash
# The main job: set up, then run the PREM worker demo in network namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/multinet prem demo "$@"
