"""End to end in headless Chromium: every page of a real `streamlit run` server over the tiny store.

Checks that each page draws without an exception element and with a chart in the DOM, that a URL
with filters reopens the view it describes, and that a view changed in the browser is written to
the address bar so a copied link reproduces it. Fixtures: tests/e2e/conftest.py.
"""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from tests.support.browser import choose_option, open_page, wait_for_css, wait_for_idle

pytestmark = pytest.mark.browser

CHART = '[data-testid="stVegaLiteChart"]'
EXCEPTION = '[data-testid="stException"]'


def _by():
    from selenium.webdriver.common.by import By

    return By


@pytest.fixture(scope="module")
def app_url(streamlit_server, tiny_store):
    return streamlit_server(tiny_store["root"])


def run_id(tiny_store, prefix: str) -> str:
    return next(r for r in tiny_store["run_ids"] if r.startswith(prefix))


def widget_text(browser, key: str) -> str:
    """Text and input values of the widget with this key (its container has class st-key-KEY);
    a selectbox shows its value only as its combobox input's value."""
    (element,) = wait_for_css(browser, f".st-key-{key}")
    inputs = element.find_elements(_by().CSS_SELECTOR, "input")
    return " ".join([element.text, *(i.get_attribute("value") or "" for i in inputs)])


def assert_page_ok(browser, title: str) -> None:
    By = _by()
    assert not browser.find_elements(By.CSS_SELECTOR, EXCEPTION), browser.find_element(
        By.CSS_SELECTOR, EXCEPTION
    ).text
    headings = [h.text for h in browser.find_elements(By.CSS_SELECTOR, "h1")]
    assert title in headings, headings
    # The app's own navigation ran (not Streamlit's legacy pages/ folder listing).
    nav = browser.find_element(By.CSS_SELECTOR, '[data-testid="stSidebarNav"]').text
    assert "Cross-model" in nav and "app" not in nav.split("\n"), nav


@pytest.mark.parametrize(
    ("path", "title"),
    [("directions", "Concept directions"), ("cross_model", "Cross-model comparison"),
     ("pairs", "Minimal pairs")],
)  # fmt: skip
def test_page_draws_charts_without_errors(browser, app_url, path, title):
    open_page(browser, f"{app_url}/{path}")
    assert_page_ok(browser, title)
    charts = wait_for_css(browser, CHART)
    assert len(charts) >= 2
    # Vega renders each chart as an SVG or canvas inside the element.
    assert charts[0].find_elements(_by().CSS_SELECTOR, "svg, canvas")


def test_runs_page_lists_runs(browser, app_url):
    open_page(browser, app_url)
    assert_page_ok(browser, "Runs")
    assert wait_for_css(browser, '[data-testid="stDataFrame"]')


def test_url_with_filters_reproduces_the_view(browser, app_url, tiny_store):
    llama = run_id(tiny_store, "emo-llama")
    query = urlencode({"runs": llama, "baseline": "gratitude", "layer": "1", "site": "mlp_out"})
    open_page(browser, f"{app_url}/directions?{query}")
    assert_page_ok(browser, "Concept directions")
    assert "gratitude" in widget_text(browser, "baseline")
    assert "mlp_out" in widget_text(browser, "site")
    assert llama in widget_text(browser, "runs")
    assert "emo-gemma3" not in widget_text(browser, "runs")
    assert "1" in widget_text(browser, "layer").split()
    assert "layer 1" in browser.page_source  # detail chart titles follow the layer
    for name, value in (("baseline", "gratitude"), ("layer", "1"), ("site", "mlp_out")):
        assert f"{name}={value}" in browser.current_url


def test_view_changed_in_the_browser_is_a_shareable_link(browser, app_url):
    open_page(browser, f"{app_url}/pairs")
    assert_page_ok(browser, "Minimal pairs")
    choose_option(browser, "pair", "p3:")  # options read "p3: <its text>"
    wait_for_idle(browser)
    assert "pair=p3" in browser.current_url
    link = browser.current_url
    browser.get("about:blank")
    open_page(browser, link)  # a fresh session from the copied link
    assert_page_ok(browser, "Minimal pairs")
    assert "p3" in widget_text(browser, "pair")


def test_a_hostile_link_on_a_read_only_server_shows_text(browser, streamlit_server, tiny_store):
    """A crafted link cannot break the page, plant a link in a message or learn a server path."""
    By = _by()
    url = streamlit_server(tiny_store["root"], env={"ACTX_READ_ONLY": "1"})
    bait = "[session expired](http://evil.example/login)"
    open_page(browser, f"{url}/pairs?{urlencode({'top': 'inf', 'pair': bait, 'layer': '1e309'})}")
    assert_page_ok(browser, "Minimal pairs")
    assert wait_for_css(browser, CHART)
    alerts = browser.find_elements(By.CSS_SELECTOR, '[data-testid="stAlert"]')
    text = " ".join(a.text for a in alerts).replace("\u200b", "")
    assert bait in text  # shown as written
    assert not [a for alert in alerts for a in alert.find_elements(By.CSS_SELECTOR, "a")]
    body = browser.find_element(By.TAG_NAME, "body").text
    assert str(tiny_store["root"]) not in body and str(tiny_store["root"].parent) not in body
    assert f"Read-only store: {tiny_store['root'].name}" in body
    nav = browser.find_element(By.CSS_SELECTOR, '[data-testid="stSidebarNav"]').text
    assert "New run" not in nav
