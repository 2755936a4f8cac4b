#!/usr/bin/env bash
# The test command: installs what the tests need (Python packages, Debian's chromium for the
# browser tests), then runs the whole suite, the real embedded models included.
#   bash test.sh                # everything
#   bash test.sh -m "not embedded" tests/store   # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup_env.sh dev
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[test] installing Debian's chromium and chromium-driver for browser tests" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) >/dev/null
  else
    echo "[test] warning: chromium/chromedriver missing and cannot apt-get; browser tests will fail" >&2
  fi
fi
exec .venv/bin/python -m pytest "$@"
