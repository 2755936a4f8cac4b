"""Chart builders for the analysis pages: small functions from a tidy DataFrame to a chart.

Altair for everything 2-D (the data travel inside the Vega-Lite spec, which tests read back);
plotly only for the 3-D PCA scatter, which Vega-Lite cannot draw. Builders never compute
statistics; they only map columns to marks, so a page's look changes in one place.

Conventions every chart follows (new pages too: draw through these builders):

* **One colour per value, everywhere.** A page builds one `Styles` per coloured field from the
  *full* list of values and passes it to every builder (`colours=`): `label_colours(labels)` from
  the run's whole label list (the baseline included, so hiding or re-basing keeps each colour),
  `pair_colours(labels)` for label pairs, `category_colours(categories)`, and `series_colours(runs,
  "model" | "run")` from every run of the store, oldest first, so a new run or model never
  recolours the others. Altair gets it as a scale with that domain and range, Plotly as
  `color_discrete_map`; `PALETTE` has clearly distinct hues. A value missing from the list still
  gets a colour (after the listed ones), but only the list makes it the same on every chart.
* **Line styles say what they mean.** `lines(..., dash=field, dashes=series_dashes(runs, ...))`
  gives each value one dash pattern; the legend draws the pattern and names it ("gemma (dashed)").
* **Draw with `draw(container, builder, *args, **kwargs)`**, not `container.altair_chart(...)`:
  the same chart, built and converted once per distinct input in this process (a hosted page's
  charts repeat from visitor to visitor; converting them was most of a served view's time).
* **Readable tooltips with the layer.** Fields are titled by `FIELD_TITLES`; a frame with `layer`
  and `n_layers` (the model's depth; `layer_a`/`n_layers_a` for run A, ...) gets one tooltip line
  "12 of 30 (depth 0.41)". The ui compute functions attach `n_layers` to every per-layer frame.
"""

from __future__ import annotations

import hashlib
import json
import numbers
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import altair as alt
import numpy as np
import pandas as pd
import plotly.express as px
import pyarrow as pa
from streamlit import dataframe_util

from ui.compute import run_title
from ui.shared import derived

HEIGHT = 260
LEGEND_TITLE, LEGEND_ROW = 34, 20  # pixels a legend below a chart takes
# d3's category10 (distinct hues first), then its lighter partners; values past 20 cycle.
PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
    "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
)  # fmt: skip
OVERALL = "#222222"  # a line over every category, e.g. "(all pairs)"
DASHES = (
    ("solid", (1, 0)), ("dashed", (6, 4)), ("dotted", (1, 3)), ("dash-dot", (8, 3, 1, 3)),
    ("long dash", (14, 4)), ("dash-dot-dot", (8, 3, 1, 3, 1, 3)),
)  # fmt: skip
FIELD_TITLES = {
    "label": "Label", "model": "Model", "run": "Run", "pair": "Label pair",
    "category": "Category", "layer": "Layer", "depth": "Depth (0-1)", "n_layers": "Model layers",
    "l1": "L1 norm", "l2": "L2 norm", "l1_rel": "L1 ÷ typical norm", "l2_rel": "L2 ÷ typical norm",
    "stability": "Split-half cosine", "stability_std": "Split-half std", "auc": "Held-out AUC",
    "accuracy": "Held-out accuracy", "n_target": "Samples of the label",
    "n_baseline": "Samples of the baseline", "cosine": "Cosine", "label_a": "Label",
    "label_b": "Label", "projection": "Projection", "text": "Text", "pc1": "PC 1",
    "pc2": "PC 2", "pc3": "PC 3", "mean_abs": "Mean |b - a|", "relative": "‖b - a‖ ÷ norm",
    "n_pairs": "Pairs", "dimension": "Dimension", "score": "Score", "token": "Token",
    "token_a": "Token (a)", "token_b": "Token (b)", "distance": "‖b - a‖", "value": "Value",
    "layer_a": "Layer of A", "layer_b": "Layer of B", "depth_a": "Depth of A",
    "depth_b": "Depth of B", "pairs": "Pairs", "chance": "Chance level (shuffled)",
}  # fmt: skip
PATTERNS = tuple(pattern for _, pattern in DASHES)
IDENTIFYING = ("run", "model", "layer")  # kept in every chart's data (`_trim`)
LAYER_TEXT = {"": "Layer", "_a": "Layer of A", "_b": "Layer of B"}  # suffix -> tooltip title


