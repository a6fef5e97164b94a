#!/usr/bin/env bash
# Installs everything the tests need on a fresh machine, then runs lint, types and the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."

# promtool, Prometheus, Alertmanager and Chromium (landing page) are real binaries from Debian's
# packages; install the package of each binary that is missing.
packages=""
for pair in promtool:prometheus prometheus:prometheus \
    prometheus-alertmanager:prometheus-alertmanager chromium:chromium; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || packages="$packages ${pair#*:}"
done
if [ -n "$packages" ]; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    # shellcheck disable=SC2086 # one word per package
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        $packages >/dev/null
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy --strict exporter tests grafana benchmarks mixin
.venv/bin/lint-imports --no-cache
.venv/bin/python -m pytest "$@"

# The same code against the lowest versions pyproject.toml allows (constraints-min.txt): the
# tests that exercise those dependencies, in a second venv, so that a lower bound cannot drift.
[ $# -eq 0 ] || exit 0  # a run narrowed by pytest arguments skips it
python3 -m venv .venv-min
.venv-min/bin/python -m pip install -q --upgrade pip
.venv-min/bin/python -m pip install -q -c constraints-min.txt -e . pytest hypothesis cryptography
.venv-min/bin/python -m pytest -q -p no:cacheprovider \
    tests/test_decode.py tests/test_collector.py tests/test_config.py tests/test_webconfig.py \
    tests/test_client_edges.py tests/test_client_hardening.py tests/test_logs.py tests/test_web.py \
    "tests/test_properties.py::test_ids_beyond_sqlite_integers_are_rejected"
