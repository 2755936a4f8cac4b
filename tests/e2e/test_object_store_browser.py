"""A real streamlit server hosting a store on object storage (moto's S3 server), read in Chromium:
the run written into `s3://...` is listed, the page is read-only, and neither the endpoint nor
the local mirror's folder is shown."""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

import pytest

from tests.support.browser import MISSING, free_port, in_ci
from tests.support.serve import serve_and_check
from tests.support.tiny import emotion_rows, write_jsonl

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.browser
def test_a_hosted_app_reads_an_s3_store_in_chromium(s3_server, tiny_models, tmp_path):
    from extraction.runner import execute
    from settings.run import RunSettings

    uri = f"s3://{s3_server.bucket}/browser-{secrets.token_hex(4)}"
    data = write_jsonl(tmp_path / "emo.jsonl", emotion_rows(2))
    settings = RunSettings(model=str(tiny_models["llama"]), dataset=str(data), name="emo-on-s3",
                           hooks=("resid_post",), positions=("last",))  # fmt: skip
    run_id = execute(settings, uri, progress=False).run_id
    port = free_port()
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
               "--server.address", "127.0.0.1", "--server.headless", "true",
               "--browser.gatherUsageStats", "false"]  # fmt: skip
    env = {**os.environ, "ACTX_STORE": uri, "ACTX_READ_ONLY": "1", "HOME": str(tmp_path)}
    text = serve_and_check(command, port, REPO, env)
    if not text and not in_ci():
        pytest.skip(MISSING)
    assert "Read-only store" in text
    assert run_id in text  # the provenance picker names the run
    assert s3_server.endpoint not in text and str(s3_server.cache) not in text
