#!/usr/bin/env bash
# Idempotent setup on Debian as root: system packages, the Python venv, a running broker.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for pair in iptables:iptables nft:nftables ipset:ipset ip:iproute2 mosquitto:mosquitto \
            mosquitto_pub:mosquitto-clients ping:iputils-ping openssl:openssl \
            wsdl2h:gsoap tshark:tshark tcpdump:tcpdump sysctl:procps npm:npm; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need_apt+=("${pair#*:}")
done
# The console's browser test drives a headless Chromium: installed for the tests only
# (scripts/test.sh and CI set SETUP_TESTS=1), not for the main command.
if [ "${SETUP_TESTS:-0}" = 1 ]; then
  for pair in chromium:chromium chromedriver:chromium-driver; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need_apt+=("${pair#*:}")
  done
fi
# The NSA replicas' leases (`[nsa.coordination]`) and their fault test: Debian's etcd 3.4.
command -v etcd >/dev/null 2>&1 || need_apt+=(etcd-server)
command -v cc >/dev/null 2>&1 || need_apt+=(gcc)  # python-iptables builds a small C wrapper
# The broker's client-id plugin (deploy/mosquitto/plugin) and the gSOAP test client.
[ -f /usr/include/mosquitto_broker.h ] || need_apt+=(mosquitto-dev)
[ -f /usr/include/mosquitto.h ] || need_apt+=(libmosquitto-dev)
[ -f /usr/include/stdsoap2.h ] || need_apt+=(libgsoap-dev)
python3 -c 'import ensurepip, venv' 2>/dev/null || need_apt+=(python3-venv)
[ -f "$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h" ] \
  || need_apt+=(python3-dev)
ldconfig -p | grep -q libnftables.so.1 || need_apt+=(libnftables1)
ldconfig -p | grep -q libip6tc.so || need_apt+=(libip6tc2)
if [ ${#need_apt[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# The venv is built from the system's python3 (Debian 12: 3.11, Ubuntu 24.04: 3.12, Debian 13:
# 3.13) into .venv; SETUP_PYTHON and SETUP_VENV choose others (CI tests a second Python).
python=${SETUP_PYTHON:-python3}
venv=${SETUP_VENV:-.venv}
which_python='import sys; print(sys.implementation.name, "%d.%d" % sys.version_info[:2])'
found=$("$python" -c "$which_python" 2>/dev/null) || found="not a working Python"
case "$found" in
  "cpython 3.11" | "cpython 3.12" | "cpython 3.13") ;;  # as pyproject.toml's requires-python
  *)
    echo "setup.sh: multinet runs on CPython 3.11, 3.12 and 3.13; '$python' is $found." >&2
    echo "Install one (Debian 12's python3 is 3.11, Ubuntu 24.04's 3.12, Debian 13's 3.13) or" >&2
    echo "name one: SETUP_PYTHON=/path/to/python3.X bash scripts/setup.sh" >&2
    exit 1
    ;;
esac
# A venv built from another Python (python3 changed with a distribution upgrade) is rebuilt.
if [ -x "$venv/bin/python" ] && [ "$("$venv/bin/python" -c "$which_python")" != "$found" ]; then
  echo "setup.sh: $venv was built from another Python; rebuilding it from $python ($found)" >&2
  rm -rf "$venv"
fi
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check -e '.[dev]'

# The operator console's chart library (uPlot), which the console serves itself (no internet
# needed by a browser): from the npm registry at the version package-lock.json pins.
vendor=services/console/static/vendor
if [ ! -f "$vendor/node_modules/uplot/dist/uPlot.iife.min.js" ]; then
  (cd "$vendor" && npm ci --no-audit --no-fund --loglevel=error)
fi

# The tests and the demo need a broker on 127.0.0.1:1883: start one if none answers.
if ! (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null; then
  mosquitto -d -p 1883
  for _ in $(seq 50); do
    (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null && break
    sleep 0.1
  done
fi
