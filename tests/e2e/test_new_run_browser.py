"""End to end in headless Chromium: start a run from the New run page of a real `streamlit run`
server, watch it finish, and find nothing to start on the same store in read-only mode."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from jobs import cancel, reconcile
from store import open_store
from tests.support.browser import open_page, wait_for_css, wait_for_idle

pytestmark = pytest.mark.browser
SHOTS = Path(os.environ.get("ACTX_SCREENSHOTS", "/tmp/actx-screenshots"))


def _by():
    from selenium.webdriver.common.by import By

    return By


def assert_no_exception(browser, page: str) -> None:
    shown = browser.find_elements(_by().CSS_SELECTOR, "[data-testid=stException]")
    assert not shown, f"{page}: {shown[0].text[:2000]}"


def click_text(browser, tag: str, text: str) -> None:
    By = _by()
    browser.find_element(By.XPATH, f"//{tag}[.//p[normalize-space()='{text}']]").click()
    wait_for_idle(browser)


def type_into(browser, label: str, text: str) -> None:
    from selenium.webdriver.common.keys import Keys

    (field,) = wait_for_css(browser, f'input[aria-label="{label}"]')
    field.send_keys(Keys.CONTROL, "a")
    field.send_keys(text, Keys.ENTER)
    wait_for_idle(browser)


@pytest.fixture
def store_root(tmp_path):
    root = tmp_path / "store"
    root.mkdir()
    yield root
    for job in reconcile(root):
        if job.active:
            cancel(root, job.job_id, read_only=False, timeout=2)


def test_start_a_run_from_the_browser_and_watch_it_finish(
    streamlit_server, browser, store_root, tiny_models
):
    By = _by()
    url = streamlit_server(store_root)
    open_page(browser, f"{url}/new_run")
    click_text(browser, "label", "Hugging Face id or local folder")
    type_into(browser, "Model id or folder", str(tiny_models["llama"]))
    type_into(browser, "Layers", "0,-1")
    type_into(browser, "Name (optional)", "from-chromium")
    click_text(browser, "button", "Launch")
    assert "Started job" in browser.find_element(By.CSS_SELECTOR, "[data-testid=stAlert]").text

    # The jobs fragment refreshes itself: no reload, no click.
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if browser.find_elements(By.XPATH, "//strong[normalize-space()='done']"):
            break
        failed = browser.find_elements(By.XPATH, "//strong[normalize-space()='failed']")
        assert not failed, browser.find_element(By.TAG_NAME, "body").text[-2000:]
        time.sleep(0.5)
    else:
        raise AssertionError("the job did not finish in 180 s")
    SHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SHOTS / "new_run_done.png"))
    (run_id,) = open_store(store_root).run_ids()
    assert open_store(store_root).manifest(run_id).name == "from-chromium"

    # The Runs page of the same server lists it, without a restart, and every analysis page
    # opens on it without an exception.
    open_page(browser, f"{url}/")
    assert "1 of 1 runs" in browser.find_element(By.TAG_NAME, "body").text
    assert_no_exception(browser, "runs")
    for page in ("directions", "cross_model", "pairs"):
        open_page(browser, f"{url}/{page}")
        assert_no_exception(browser, page)


def test_read_only_server_offers_nothing_to_start(streamlit_server, browser, store_root):
    """Reached by URL, the run page is either not found (it is not in the navigation) or, on a
    fresh server's first session (Streamlit's legacy `pages/` discovery runs a page file directly
    until some session has called st.navigation), it runs and refuses by itself."""
    By = _by()
    url = streamlit_server(store_root, env={"ACTX_READ_ONLY": "1"})
    SHOTS.mkdir(parents=True, exist_ok=True)
    for attempt in range(2):
        open_page(browser, f"{url}/new_run")
        browser.save_screenshot(str(SHOTS / f"read_only_{attempt}.png"))
        body = browser.find_element(By.TAG_NAME, "body").text
        assert "read-only" in body or "Runs" in body, body
        assert not browser.find_elements(By.XPATH, "//button[.//p[normalize-space()='Launch']]")
        assert not browser.find_elements(By.CSS_SELECTOR, "[data-testid=stFileUploader]")
        assert not browser.find_elements(By.CSS_SELECTOR, 'input[aria-label="Store directory"]')
        open_page(browser, f"{url}/")  # the main script runs: the navigation is now in charge
    assert "New run" not in browser.find_element(By.TAG_NAME, "body").text
    assert not browser.find_elements(By.CSS_SELECTOR, 'a[href$="/new_run"]')


def test_pairs_page_link_starts_the_missing_all_run(streamlit_server, browser, store_root,
                                                    tiny_models):  # fmt: skip
    """Pairs page without an `all` run -> its link -> New run filled in -> Launch -> per-token
    view available, on the built-in minimal pairs with a tiny model."""
    from extraction.runner import execute
    from settings.run import RunSettings

    By = _by()
    model = str(tiny_models["llama"])
    config = RunSettings(model=model, dataset="minimal_pairs", positions=("last",), device="cpu")
    execute(config, store_root, progress=False)
    url = streamlit_server(store_root)
    open_page(browser, f"{url}/pairs")
    assert_no_exception(browser, "pairs")
    assert "there is none in this store" in browser.find_element(By.TAG_NAME, "body").text
    (link,) = [a for a in browser.find_elements(By.TAG_NAME, "a") if "New run page" in a.text]
    link.click()
    wait_for_css(browser, 'input[aria-label="Model id or folder"]')
    wait_for_idle(browser)
    field = browser.find_element(By.CSS_SELECTOR, 'input[aria-label="Model id or folder"]')
    assert field.get_attribute("value") == model
    click_text(browser, "button", "Launch")
    assert "Started job" in browser.find_element(By.CSS_SELECTOR, "[data-testid=stAlert]").text
    deadline = time.monotonic() + 180
    while not browser.find_elements(By.XPATH, "//strong[normalize-space()='done']"):
        assert time.monotonic() < deadline, "the all-positions job did not finish in 180 s"
        assert not browser.find_elements(By.XPATH, "//strong[normalize-space()='failed']")
        time.sleep(0.5)
    store = open_store(store_root)
    assert sorted(tuple(m.positions) for m in store.runs()) == [("all",), ("last",)]
    assert {(m.model, m.dataset_name) for m in store.runs()} == {(model, "minimal_pairs")}

    open_page(browser, f"{url}/pairs")
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "there is none in this store" not in body and "Traceback" not in body
    assert_no_exception(browser, "pairs")