def title_of(field: str) -> str:
    return FIELD_TITLES.get(field, field)


@dataclass(frozen=True)
class Styles:
    """A fixed value -> style map (a colour, or a dash pattern): values[i] gets styles[i];
    values past the list draw from `pool` in turn."""

    values: tuple[str, ...]
    styles: tuple
    pool: tuple = PALETTE

    def covering(self, present: Iterable) -> Styles:
        """These styles plus any value in `present` they lack (in the order first seen)."""
        extra = [v for v in dict.fromkeys(str(p) for p in present) if v not in self.values]
        start = len(self.values)
        more = tuple(self.pool[(start + i) % len(self.pool)] for i in range(len(extra)))
        return Styles(self.values + tuple(extra), self.styles + more, self.pool)

    def drawn(self, present: Iterable) -> Styles:
        """The styles of the values in `present` only (a legend lists what is drawn), each
        keeping its own style; values the list lacks are added first (`covering`)."""
        present = list(dict.fromkeys(str(p) for p in present))
        full = self.covering(present).mapping()
        kept = [v for v in full if v in set(present)]
        return Styles(tuple(kept), tuple(full[v] for v in kept), self.pool)

    def mapping(self) -> dict[str, object]:
        return dict(zip(self.values, self.styles, strict=True))

    def scale(self) -> alt.Scale:
        return alt.Scale(domain=list(self.values), range=[_jsonable(s) for s in self.styles])


def _jsonable(style):
    return list(style) if isinstance(style, tuple) else style


def _cycle(values: Sequence, pool: tuple) -> Styles:
    return Styles((), (), pool).covering(values)


def colours_for(values: Sequence, fixed: dict[str, str] | None = None) -> Styles:
    """PALETTE in order over `values`; `fixed` values get their own colour (and use none up)."""
    fixed = fixed or {}
    free = _cycle([v for v in values if v not in fixed], PALETTE)
    return Styles(tuple(fixed) + free.values, tuple(fixed.values()) + free.styles)


def label_colours(labels: Sequence[str]) -> Styles:
    """One colour per label of a run, from its full (sorted) label list."""
    return colours_for(sorted(labels))


def pair_colours(labels: Sequence[str]) -> Styles:
    """One colour per pair "a · b" of labels (a before b in sorted order)."""
    ordered = sorted(labels)
    return colours_for([f"{a} · {b}" for i, a in enumerate(ordered) for b in ordered[i + 1 :]])


def category_colours(categories: Sequence[str], overall: str | None = None) -> Styles:
    """One colour per category; `overall` (a line over all of them) in near-black."""
    return colours_for(sorted(categories), {overall: OVERALL} if overall else None)


def _series(runs: pd.DataFrame, by: str) -> list[str]:
    """Models or run titles of every run, oldest first (runs come newest first); kept while
    `runs` lives (the shared runs table: `ui.shared.derived`)."""

    def make() -> tuple[str, ...]:
        oldest_first = runs.iloc[::-1]
        if by == "model":
            return tuple(oldest_first["model"])
        return tuple(run_title(row) for _, row in oldest_first.iterrows())

    return list(derived(runs, ("series", by), make))


def series_colours(runs: pd.DataFrame, by: str) -> Styles:
    """One colour per model (by="model") or run (by="run", by run title) of the store."""
    return colours_for(_series(runs, by))


def series_dashes(runs: pd.DataFrame, by: str) -> Styles:
    """One dash pattern per model or run of the store, oldest first."""
    return _cycle(_series(runs, by), PATTERNS)


def _dash_name(pattern) -> str:
    return next(name for name, p in DASHES if tuple(p) == tuple(pattern))


# -- drawing --------------------------------------------------------------------------------
try:  # Streamlit's own lock around Altair's process-wide theme and data transformer
    from streamlit.elements.vega_charts import _altair_globals_lock as _ALTAIR_GLOBALS
except ImportError:  # pragma: no cover - another Streamlit version: a lock of our own
    _ALTAIR_GLOBALS = threading.Lock()
DRAWN_MAX_BYTES = 64 * 2**20  # converted charts kept for the next visitor (specs + Arrow data)


