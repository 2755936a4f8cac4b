"""Fixtures for browser tests: a real streamlit server over a store and headless Chromium.

* ``streamlit_server``: session-scoped factory. ``streamlit_server(store_root)`` starts
  ``python -m streamlit run app.py`` on a free port with ACTX_STORE set to ``store_root``, waits
  for ``/_stcore/health`` and returns the base URL. One server per store root per session (a
  second call with the same root returns the same URL); all are terminated at session end.
  Pass ``env={...}`` for extra environment variables (a new server is started for them).
* ``browser``: a headless Chromium (selenium) with its own profile, one per session (starting
  one costs seconds): after each test its extra windows are closed, the cookies and the storage of
  the page it ended on are cleared, downloads are turned back off and it is left on about:blank;
  after a failed test (or a reset that fails) it is quit, and the next test gets a new one.

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


FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed:
        item.stash[FAILED] = True
    return report


class _Chrome:
    """The session's Chromium: started when a test first asks for it, quit when dropped."""

    def __init__(self) -> None:
        self.driver = None
        self.profile: Path | None = None

    def get(self):
        if self.driver is None:
            self.profile = Path(tempfile.mkdtemp(prefix="chrome-profile-"))
            self.driver = make_chrome(self.profile)
            self.driver.set_page_load_timeout(120)
        return self.driver

    def reset(self) -> None:
        """What a test left behind, gone: extra windows, cookies, the page's storage, downloads."""
        driver = self.driver
        first, *others = driver.window_handles
        for handle in others:
            driver.switch_to.window(handle)
            driver.close()
        driver.switch_to.window(first)
        if driver.current_url.startswith("http"):
            driver.execute_script("window.localStorage.clear(); window.sessionStorage.clear();")
        driver.delete_all_cookies()
        driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "default"})
        driver.get("about:blank")

    def drop(self) -> None:
        if self.driver is not None:
            try:
                self.driver.quit()
            finally:
                remove_profile(self.profile)
                self.driver = self.profile = None


@pytest.fixture(scope="session")
def _session_chrome():
    chrome = _Chrome()
    yield chrome
    chrome.drop()


@pytest.fixture
def browser(_session_chrome, request):
    require_chromium()
    yield _session_chrome.get()
    try:
        if request.node.stash.get(FAILED, False):
            raise RuntimeError("the test failed: start the next one on a new browser")
        _session_chrome.reset()
    except Exception:
        _session_chrome.drop()
