"""ui.controls.show_table: the same table as `st.dataframe(frame, hide_index=True)`, its Arrow
form made once per shared frame (what a served view saves: bench/bench_load.py)."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest


def _both() -> None:
    import pandas as pd
    import streamlit as st

    from ui import controls

    frame = pd.DataFrame(
        {
            "run": ["a", "b", "c"],
            "samples": [1, 20, 300],
            "mixed": [1, "two", 3.0],  # Streamlit's own fix-up: Arrow refuses mixed objects
            "score": [0.5, float("nan"), -1.0],
        },
        index=[7, 8, 9],
    )
    config = {"samples": st.column_config.NumberColumn("Samples", format="%d")}
    st.dataframe(frame, hide_index=True, column_config=config)
    controls.show_table(st, frame, column_config=config)
    controls.show_table(st, frame, column_config=config)  # the kept Arrow form


def test_show_table_shows_what_st_dataframe_shows():
    at = AppTest.from_function(_both).run()
    assert not at.exception, at.exception
    plain, *shown = [table.value.reset_index(drop=True) for table in at.dataframe]
    for table in shown:
        assert table.astype(str).equals(plain.astype(str))
        assert list(table.columns) == ["run", "samples", "mixed", "score"]
    protos = [table.proto for table in at.dataframe]
    assert {p.columns for p in protos} == {protos[0].columns}  # the same column config