def _arrow_dataset(data, datasets: dict) -> dict[str, str]:
    """Altair data transformer: the frame as Arrow IPC bytes under its content hash, as
    Streamlit's `altair_chart` ships it."""
    data_bytes = dataframe_util.convert_anything_to_arrow_bytes(data)
    name = hashlib.md5(data_bytes, usedforsecurity=False).hexdigest()
    datasets[name] = data_bytes
    return {"name": name}


alt.data_transformers.register("actx_arrow", _arrow_dataset)


def vega_lite(chart: alt.TopLevelMixin) -> tuple[str, dict[str, bytes]]:
    """(spec as JSON, its datasets as Arrow bytes): what `st.altair_chart` makes of `chart`,
    checked against the Vega-Lite schema the same way."""
    datasets: dict[str, bytes] = {}
    with (
        _ALTAIR_GLOBALS,
        alt.theme.enable("none"),  # as Streamlit draws: no fixed 300 px view from the theme
        alt.data_transformers.enable("actx_arrow", datasets=datasets),
    ):
        spec = chart.to_dict()
    spec.pop("datasets", None)  # inline data: none, every frame went through _arrow_dataset
    return json.dumps(spec), datasets


class _Drawn:
    """Converted charts by what built them, least recently used first, at most DRAWN_MAX_BYTES."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: OrderedDict[str, tuple[str, dict[str, bytes], int]] = OrderedDict()
        self._bytes = 0

    def get(self, key: str):
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def put(self, key: str, spec: str, datasets: dict[str, bytes]) -> None:
        size = len(spec) + sum(len(b) for b in datasets.values())
        with self._lock:
            if key in self._items:
                return
            self._items[key] = (spec, datasets, size)
            self._bytes += size
            while self._bytes > DRAWN_MAX_BYTES and len(self._items) > 1:
                self._bytes -= self._items.popitem(last=False)[1][2]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0


DRAWN = _Drawn()


def _frame_digest(frame: pd.DataFrame) -> bytes:
    """A digest of a frame's content (columns, values, dtypes, index), kept while the frame
    lives (`ui.shared.derived`)."""

    def make() -> bytes:
        out = hashlib.sha256()
        out.update(repr(list(frame.columns)).encode())  # each column's dtype: _digest_values
        for i in range(frame.shape[1]):
            _digest_values(_column_values(frame, i), out)
        _digest_values(frame.index.array, out)
        return out.digest()

    return derived(frame, ("digest",), make)


def _digest(value, out) -> None:
    """Feed `value` (a builder argument) into the hash `out`; TypeError if it cannot say."""
    if isinstance(value, pd.DataFrame):
        out.update(b"frame:" + _frame_digest(value))
    elif isinstance(value, (list, tuple)):
        out.update(b"(" if isinstance(value, tuple) else b"[")
        for item in value:
            _digest(item, out)
        out.update(b")")
    elif isinstance(value, dict):
        _digest(sorted(value.items(), key=lambda kv: str(kv[0])), out)
    elif value is None or isinstance(value, (str, numbers.Number, Styles)):
        out.update(f"{type(value).__name__}:{value!r};".encode())
    else:
        raise TypeError(f"cannot key a chart on {type(value).__name__}")


def _column_values(frame: pd.DataFrame, i: int):
    """Column i's values (a numpy array or a pandas extension array), without making a Series:
    `frame.items()` builds one per column, which was most of the key's cost (a page draws
    several charts per view). Falls back to the public path if pandas drops the method."""
    try:
        return frame._get_column_array(i)
    except AttributeError:
        return frame.iloc[:, i].array


def _digest_values(values, out) -> None:
    """Values into `out`: the raw bytes of a numeric numpy array (its dtype and length first),
    the buffers of Arrow-backed values (with offset and length: a slice's buffers hold more),
    pandas' value hashes for anything else."""
    array = np.asarray(values) if isinstance(values, pd.arrays.NumpyExtensionArray) else values
    if isinstance(array, np.ndarray) and array.dtype.kind in "biufcmM":
        out.update(f"{array.dtype}:{len(array)};".encode())
        out.update(np.ascontiguousarray(array).tobytes())
        return
    try:
        chunks = pa.chunked_array(pa.array(values, from_pandas=True)).chunks
    except (pa.ArrowException, TypeError, ValueError):
        chunks = None
    if chunks is None or any(pa.types.is_dictionary(chunk.type) for chunk in chunks):
        # (a dictionary array's buffers leave its dictionary out)
        hashed = pd.util.hash_pandas_object(pd.Series(values, copy=False), index=False)
        out.update(f"hashed:{values.dtype}:{len(values)};".encode())
        out.update(hashed.to_numpy().tobytes())
        return
    for chunk in chunks:
        out.update(f"{chunk.type}:{chunk.offset}:{len(chunk)};".encode())
        for buffer in chunk.buffers():
            out.update(b"-" if buffer is None else buffer)


def draw(container, build: Callable[..., alt.TopLevelMixin], *args, **kwargs) -> None:
    """`container.altair_chart(build(*args, **kwargs))` (container: `st`, a column), the same
    spec and data, converted once per distinct input in this process.

    Why: a page's charts repeat from visitor to visitor (their frames come from cached results),
    and building and converting them (Altair's to_dict and schema check, the tooltip text, the
    Arrow data) was most of a served view's time (bench/bench_load.py under py-spy). The key is
    the builder and a hash of its arguments, frames by content (values, index, columns, dtypes).
    """
    try:
        digest = hashlib.sha256(f"{build.__module__}.{build.__qualname__}".encode())
        _digest((args, kwargs), digest)
        key = digest.hexdigest()
    except TypeError:  # an argument with no content hash: build it every time
        key = None
    item = DRAWN.get(key) if key else None
    if item is None:
        spec_json, datasets = vega_lite(build(*args, **kwargs))
        if key:
            DRAWN.put(key, spec_json, datasets)
    else:
        spec_json, datasets, _ = item
    spec = json.loads(spec_json)  # a fresh dict: Streamlit takes the datasets out of it
    spec["datasets"] = dict(datasets)
    container.vega_lite_chart(spec=spec)


# -- tooltips ---------------------------------------------------------------------------------
def _layer_text(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str], set[str]]:
    """The frame with a "12 of 30 (depth 0.41)" column per layer field it can describe, those
    columns, and the raw fields they replace in a tooltip (a column already there is kept).

    Built from the few distinct (layer, depth) pairs, not row by row with pandas string
    arithmetic: a cross-model heatmap has 900 rows, and that arithmetic was a fifth of a
    served view's time (bench/bench_load.py under py-spy).
    """
    added, replaced = [], set()
    for suffix, title in LAYER_TEXT.items():
        layer, n = f"layer{suffix}", f"n_layers{suffix}"
        if layer not in frame or n not in frame:
            continue
        if title not in frame:
            pairs = list(zip(frame[layer].tolist(), frame[n].tolist(), strict=True))
            text = {(k, m): f"{int(k)} of {int(m)} (depth {k / max(m - 1, 1):.2f})"
                    for k, m in set(pairs)}  # fmt: skip
            frame = frame.assign(**{title: [text[pair] for pair in pairs]})
        added.append(title)
        replaced |= {layer, n, f"depth{suffix}"}
    return frame, added, replaced


