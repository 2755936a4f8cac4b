"""Hostile URL values for every URL-bound widget of every analysis page (AppTest, tiny store).

Each case puts one hostile value into every bound key of a page at once, as a crafted link
would, and checks that the page still draws its main chart or table, shows no exception, and
says what it dropped in a short plain-text warning. `/pairs?top=inf` used to end in an
OverflowError (Streamlit 1.67 converts a number_input's URL value before any page code runs);
every bound widget now picks from fixed options, which Streamlit matches as text.
"""

from __future__ import annotations

import pytest

from tests.ui.apptest import chart, messages, open_page, run_id_named

HOSTILE = {
    "inf": "inf",
    "-inf": "-inf",
    "nan": "nan",
    "1e309": "1e309",
    "-1": "-1",
    "huge int": "99999999999999999999",
    "huge": "z" * 100_000,  # cut per page below: Streamlit ignores a query over 512 KiB
    "dot dot": "../",
    "markdown": "[session expired](http://evil.example)",
    "empty": "",
}
PAGES = {
    "pages/runs.py": ("model", "dataset", "hook", "run"),
    "pages/directions.py": ("runs", "site", "position", "baseline", "hide", "relative", "depth",
                            "detail", "layer", "project", "pca3d"),
    "pages/cross_model.py": ("runs", "site", "position", "baseline", "label", "a", "b"),
    "pages/pairs.py": ("pairs_run", "site", "position", "categories", "layer", "top", "pair"),
}  # fmt: skip


def main_view_drawn(at, page: str) -> None:
    if page == "pages/runs.py":
        assert len(at.dataframe[0].value) == 4
        assert at.json  # the provenance of the default run
    elif page == "pages/directions.py":
        assert chart(at, "L2 norm")["model"].nunique() == 3
        assert not chart(at, "PCA of the samples").empty
    elif page == "pages/cross_model.py":
        assert not chart(at, "Linear CKA").empty
    else:
        assert not chart(at, "Mean absolute difference").empty
        assert not chart(at, "||b - a|| per token").empty


@pytest.mark.parametrize("page", list(PAGES))
@pytest.mark.parametrize("value", list(HOSTILE))
@pytest.mark.slow
def test_hostile_values_in_every_bound_widget(tiny_env, page, value):
    keys = PAGES[page]
    hostile = HOSTILE[value][: 480_000 // len(keys)]
    at = open_page(page, dict.fromkeys(keys, hostile))
    text = messages(at)
    if value == "empty" and "runs" in keys:  # `?runs=` is a link to no runs at all
        assert "Pick" in text
        return
    if value == "empty" and "categories" in keys:  # `?categories=`: no pair to show
        assert "Every category is hidden" in text and not at.exception
        return
    main_view_drawn(at, page)
    assert len(text) < 400 * len(keys)  # a 100 KB value is echoed cut short
    assert "[session expired](" not in text  # Markdown from the URL is escaped
    if hostile:
        assert "The link asks for" in text


def test_top_takes_only_its_steps(tiny_env):
    at = open_page("pages/pairs.py", {"top": "20"})
    assert at.select_slider(key="top").value == 20
    assert len(at.dataframe[0].value) == 20
    at = open_page("pages/pairs.py", {"top": "7"})
    assert at.select_slider(key="top").value == 10
    assert "'how many' = '7'" in messages(at)


def test_a_valid_link_keeps_its_values_next_to_hostile_ones(tiny_env):
    llama = run_id_named(tiny_env, "emo-llama")
    at = open_page(
        "pages/directions.py",
        {"runs": [llama, "../../etc/passwd"], "layer": "1", "relative": "maybe", "depth": "TRUE"},
    )
    assert at.multiselect(key="runs").value == [llama]
    assert at.select_slider(key="layer").value == 1
    assert at.toggle(key="depth").value is True  # Streamlit reads true/false in any case
    assert "'../../etc/passwd'" in messages(at) and "'maybe'" in messages(at)
    assert "'TRUE'" not in messages(at)
