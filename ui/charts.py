"""Chart builders for the analysis pages: small functions from a tidy DataFrame to a chart.

Altair for everything 2-D (the data travel inside the Vega-Lite spec, which tests read back);
plotly only for the 3-D PCA scatter, which Vega-Lite cannot draw. Builders never compute
statistics; they only map columns to marks, so a page's look changes in one place.
"""

from __future__ import annotations

import altair as alt
import pandas as pd
import plotly.express as px

HEIGHT = 260


def _tooltip(frame: pd.DataFrame, fields) -> list:
    return [alt.Tooltip(f, format=".3f") if frame[f].dtype.kind == "f" else f for f in fields]


def lines(
    frame: pd.DataFrame, x: str, y: str, color: str, *, title: str, x_title: str, y_title: str,
    dash: str | None = None, tooltip=(), y_domain: tuple[float, float] | None = None,
) -> alt.Chart:  # fmt: skip
    """One line per `color` value (and per `dash` value, e.g. one per run) over `x`."""
    scale = alt.Scale(domain=list(y_domain)) if y_domain else alt.Scale(zero=False)
    encoding = {
        # Layers are whole numbers: no 0.5 ticks on short models.
        "x": alt.X(
            x,
            title=x_title,
            type="quantitative",
            axis=alt.Axis(format="d", tickMinStep=1) if x == "layer" else alt.Axis(),
        ),
        "y": alt.Y(y, title=y_title, type="quantitative", scale=scale),
        "color": alt.Color(color, type="nominal", title=color),
        "tooltip": _tooltip(frame, [c for c in (dash, color, x, y, *tooltip) if c]),
    }
    if dash:
        encoding["strokeDash"] = alt.StrokeDash(dash, type="nominal", title=dash)
    return (
        alt.Chart(frame, title=title)
        .mark_line(point=alt.OverlayMarkDef(size=18))
        .encode(**encoding)
        .properties(height=HEIGHT)
    )


def heatmap(
    frame: pd.DataFrame, x: str, y: str, value: str, *, title: str, x_title: str, y_title: str,
    domain: tuple[float, float] | None = None, scheme: str = "viridis", tooltip=(),
    x_labels: bool = True, legend: str | None = None,
) -> alt.Chart:  # fmt: skip
    """Rectangles at (x, y) coloured by `value`; y runs bottom-up like a layer axis."""
    scale = alt.Scale(scheme=scheme, domain=list(domain)) if domain else alt.Scale(scheme=scheme)
    x_axis = alt.Axis(labelAngle=0) if x_labels else alt.Axis(labels=False, ticks=False)
    return (
        alt.Chart(frame, title=title)
        .mark_rect()
        .encode(
            x=alt.X(x, type="ordinal", title=x_title, axis=x_axis, sort=None),
            y=alt.Y(y, type="ordinal", title=y_title, sort="descending"),
            color=alt.Color(value, type="quantitative", scale=scale, title=legend or value),
            tooltip=_tooltip(frame, [y, x, value, *tooltip]),
        )
        .properties(height=max(HEIGHT, 14 * frame[y].nunique()))
    )


def histogram(frame: pd.DataFrame, value: str, color: str, *, title: str) -> alt.Chart:
    """Overlaid (not stacked) histograms of `value`, one per `color` value."""
    return (
        alt.Chart(frame, title=title)
        .mark_bar(opacity=0.55, binSpacing=0)
        .encode(
            x=alt.X(value, type="quantitative", bin=alt.Bin(maxbins=40), title=value),
            y=alt.Y("count()", stack=None, title="samples"),
            color=alt.Color(color, type="nominal"),
        )
        .properties(height=HEIGHT)
    )


def scatter(frame: pd.DataFrame, x: str, y: str, color: str, *, title: str, x_title: str,
            y_title: str, tooltip=()) -> alt.Chart:  # fmt: skip
    return (
        alt.Chart(frame, title=title)
        .mark_circle(size=40, opacity=0.75)
        .encode(
            x=alt.X(x, type="quantitative", title=x_title),
            y=alt.Y(y, type="quantitative", title=y_title),
            color=alt.Color(color, type="nominal"),
            tooltip=[color, *tooltip],
        )
        .properties(height=HEIGHT + 80)
    )


def scatter_3d(frame: pd.DataFrame, color: str, *, title: str, hover: str | None = None):
    """Plotly 3-D scatter of columns pc1, pc2, pc3 (Vega-Lite has no 3-D)."""
    figure = px.scatter_3d(
        frame, x="pc1", y="pc2", z="pc3", color=color, hover_name=hover, title=title, opacity=0.8
    )
    figure.update_traces(marker={"size": 3})
    figure.update_layout(height=520, margin={"l": 0, "r": 0, "t": 40, "b": 0})
    return figure