def _tooltip(frame: pd.DataFrame, fields) -> tuple[pd.DataFrame, list]:
    frame, layer_fields, replaced = _layer_text(frame)
    fields = [f for f in dict.fromkeys(fields) if f and f not in replaced and f in frame]
    tips = [
        alt.Tooltip(f, title=title_of(f), format=".3f")
        if frame[f].dtype.kind == "f"
        else alt.Tooltip(f, title=title_of(f))
        for f in fields
    ]
    return frame, tips + [alt.Tooltip(f, title=f) for f in layer_fields]


def _trim(frame: pd.DataFrame, *fields) -> pd.DataFrame:
    """Only the columns a chart encodes (`fields`: names, or lists of tooltips), in that order.

    The data travel inside every served chart: a page's frames carry columns for other charts
    and tables (a Directions frame has 20), and sending them all doubled the bytes per view.
    The `IDENTIFYING` columns stay when present: the data say which run, model and layer a row is.
    """
    names: list[str] = []
    for field in (*fields, *IDENTIFYING):
        for item in field if isinstance(field, list) else [field]:
            name = item.shorthand if isinstance(item, alt.Tooltip) else item
            if isinstance(name, str) and name in frame and name not in names:
                names.append(name)
    return frame[names]


def _colour(field: str, colours: Styles, frame: pd.DataFrame, orient: str = "right") -> alt.Color:
    styles = colours.drawn(frame[field])
    columns = 2 if orient == "bottom" else alt.Undefined
    legend = alt.Legend(orient=orient, columns=columns, labelLimit=400)
    return alt.Color(field, type="nominal", scale=styles.scale(), title=title_of(field),
                     legend=legend)  # fmt: skip


