"""End to end in headless Chromium: the Vectors and Steering pages open from a shared link with
the settings it pins, over a copy of the tiny paired store (a real run and a real `pca_center`
set); the Steering page of a read-only server starts no worker and shows the command instead.
Fixtures: tests/e2e/conftest.py, tests/conftest.py."""

from __future__ import annotations

import shutil
from urllib.parse import parse_qs, urlencode, urlparse

import pytest

from store import open_store
from tests.support.browser import open_page, wait_for_css

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def shared(tiny_paired_store, tmp_path_factory):
    root = tmp_path_factory.mktemp("vectors-e2e") / "shared-store"
    shutil.copytree(tiny_paired_store["root"], root, symlinks=True)
    m = open_store(root).vector_set(tiny_paired_store["set_id"]).manifest
    return {"root": root, "set_id": m.set_id, "layers": list(m.layers)}


def _query(browser) -> dict[str, list[str]]:
    return parse_qs(urlparse(browser.current_url).query)


def _no_exception(browser) -> None:
    from selenium.webdriver.common.by import By

    assert not browser.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')


def test_a_vectors_link_opens_with_its_pinned_view(streamlit_server, shared, browser):
    from selenium.webdriver.common.by import By

    word_layer = shared["layers"][-1]
    link = {"set": shared["set_id"], "words": str(word_layer), "scaled": "true"}
    open_page(browser, f"{streamlit_server(shared['root'])}/vectors?{urlencode(link)}")
    _no_exception(browser)
    assert len(wait_for_css(browser, '[data-testid="stVegaLiteChart"]')) == 2
    query = _query(browser)
    assert {k: query[k] for k in link} == {k: [v] for k, v in link.items()}
    words = browser.find_element(By.CSS_SELECTOR, ".st-key-words").text.splitlines()
    chosen = [line for line in words if line.strip().isdigit()]
    assert chosen == [str(word_layer)], words  # the link's layer, not the default four
    toggle = browser.find_element(By.CSS_SELECTOR, '.st-key-scaled input[type="checkbox"]')
    assert toggle.is_selected()
    buttons = [
        b.text for b in browser.find_elements(By.CSS_SELECTOR, '[data-testid="stDownloadButton"]')
    ]
    assert any("Download .pt" in b for b in buttons)


def test_read_only_steering_shows_the_command_and_starts_no_worker(
    streamlit_server, shared, browser
):
    from selenium.webdriver.common.by import By

    layers = shared["layers"][:2]
    link = {"set": shared["set_id"], "steer_layers": [str(x) for x in layers],
            "strength": "0.5", "tokens": "20"}  # fmt: skip
    url = streamlit_server(shared["root"], env={"ACTX_READ_ONLY": "1"})
    open_page(browser, f"{url}/steering?{urlencode(link, doseq=True)}")
    _no_exception(browser)
    (code,) = wait_for_css(browser, '[data-testid="stCode"]')
    assert (
        "read-only: it starts no steering worker" in browser.find_element(By.TAG_NAME, "body").text
    )
    command = code.text
    assert f"--layers {','.join(map(str, layers))} --strength 0.5 --max-new-tokens 20" in command
    assert "--store shared-store " in command and str(shared["root"].parent) not in command
    query = _query(browser)
    assert query["steer_layers"] == [str(x) for x in layers] and query["strength"] == ["0.5"]
    assert not [b for b in browser.find_elements(By.TAG_NAME, "button") if b.text == "Generate"]
    assert not (shared["root"] / "steering").exists()  # no request queued, no worker record
