"""Serve for real, prove it serves, stop: how tests run documented commands that serve forever.

`serve_and_check(command, port, ...)` starts a command that ends in a Streamlit server on
`port` (e.g. `bash run.sh` with PORT set), waits until the server answers `/_stcore/health`,
opens the app's first page in headless Chromium, stops the whole process group and returns the
page's text. Without Chromium it checks the health endpoint only and says so, except in CI
(`CI=true`), where a missing browser is an error.

As a program it stands in for `streamlit` on the PATH of tests/docs, so a documented
`streamlit run app.py` runs as written:

    python -m tests.support.serve run app.py [streamlit options]   # serve, check, stop, report

Anything but `run` is handed to the real streamlit unchanged.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from settings.env import OFF_VALUES
from tests.support.browser import MISSING, chromium_available, free_port, in_ci, page_text


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
            return reply.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def serve_and_check(
    command: list[str], port: int, cwd: Path | str, env: dict[str, str], timeout: float = 180.0
) -> str:
    """Start `command`, wait for its server on `port`, read its first page, stop it."""
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile(mode="w+") as log:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + timeout
            while not _healthy(url):
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    state = "exited" if process.poll() is not None else "is not serving"
                    raise AssertionError(f"{command} {state} on {url}:\n{log.read()[-4000:]}")
                time.sleep(0.25)
            if chromium_available():
                return page_text(url)
            if in_ci():
                raise AssertionError(MISSING)
            print(f"[serve] {MISSING}: checked {url}/_stcore/health only", file=sys.stderr)
            return ""
        finally:
            _stop_group(process)


def _stop_group(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)


def main(argv: list[str]) -> int:
    """The `streamlit` stand-in: `run ...` is served, checked and stopped; the rest passes on."""
    real = [sys.executable, "-m", "streamlit"]
    if not argv or argv[0] != "run":
        return subprocess.call(real + argv)
    port = free_port()
    options = ["--server.port", str(port), "--server.address", "127.0.0.1",
               "--server.headless", "true", "--browser.gatherUsageStats", "false"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # that was for this shim
    text = serve_and_check(real + argv + options, port, Path.cwd(), env)
    read_only = os.environ.get("ACTX_READ_ONLY", "0").strip().lower() not in OFF_VALUES
    if text and read_only and "Read-only store" not in text:
        raise AssertionError(f"ACTX_READ_ONLY is on but the page is not read-only:\n{text}")
    print(f"[serve] streamlit {' '.join(argv)} served http://127.0.0.1:{port}; its first page:")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