# -- builders ---------------------------------------------------------------------------------
def lines(
    frame: pd.DataFrame, x: str, y: str, color: str, *, colours: Styles, title: str,
    x_title: str, y_title: str, dash: str | None = None, dashes: Styles | None = None,
    tooltip=(), y_domain: tuple[float, float] | None = None,
) -> alt.LayerChart:  # fmt: skip
    """One line per `color` value (and per `dash` value, e.g. one per model) over `x`; the
    legends sit below the plot, so two charts side by side keep their width."""
    scale = alt.Scale(zero=False)
    if y_domain:  # the natural range, widened to every value drawn (no point off the plot)
        low, high = frame[y].min(), frame[y].max()
        scale = alt.Scale(domain=[min(y_domain[0], low), max(y_domain[1], high)]
                          if pd.notna(low) else list(y_domain))  # fmt: skip
    tip_fields = [dash, color, x, y, *tooltip]
    if dash:
        styles = (dashes or _cycle([], PATTERNS)).drawn(frame[dash])
        named = {v: f"{v} ({_dash_name(p)})" for v, p in styles.mapping().items()}
        line_field = f"{title_of(dash)} (line)"  # a column: "gemma (dashed)"
        frame = frame.assign(**{line_field: frame[dash].astype(str).map(named)})
        line_styles = Styles(tuple(named.values()), styles.styles)
        tip_fields[0] = line_field
    frame, tips = _tooltip(frame, tip_fields)
    # Layers are whole numbers: no 0.5 ticks on short models.
    x_axis = alt.Axis(format="d", tickMinStep=1) if x == "layer" else alt.Axis()
    line = alt.Chart().mark_line()
    if dash:
        # Its own layer without points: over a point overlay Vega-Lite draws this legend's
        # symbols as dots, so nothing showed which model is which line.
        line = line.encode(
            strokeDash=alt.StrokeDash(
                line_field, type="nominal", scale=line_styles.scale(), title=line_field,
                legend=alt.Legend(orient="bottom", direction="vertical", symbolType="stroke",
                                  symbolSize=600, symbolStrokeWidth=2, labelLimit=400),
            )
        )  # fmt: skip
    # Streamlit fits the legends into the height too: give them their rows.
    rows = max(-(-frame[color].nunique() // 2), frame[dash].nunique() if dash else 0)
    height = HEIGHT + LEGEND_TITLE + LEGEND_ROW * rows
    points = alt.Chart().mark_point(filled=True, size=18)
    frame = _trim(frame, x, y, color, dash, line_field if dash else None, tips)
    return (
        alt.layer(line, points, data=frame, title=title)
        .encode(  # shared by both layers
            x=alt.X(x, title=x_title, type="quantitative", axis=x_axis),
            y=alt.Y(y, title=y_title, type="quantitative", scale=scale),
            color=_colour(color, colours, frame, orient="bottom"),
            tooltip=tips,
        )
        .properties(height=height)
    )


def heatmap(
    frame: pd.DataFrame, x: str, y: str, value: str, *, title: str, x_title: str, y_title: str,
    domain: tuple[float, float] | None = None, scheme: str = "viridis", tooltip=(),
    x_labels: bool = True, legend: str | None = None, best: str | None = None,
    best_tooltip=(),
) -> alt.Chart | alt.LayerChart:  # fmt: skip
    """Rectangles at (x, y) coloured by `value`; y runs bottom-up like a layer axis.

    best: a boolean column; its true cells get a ring on top (e.g. the best match per row),
    whose tooltip adds the fields `best_tooltip` (e.g. a chance level known only there).
    """
    scale = alt.Scale(scheme=scheme, domain=list(domain)) if domain else alt.Scale(scheme=scheme)
    x_axis = alt.Axis(labelAngle=0) if x_labels else alt.Axis(labels=False, ticks=False)
    height = max(HEIGHT, 14 * frame[y].nunique())
    frame, tips = _tooltip(frame, [y, x, value, *tooltip])
    _, ring_tips = _tooltip(frame, [y, x, value, *tooltip, *best_tooltip])  # layer text: made
    encoding = {
        "x": alt.X(x, type="ordinal", title=x_title, axis=x_axis, sort=None),
        "y": alt.Y(y, type="ordinal", title=y_title, sort="descending"),
    }
    colour = alt.Color(value, type="quantitative", scale=scale, title=legend or title_of(value))
    frame = _trim(frame, x, y, value, best, tips, ring_tips if best else None)
    if best is None:
        chart = alt.Chart(frame, title=title).mark_rect()
        return chart.encode(**encoding, color=colour, tooltip=tips).properties(height=height)
    cells = alt.Chart().mark_rect().encode(color=colour, tooltip=tips)
    ring = alt.Chart().mark_point(shape="circle", filled=False, color="black", strokeWidth=2,
                                  size=90).transform_filter(alt.datum[best])  # fmt: skip
    ring = ring.encode(tooltip=ring_tips)
    chart = alt.layer(cells, ring, data=frame, title=title).encode(**encoding)
    return chart.properties(height=height)


def histogram(frame: pd.DataFrame, value: str, color: str, *, colours: Styles, title: str,
              x_title: str | None = None) -> alt.Chart:  # fmt: skip
    """Overlaid histograms of `value`, one per `color` value, drawn as outlines (unfilled bars
    over shared bins), so where they overlap every label's shape still shows in its colour."""
    return (
        alt.Chart(_trim(frame, value, color), title=title)
        .mark_bar(filled=False, strokeWidth=1.6, binSpacing=0)
        .encode(
            x=alt.X(
                value,
                type="quantitative",
                bin=alt.Bin(maxbins=40),
                title=x_title or title_of(value),
            ),  # fmt: skip
            y=alt.Y("count()", stack=None, title="samples"),
            color=_colour(color, colours, frame),
        )
        .properties(height=HEIGHT)
    )


def scatter(frame: pd.DataFrame, x: str, y: str, color: str, *, colours: Styles, title: str,
            x_title: str, y_title: str, tooltip=()) -> alt.Chart:  # fmt: skip
    frame, tips = _tooltip(frame, [color, *tooltip])
    return (
        alt.Chart(_trim(frame, x, y, color, tips), title=title)
        .mark_circle(size=40, opacity=0.75)
        .encode(
            x=alt.X(x, type="quantitative", title=x_title),
            y=alt.Y(y, type="quantitative", title=y_title),
            color=_colour(color, colours, frame),
            tooltip=tips,
        )
        .properties(height=HEIGHT + 80)
    )


def scatter_3d(frame: pd.DataFrame, color: str, *, colours: Styles, title: str,
               hover: str | None = None):  # fmt: skip
    """Plotly 3-D scatter of columns pc1, pc2, pc3 (Vega-Lite has no 3-D)."""
    frame, layer_fields, _ = _layer_text(frame)
    styles = colours.drawn(frame[color])
    figure = px.scatter_3d(
        frame, x="pc1", y="pc2", z="pc3", color=color, hover_name=hover, title=title,
        opacity=0.8, color_discrete_map=styles.mapping(),
        category_orders={color: list(styles.values)},
        labels={f: title_of(f) for f in ("pc1", "pc2", "pc3", color)},
        hover_data={f: True for f in layer_fields},
    )  # fmt: skip
    figure.update_traces(marker={"size": 3})
    figure.update_layout(height=520, margin={"l": 0, "r": 0, "t": 40, "b": 0})
    return figure


def bars(frame: pd.DataFrame, x: str, y: str, color: str, *, colours: Styles, title: str,
         x_title: str, y_title: str, tooltip=()) -> alt.Chart:  # fmt: skip
    """Horizontal bars of `x` per `y` category (kept in the frame's order), coloured by `color`
    (issue 12: a feature's activation per label, a label's top features)."""
    frame = frame.assign(**{y: frame[y].astype(str)})
    frame, tips = _tooltip(frame, [color, y, x, *tooltip])
    order = list(dict.fromkeys(frame[y]))
    return (
        alt.Chart(_trim(frame, x, y, color, tips), title=title)
        .mark_bar()
        .encode(
            x=alt.X(x, type="quantitative", title=x_title),
            y=alt.Y(y, type="nominal", title=y_title, sort=order),
            color=_colour(color, colours, frame),
            tooltip=tips,
        )
        .properties(height=max(HEIGHT // 2, 18 * len(order)))
    )
