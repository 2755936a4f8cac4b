"""End to end in headless Chromium: the Features page on the tiny SAE store pins its view in the
address bar, draws one chart per label, and shades the firing tokens of the chosen feature in
what the browser rendered (escaped token spans, not Markdown)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from tests.support.browser import open_page, wait_for_css

pytestmark = pytest.mark.browser

SHADES = """
return [...document.querySelectorAll('span[title]')]
  .filter(s => s.style.background.includes('255, 127, 14'))
  .map(s => [s.getAttribute('title'), s.style.background]);
"""


def test_features_page_pins_its_view_and_shades_firing_tokens(browser, tiny_sae_store,
                                                              streamlit_server):  # fmt: skip
    url = streamlit_server(tiny_sae_store["root"])
    open_page(browser, f"{url}/features?feature_run=feat-all&scope=response")
    wait_for_css(browser, "span[title]")
    pinned = parse_qs(urlsplit(browser.current_url).query)
    assert pinned["feature_run"] == ["feat-all"] and pinned["scope"] == ["response"]
    assert {"layer", "order", "top", "labels", "feature", "sample"} <= set(pinned)
    shades = browser.execute_script(SHADES)
    firing = [background for title, background in shades if float(title) > 0]
    assert any(not background.endswith(" 0)") for background in firing), shades[:5]
    assert len(browser.find_elements("css selector", '[data-testid="stVegaLiteChart"]')) >= 3
