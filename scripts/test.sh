#!/usr/bin/env bash
# Installs everything the tests need on a fresh machine, then runs lint, types and the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."

# promtool (and later Prometheus and Alertmanager) are real binaries from Debian's packages.
if ! command -v promtool >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        prometheus prometheus-alertmanager >/dev/null
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy --strict exporter
.venv/bin/python -m pytest "$@"
