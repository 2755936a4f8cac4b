"""End to end in headless Chromium: the Propositions page over a real tiny generation run draws
its chart and the answers, pins its view in the address bar, and its CSV button downloads the
file `python -m store export` writes. Fixtures: tests/e2e/conftest.py, tests/conftest.py."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlparse

import pytest

from settings.run import ANSWER_POSITION
from store import open_store
from store.export import export_vectors
from tests.support.browser import open_page, wait_for_css

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _downloaded(folder, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = [p for p in folder.glob("*.csv")]  # Chromium writes .crdownload until complete
        if done:
            return done[0]
        time.sleep(0.1)
    raise TimeoutError(f"nothing downloaded into {folder} after {timeout} s")


def test_the_page_draws_pins_and_downloads(streamlit_server, answers_store, browser, tmp_path):
    from selenium.webdriver.common.by import By

    url = streamlit_server(answers_store["root"])
    browser.execute_cdp_cmd(
        "Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(tmp_path)}
    )
    open_page(browser, f"{url}/propositions")
    assert not browser.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
    assert wait_for_css(browser, '[data-testid="stVegaLiteChart"]')
    query = parse_qs(urlparse(browser.current_url).query)
    run_id = answers_store["run_id"]
    assert query["prop_run"] == [run_id] and query["position"] == [ANSWER_POSITION]
    layer = int(query["layer"][0])
    buttons = wait_for_css(browser, ".st-key-prop_dl_csv button")  # drawn last: wait for it
    (button,) = [b for b in buttons if "CSV" in b.text]
    button.click()
    store = open_store(answers_store["root"])
    expected = export_vectors(store, run_id, "resid_post", layer, ANSWER_POSITION,
                              ("id", "label"), "csv")  # fmt: skip
    assert _downloaded(tmp_path).read_bytes() == expected.data
