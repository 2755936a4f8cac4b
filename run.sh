#!/usr/bin/env bash
# The main job: install what is needed, fill the store with the default runs (skipped when they
# exist), then serve the app. Offline: the default models ship inside PyPI packages.
#   bash run.sh                 # store in ./store_data, app on http://localhost:8501
#   ACTX_STORE=/data/acts PORT=8600 bash run.sh
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/setup_env.sh app
export ACTX_STORE="${ACTX_STORE:-store_data}"
# Extraction runs in its own process: the app process never loads torch.
.venv/bin/python -m extraction defaults --store "$ACTX_STORE"
exec .venv/bin/streamlit run app.py --server.port "${PORT:-8501}" --server.headless true
