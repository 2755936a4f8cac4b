"""End to end in headless Chromium: a link made on the Directions page pins its view, and a label
has one colour on every chart of the page (ui/links.py, ui/charts.py).

One server over a copy of the tiny store, which the test commits a newer run into. Colours are
read from what the browser drew: the SVG legends of the Vega-Lite charts (and of a Plotly
figure, when one is on the page).
"""

from __future__ import annotations

import json
import shutil
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.support.browser import open_page, wait_for_css
from tests.support.synthetic import label_rows, write_run

pytestmark = pytest.mark.browser

LEGENDS = """
const out = [];
document.querySelectorAll('[data-testid="stVegaLiteChart"]').forEach((chart, i) => {
  chart.querySelectorAll('g.role-legend').forEach(legend => {
    const title = legend.querySelector('.role-legend-title text');
    const entries = [...legend.querySelectorAll('.role-scope > g')].map(entry => {
      const symbol = entry.querySelector('.role-legend-symbol path');
      const label = entry.querySelector('.role-legend-label text');
      // An outlined mark (the histogram) draws its legend symbol as a coloured outline.
      const fill = symbol ? symbol.getAttribute('fill') : '';
      const open = !fill || fill === 'transparent' || fill === 'none';
      const colour = open && symbol ? symbol.getAttribute('stroke') : fill;
      return [label ? label.textContent : '', colour];
    });
    out.push({chart: 'vega ' + i, title: title ? title.textContent : '', entries});
  });
});
document.querySelectorAll('.js-plotly-plot').forEach((plot, i) => {
  const title = plot.querySelector('.legendtitletext');
  out.push({chart: 'plotly ' + i, title: title ? title.textContent : '',
            entries: [...plot.querySelectorAll('g.legend g.traces')].map(g => [
              g.querySelector('text.legendtext').textContent,
              g.querySelector('.legendpoints path').style.fill])});
});
return out;
"""


def _by():
    from selenium.webdriver.common.by import By

    return By


def hex_colour(colour: str) -> str:
    """'#1f77b4' or 'rgb(31, 119, 180)' -> '#1f77b4'."""
    if colour.startswith("rgb"):
        parts = colour[colour.index("(") + 1 : colour.index(")")].split(",")
        return "#" + "".join(f"{int(p):02x}" for p in parts[:3])
    return colour.lower()


def query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query, keep_blank_values=True)


@pytest.fixture(scope="module")
def growing(tiny_store, tmp_path_factory, streamlit_server):
    root = tmp_path_factory.mktemp("links") / "store"
    shutil.copytree(tiny_store["root"], root)
    return {"root": root, "url": streamlit_server(root), "run_ids": tiny_store["run_ids"]}


def test_a_link_pins_its_view_and_each_label_keeps_one_colour(browser, growing):
    By = _by()
    open_page(browser, f"{growing['url']}/directions")
    # On first draw the URL names every resolved default.
    pinned = query(browser.current_url)
    emotions = sorted(r for r in growing["run_ids"] if r.startswith("emo-"))
    assert sorted(pinned["runs"]) == emotions
    assert {"site", "position", "baseline", "layer", "detail"} <= set(pinned)

    # One colour per label over every legend the browser drew (lines, histogram, PCA); the 3-D
    # PCA (Plotly, costly in a software-rendered browser) is checked from its figure in
    # tests/ui/test_links.py, as are the other pages.
    seen: dict[str, tuple[str, str]] = {}
    legends = [g for g in browser.execute_script(LEGENDS) if g["title"] == "Label"]
    assert len({g["chart"] for g in legends}) >= 6, legends  # 4 lines, histogram, PCA
    for legend in legends:
        for label, colour in legend["entries"]:
            first = seen.setdefault(label, (hex_colour(colour), legend["chart"]))
            assert first[0] == hex_colour(colour), (label, first, legend["chart"], colour)
    assert set(seen) == {"anger", "gratitude", "neutral"}
    assert len({colour for colour, _ in seen.values()}) == 3

    # The Copy link control gives the address bar's link.
    browser.find_element(By.XPATH, "//button[.//*[contains(text(), 'Copy link')]]").click()
    (code,) = wait_for_css(browser, '[data-testid="stPopoverBody"] code')
    link = code.text.strip()
    assert query(link) == pinned and link.startswith(growing["url"] + "/directions?")

    # A newer run of the same model and dataset is committed: the link still opens its view.
    llama = next(r for r in emotions if r.startswith("emo-llama"))
    manifest = json.loads((growing["root"] / "runs" / llama / "manifest.json").read_text())
    newer = write_run(
        growing["root"], "zz-newer", label_rows(["anger", "gratitude", "neutral"], 6),
        model=manifest["model"], dataset_name="emotions", n_layers=4, d_model=32,
        dataset_sha256=manifest["dataset_sha256"],
    )  # fmt: skip
    browser.get("about:blank")
    open_page(browser, link)
    assert query(browser.current_url) == pinned
    runs = browser.find_element(By.CSS_SELECTOR, ".st-key-runs").text
    assert newer not in runs and all(r in runs for r in emotions)
    # (A bare address now takes the newer run: tests/ui/test_links.py.)
