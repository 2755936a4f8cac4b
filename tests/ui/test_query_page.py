"""The Query page (AppTest, tiny store): SQL over the views from a link, confined and capped.

A shared link answers `SELECT label, count(*) FROM samples GROUP BY label` for the run it names;
hostile query strings in the URL (file and table functions, ATTACH, COPY, a huge result, 100 KB
of text, Markdown) are refused or capped with a plain message; a damaged run is left out of the
views while the others answer; read-only mode runs queries and shows no server path.
"""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from store import StoreError, open_store
from tests.ui.apptest import messages, open_page, page_text, run_id_named
from ui.context import StoreView
from ui.query import MAX_SQL_CHARS, csv_bytes, run_query

PAGE = "pages/query.py"
BY_LABEL = "SELECT label, count(*) AS n FROM samples WHERE run_id = $run GROUP BY label ORDER BY 1"


def result(at) -> pd.DataFrame:
    return at.dataframe[-1].value  # the first table is the views' reference, in an expander


@pytest.mark.slow
def test_a_link_reopens_the_query_for_its_run(tiny_env):
    store = open_store(tiny_env["root"])
    for name in ("emo-gemma3", "pairs-llama"):
        run_id = run_id_named(tiny_env, name)
        at = open_page(PAGE, {"run": run_id, "sql": BY_LABEL, "rows": "100"})
        expected = store.samples(run_id)["label"].value_counts().sort_index()
        frame = result(at)
        assert dict(zip(frame["label"], frame["n"], strict=True)) == expected.to_dict()
        assert dict(at.query_params) == {"run": run_id, "sql": BY_LABEL, "rows": "100"}
    # The issue's own query, over every run, and the CSV the page offers for it.
    at = open_page(PAGE, {"sql": "SELECT label, count(*) FROM samples GROUP BY label"})
    frame = result(at)
    assert frame.iloc[:, 1].sum() == sum(len(store.samples(r)) for r in tiny_env["run_ids"])
    assert pd.read_csv(pd.io.common.BytesIO(csv_bytes(frame))).equals(frame)
    assert [b.proto.label for b in at.get("download_button")] == ["Download CSV"]


HOSTILE_SQL = {
    "file function": ("SELECT * FROM read_csv('/etc/passwd')", "table functions"),
    "glob": ("SELECT * FROM glob('/*')", "table functions"),
    "getenv": ("SELECT getenv('HOME') AS h FROM runs", "getenv"),
    "attach": ("ATTACH '/tmp/evil.db' AS evil", "only SELECT"),
    "copy": ("COPY samples TO '/tmp/evil.csv'", "only SELECT"),
    "two statements": ("SELECT 1; DROP VIEW runs", "exactly one"),
    "markdown": ("SELECT * FROM [session expired](http://evil.example)", "query failed"),
}


def test_hostile_queries_are_refused_plainly(tiny_env):
    view = StoreView(str(tiny_env["root"]), tuple(sorted(tiny_env["run_ids"])))
    for case, (sql, said) in HOSTILE_SQL.items():
        with pytest.raises(StoreError) as caught:
            run_query(view, sql, tiny_env["run_ids"][0], 100)
        assert said in str(caught.value) and str(tiny_env["root"]) not in str(caught.value), case
    # From a link: one plain error, Markdown shown as text, nothing to download.
    at = open_page(PAGE, {"sql": HOSTILE_SQL["markdown"][0] + "; " + HOSTILE_SQL["copy"][0]})
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "query failed" in errors[0], errors
    assert "[session expired](" not in errors[0]
    assert not list(at.get("download_button"))


@pytest.mark.slow
def test_a_huge_result_a_huge_query_and_bad_caps(tiny_env):
    cross = "SELECT a.*, b.vector AS w FROM vectors a, vectors b"  # millions of floats
    at = open_page(PAGE, {"sql": cross, "rows": "inf"})
    frame = result(at)
    assert len(frame) <= 1000 and "Showing the first" in messages(at)
    assert "'rows at most' = 'inf'" in messages(at)
    at = open_page(PAGE, {"sql": "SELECT 1 AS x " + " " * (MAX_SQL_CHARS + 1) + "-- " * 30_000})
    assert "characters long" in messages(at) and "SELECT 1" not in messages(at)
    assert at.text_area(key="sql").value.startswith("SELECT label, count(*)")  # the default
    at = open_page(PAGE, {"sql": ""})
    assert "Write a SELECT" in messages(at)


def test_a_damaged_run_is_left_out_and_read_only_works(tiny_store, tmp_path, monkeypatch):
    root = tmp_path / "store"
    shutil.copytree(tiny_store["root"], root)
    victim = run_id_named(tiny_store, "emo-gemma3")
    (root / "runs" / victim / "samples.parquet").write_bytes(b"PAR1 not really")
    monkeypatch.setenv("ACTX_STORE", str(root))
    monkeypatch.setenv("ACTX_READ_ONLY", "1")
    at = open_page(PAGE, {"sql": "SELECT DISTINCT run_id FROM samples ORDER BY 1"})
    assert victim not in set(result(at)["run_id"]) and len(result(at)) == 3
    text = page_text(at)
    assert str(root) not in text and str(tmp_path) not in text
    assert not at.exception and "This view failed" not in messages(at)
