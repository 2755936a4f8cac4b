"""Helpers for AppTest suites: open a page as a link would, read back charts and messages."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 60
PAGES = ("pages/runs.py", "pages/directions.py", "pages/cross_model.py", "pages/pairs.py")
TEXT_KINDS = ("title", "subheader", "markdown", "caption", "info", "warning", "error", "success",
              "code", "json", "exception")  # fmt: skip


def open_page(page: str, query: dict | None = None, *, check: bool = True) -> AppTest:
    """Open `page` as a link would: the first run of the session, with `query` in the URL.

    Bound widgets read the URL only on a session's first load, so the page is switched to
    before the first run (the pages use their default url paths, which switch_page can find).
    """
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    at.query_params.update(query or {})
    at.switch_page(page)
    at.run()
    if check:
        assert not at.exception, at.exception
    return at


def open_downloads(at: AppTest) -> AppTest:
    """Open the page's Download expander, as a visitor's click does (its buttons are built only
    then: ui.downloads), and rerun."""
    from ui.downloads import OPEN_KEY

    at.session_state[OPEN_KEY] = True
    at.run()
    assert not at.exception, at.exception
    return at


def charts(at: AppTest) -> dict[str, pd.DataFrame]:
    """Title -> the chart's data, for every Vega-Lite chart on the page."""
    out = {}
    for element in at.get("vega_lite_chart"):
        spec = json.loads(element.proto.spec)
        title = spec.get("title", "")
        title = title.get("text", "") if isinstance(title, dict) else title
        frames = [pa.ipc.open_stream(d.data.data).read_all().to_pandas()
                  for d in element.proto.datasets]  # fmt: skip
        out[title] = frames[0] if frames else pd.DataFrame()
    return out


def chart(at: AppTest, starts: str) -> pd.DataFrame:
    found = [frame for title, frame in charts(at).items() if title.startswith(starts)]
    assert found, f"no chart titled {starts!r}; have {list(charts(at))}"
    return found[0]


def chart_spec(at: AppTest, starts: str) -> dict:
    for element in at.get("vega_lite_chart"):
        spec = json.loads(element.proto.spec)
        if str(spec.get("title", "")).startswith(starts):
            return spec
    raise AssertionError(f"no chart titled {starts!r}")


def messages(at: AppTest) -> str:
    return " ".join(m.value for kind in ("info", "warning", "error") for m in getattr(at, kind))


def shown(text: str) -> str:
    """Markdown-escaped text as a reader sees it (plain() adds backslashes and zero-width
    spaces that the browser does not show)."""
    return text.replace("\\", "").replace("\u200b", "")


def page_text(at: AppTest) -> str:
    """Every text a visitor can read on the page: messages, Markdown, code, JSON, the sidebar,
    and the cells and columns of every table."""
    parts = [str(getattr(e, "value", "")) for kind in TEXT_KINDS for e in at.get(kind)]
    for element in at.get("arrow_data_frame"):
        frame = element.value
        parts += [str(c) for c in frame.columns] + [str(v) for v in frame.to_numpy().ravel()]
    return "\n".join(parts)


def run_id_named(store: dict, name: str) -> str:
    return next(r for r in store["run_ids"] if r.startswith(name))


def _colour_scales(spec: dict):
    """(field, domain, range) of every nominal colour encoding in a spec and its layers."""
    for part in [spec, *spec.get("layer", [])]:
        colour = part.get("encoding", {}).get("color", {})
        scale = colour.get("scale", {})
        if colour.get("type") == "nominal" and "domain" in scale:
            yield colour["field"], scale["domain"], scale["range"]


def colour_maps(at: AppTest) -> list[tuple[str, str, dict[str, str]]]:
    """(chart title, field, value -> colour) for every categorical colour on the page, read from
    the Vega-Lite specs and the Plotly figures Streamlit ships to the browser."""
    found = []
    for element in at.get("vega_lite_chart"):
        spec = json.loads(element.proto.spec)
        title = spec.get("title", "")
        for field, domain, colours in _colour_scales(spec):
            found.append((title, field, dict(zip(domain, colours, strict=True))))
    for element in at.get("plotly_chart"):
        figure = json.loads(element.proto.spec)
        traces = {t["name"]: t["marker"]["color"] for t in figure["data"] if "name" in t}
        title = figure["layout"].get("title", {}).get("text", "")
        found.append((title, figure["layout"]["legend"]["title"]["text"], traces))
    return found


def record_downloads(monkeypatch) -> dict[str, object]:
    """file name -> the callable a download button runs when pressed (Streamlit keeps it in its
    media file manager, which AppTest gives no way to reach): call it to get the file's bytes."""
    from streamlit.runtime.media_file_manager import MediaFileManager

    made: dict[str, object] = {}
    original = MediaFileManager.add_deferred

    def add_deferred(self, data_callable, mimetype, coordinates, file_name=None, **kwargs):
        made[file_name] = data_callable
        return original(self, data_callable, mimetype, coordinates, file_name, **kwargs)

    monkeypatch.setattr(MediaFileManager, "add_deferred", add_deferred)
    return made
