"""End to end in headless Chromium: a shared Query link reopens its query for its run.

A link made on the Query page names the run and the SQL; opened in a fresh browser it runs that
query for that run on a real `streamlit run` server over the tiny store, keeps both in the
address bar, and shows the rows: read back from the page's caption and from the CSV the
"Download CSV" button gives the browser (the table itself is drawn on a canvas). The Runs page's
"Open in Query" links are checked in tests/ui/test_links.py. Fixtures: tests/e2e/conftest.py.
"""

from __future__ import annotations

import csv
import io
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from store import open_store
from tests.support.browser import open_page, wait_for_css

pytestmark = pytest.mark.browser

SQL = "SELECT label, count(*) AS n FROM samples WHERE run_id = $run GROUP BY label ORDER BY label"


@pytest.fixture(scope="module")
def app_url(streamlit_server, tiny_store):
    return streamlit_server(tiny_store["root"])  # the server test_pages_browser uses too


def _by():
    from selenium.webdriver.common.by import By

    return By


def _downloaded(folder, name: str, timeout: float = 60.0) -> str:
    """The text of a file the browser saves into `folder`, once it is complete."""
    path = folder / name
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and not list(folder.glob("*.crdownload")):
            return path.read_text()
        time.sleep(0.1)
    raise TimeoutError(f"{name} not downloaded into {folder} after {timeout} s")


def test_a_shared_query_link_shows_its_rows(browser, app_url, tiny_store, tmp_path):
    run_id = next(r for r in tiny_store["run_ids"] if r.startswith("pairs-llama"))
    expected = open_store(tiny_store["root"]).samples(run_id)["label"].value_counts()
    By = _by()
    open_page(browser, f"{app_url}/query?{urlencode({'run': run_id, 'sql': SQL})}")
    assert not browser.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
    pinned = parse_qs(urlsplit(browser.current_url).query)
    assert pinned["run"] == [run_id] and pinned["sql"] == [SQL]
    wait_for_css(browser, '[data-testid="stDataFrame"]')
    body = browser.find_element(By.TAG_NAME, "body").text
    assert f"{len(expected)} rows, 2 columns" in body, body[-2000:]

    browser.execute_cdp_cmd(
        "Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(tmp_path)}
    )
    (button,) = [
        b for b in browser.find_elements(By.CSS_SELECTOR, "button") if b.text == "Download CSV"
    ]
    button.click()
    rows = list(csv.DictReader(io.StringIO(_downloaded(tmp_path, "query.csv"))))
    assert {row["label"]: int(row["n"]) for row in rows} == expected.to_dict()
