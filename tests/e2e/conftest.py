"""Fixtures for browser tests: a real streamlit server over a store and headless Chromium.

* ``streamlit_server``: session-scoped factory. ``streamlit_server(store_root)`` starts
  ``python -m streamlit run app.py`` on a free port with ACTX_STORE set to ``store_root``, waits
  for ``/_stcore/health`` and returns the base URL. One server per store root per session (a
  second call with the same root returns the same URL); all are terminated at session end.
  Pass ``env={...}`` for extra environment variables (a new server is started for them).
* ``browser``: a fresh headless Chromium (selenium) with its own profile, quit after the test.

Both skip the test when Chromium or chromedriver is not installed
(``apt-get install -y chromium chromium-driver``), except in CI (``CI=true``), where they fail
(``tests.support.browser.require_chromium``). Waiting helpers live in
``tests/support/browser.py`` (``open_page``, ``wait_for_idle``, ``wait_for_css``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from tests.support.browser import (
    StreamlitServer,
    make_chrome,
    remove_profile,
    require_chromium,
)


@pytest.fixture(scope="session")
def streamlit_server():
    servers: dict[tuple, StreamlitServer] = {}

    def start(store_root: Path | str, env: dict[str, str] | None = None) -> str:
        key = (str(Path(store_root).resolve()), tuple(sorted((env or {}).items())))
        if key not in servers:
            server = StreamlitServer(store_root, env)
            servers[key] = server
            try:
                server.wait_healthy()
            except Exception:
                server.stop()
                del servers[key]
                raise
        return servers[key].url

    yield start
    for server in servers.values():
        server.stop()


@pytest.fixture
def browser():
    require_chromium()
    profile = Path(tempfile.mkdtemp(prefix="chrome-profile-"))
    driver = make_chrome(profile)
    driver.set_page_load_timeout(120)
    try:
        yield driver
    finally:
        driver.quit()
        remove_profile(profile)
