#!/usr/bin/env bash
# Installs everything notestream needs on a fresh machine, into the active Python environment.
#  - redis-server (Debian package, with redis-tools' redis-cli) where a binary is missing: the tests start
#    their own servers, a Redis Cluster (redis-cli --cluster create) and Sentinel (redis-server --sentinel);
#  - kcat (Debian package) where missing: the contract tests read risk updates with it;
#  - promtool (Debian package prometheus) where missing: the tests check deploy/prometheus/rules.yml;
#  - torch==2.13.0 first, so that no dependency can pull a different (multi-GB CUDA) build;
#  - notestream itself, editable, with its dev extras, at the versions of constraints.txt.
# Safe to run again: each step is skipped or a no-op when already done.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"

if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
  echo "setup: installing redis-server and redis-tools (Debian packages)" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server redis-tools >/dev/null
fi

if ! command -v kcat >/dev/null 2>&1; then
  echo "setup: installing kcat (Debian package): a Kafka client no project code wrote, for the contract tests" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq kcat >/dev/null
fi

if ! command -v promtool >/dev/null 2>&1; then
  echo "setup: installing promtool (Debian package prometheus)" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

"$PY" -m pip install -q "torch==2.13.0"
"$PY" -m pip install -q -c constraints.txt -e ".[dev]"
