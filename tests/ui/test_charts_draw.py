"""`charts.draw`: the spec and data Streamlit's `altair_chart` makes, converted once per input.

The pages draw every Altair chart through it (ui/charts.py); the AppTest suites read those
charts back (tests/ui/test_links.py, test_pages.py). Here: the same spec and Arrow data as
`st.altair_chart` for a line chart and a ringed heatmap, a second draw of the same input reuses
the conversion, any change in a frame's values, index or columns draws anew, and an invalid chart
still fails on its first draw, and a chart's data hold only the columns it draws.
"""

from __future__ import annotations

import json

import altair as alt
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from streamlit.elements.vega_charts import _convert_altair_to_vega_lite_spec

from ui import charts


class Recorder:
    """A container that keeps the spec it was given (what `st.vega_lite_chart` receives)."""

    def __init__(self) -> None:
        self.specs: list[dict] = []

    def vega_lite_chart(self, *, spec: dict) -> None:
        self.specs.append(spec)


def _frames():
    lines = pd.DataFrame(
        {
            "layer": np.repeat(np.arange(5), 3), "n_layers": 30, "depth": 0.1,
            "label": ["anger", "gratitude", "neutral"] * 5, "l2": np.linspace(0, 1, 15),
            "model": ["a", "b", "c"] * 5,
        }
    )  # fmt: skip
    cells = pd.DataFrame(
        {
            "layer_a": np.repeat(np.arange(4), 4), "layer_b": np.tile(np.arange(4), 4),
            "n_layers_a": 30, "n_layers_b": 18, "depth_a": 0.0, "depth_b": 0.0,
            "value": np.linspace(-1, 1, 16), "best": [True, False, False, False] * 4,
            "chance": np.nan,
        }
    )  # fmt: skip
    return lines, cells


def _calls():
    lines, cells = _frames()
    colours = charts.label_colours(["anger", "gratitude", "neutral"])
    dashes = charts.series_dashes(lines, "model")
    return [
        (charts.lines, (lines, "layer", "l2", "label"),
         {"colours": colours, "title": "t", "x_title": "x", "y_title": "y", "dash": "model",
          "dashes": dashes, "tooltip": ("depth",)}),
        (charts.heatmap, (cells, "layer_b", "layer_a", "value"),
         {"title": "h", "x_title": "", "y_title": "", "best": "best",
          "best_tooltip": ("chance",)}),
    ]  # fmt: skip


def _comparable(spec: dict) -> tuple[str, list[bytes]]:
    """The spec as text with dataset names replaced (Streamlit and draw hash them differently),
    and the datasets' Arrow bytes."""
    spec = dict(spec)
    datasets = spec.pop("datasets")
    text = json.dumps(spec, sort_keys=True)
    for name in datasets:
        text = text.replace(name, "DATA")
    return text, list(datasets.values())


@pytest.mark.parametrize("index", [0, 1], ids=["lines", "heatmap"])
def test_draw_gives_streamlits_spec_and_data_and_converts_once(index):
    build, args, kwargs = _calls()[index]
    expected = _comparable(_convert_altair_to_vega_lite_spec(build(*args, **kwargs)))
    charts.DRAWN.clear()
    built = []

    def counting(*a, **k):
        built.append(1)
        return build(*a, **k)

    counting.__qualname__ = build.__qualname__
    out = Recorder()
    for _ in range(3):
        charts.draw(out, counting, *args, **kwargs)
    assert [_comparable(spec) for spec in out.specs] == [expected] * 3
    assert len(built) == 1  # the second and third draw reused the first conversion
    assert out.specs[0] is not out.specs[1]  # each gets its own dict (Streamlit edits it)


def test_any_change_in_a_frame_draws_anew():
    build, (frame, *rest), kwargs = _calls()[0]
    charts.DRAWN.clear()
    variants = [
        frame,
        frame.assign(l2=frame["l2"].where(frame.index != 7, 0.123)),  # one value
        frame.assign(label=frame["label"].where(frame.index != 2, "gratitude")),  # one text
        frame.set_axis(frame.index + 1),  # the index
        frame.rename(columns={"depth": "depth_"}),  # a column name
        frame.iloc[1:],  # a row fewer (a slice of the same buffers)
    ]
    out = Recorder()
    for variant in variants:
        charts.draw(out, build, variant, *rest, **kwargs)
    assert len(charts.DRAWN._items) == len(variants)  # each one converted on its own
    data = [_comparable(spec)[1] for spec in out.specs]
    assert data[0] != data[1] and data[0] != data[2]


def test_a_frame_drawn_again_is_not_hashed_again(monkeypatch):
    build, (frame, *rest), kwargs = _calls()[0]
    charts.DRAWN.clear()
    hashed = []
    original = charts._digest_values
    monkeypatch.setattr(charts, "_digest_values",
                        lambda values, out: (hashed.append(1), original(values, out)))  # fmt: skip
    out = Recorder()
    charts.draw(out, build, frame, *rest, **kwargs)
    once = len(hashed)
    charts.draw(out, build, frame, *rest, **kwargs)  # the same (shared) frame: known by identity
    assert once > 0 and len(hashed) == once
    charts.draw(out, build, frame.copy(), *rest, **kwargs)  # an equal copy: hashed, then found
    assert len(hashed) == 2 * once and len(charts.DRAWN._items) == 1
    assert _comparable(out.specs[0]) == _comparable(out.specs[2])


def test_an_invalid_chart_fails_on_its_first_draw():
    frame = pd.DataFrame({"a": [1, 2]})

    def invalid(frame):
        return alt.Chart(frame).mark_point().encode(x="a:Q").properties(width="wide")

    charts.DRAWN.clear()
    for _ in range(2):  # nothing was kept from the failed draw
        with pytest.raises(Exception, match="wide"):
            charts.draw(Recorder(), invalid, frame)


def test_a_chart_carries_only_the_columns_it_draws():
    lines, cells = _frames()
    extra = {"stability": 0.5, "n_target": 60, "text": "a long sentence the chart never shows"}
    colours = charts.label_colours(["anger", "gratitude", "neutral"])
    out = Recorder()
    charts.draw(out, charts.lines, lines.assign(**extra), "layer", "l2", "label",
                colours=colours, title="t", x_title="x", y_title="y",
                tooltip=("n_target",))  # fmt: skip
    charts.draw(out, charts.heatmap, cells.assign(**extra), "layer_b", "layer_a", "value",
                title="h", x_title="", y_title="")  # fmt: skip
    (line_data,), (cell_data,) = (
        [
            set(pa.ipc.open_stream(data).read_all().column_names)
            for data in spec["datasets"].values()
        ]
        for spec in out.specs
    )
    # Drawn, in the tooltip, or naming the model and layer; not "stability" nor the text.
    assert line_data == {"layer", "l2", "label", "n_target", "model", "Layer"}
    assert cell_data == {"layer_a", "layer_b", "value", "Layer of A", "Layer of B"}
