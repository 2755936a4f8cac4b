"""Store.query is confined: one SELECT over the store's views, no file outside the store's runs
read, nothing written anywhere, configuration locked; parameters bound, rows capped, slow
queries stoppable."""

from __future__ import annotations

import re
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from store import StoreError, open_store
from tests.support.synthetic import label_rows, write_run

OUTSIDE_TEXT = "outside-secret-1234"


@pytest.fixture
def setup(store_root, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "secret.txt").write_text(OUTSIDE_TEXT)
    pq.write_table(pa.table({"secret": [OUTSIDE_TEXT]}), outside / "x.parquet")
    return open_store(store_root), outside


def _refused(store, sql, params=None, match=None) -> str:
    with pytest.raises(StoreError, match=match) as info:
        store.query(sql, params)
    message = str(info.value)
    assert OUTSIDE_TEXT not in message and "\n" not in message, message
    return message


def test_files_outside_the_store_cannot_be_read(setup):
    store, outside = setup
    for sql in [
        f"SELECT * FROM read_text('{outside / 'secret.txt'}')",
        "SELECT * FROM read_text('/etc/hostname')",
        f"SELECT * FROM read_parquet('{outside / 'x.parquet'}')",
        f"SELECT * FROM read_csv('{outside / 'secret.txt'}')",
        f"SELECT * FROM read_blob('{outside / 'secret.txt'}')",
        "SELECT * FROM glob('/etc/*')",
        f"SELECT * FROM read_text('{store.root / 'runs'}/../../elsewhere/secret.txt')",
        "SELECT * FROM read_parquet('https://example.com/x.parquet')",
    ]:
        _refused(store, sql, match="query failed")
    # The path can come as a parameter too: still refused.
    _refused(store, "SELECT * FROM read_text(?)", [str(outside / "secret.txt")])


def test_a_symlink_planted_in_a_run_does_not_lead_outside(setup):
    store, outside = setup
    link = store.root / "runs" / "good" / "notes.txt"
    link.symlink_to(outside / "secret.txt")
    _refused(store, f"SELECT * FROM read_text('{link}')", match="query failed")


def test_nothing_is_written_anywhere(setup):
    store, outside = setup
    inside = store.root / "runs" / "good" / "copied.csv"
    cases = {
        f"COPY (SELECT 1) TO '{outside / 'out.csv'}'": "not COPY",
        f"COPY (SELECT 1) TO '{inside}'": "not COPY",  # the one folder it may read
        f"COPY samples TO '{outside / 'all.parquet'}' (FORMAT parquet)": "not COPY",
        f"ATTACH '{outside / 'db.duckdb'}' AS other": "not ATTACH",
        "INSTALL httpfs": "not LOAD",
        "LOAD httpfs": "not LOAD",
        "SET enable_external_access = true": "not SET",
        "RESET lock_configuration": "not SET",
        "PRAGMA version": "not PRAGMA",
        "CALL pragma_version()": "not CALL",
        "CREATE TABLE t AS SELECT 1": "not CREATE",
        "CREATE VIEW v AS SELECT 1": "not CREATE",
        "DROP TABLE runs": "not DROP",
        "INSERT INTO runs (run_id) VALUES ('planted')": "not INSERT",
        "DELETE FROM runs": "not DELETE",
        f"EXPORT DATABASE '{outside / 'export'}'": "not EXPORT",
        "EXPLAIN ANALYZE SELECT 1": "not EXPLAIN",
        "SELECT 1; SELECT 2": "exactly one SQL statement, not 2",
        "SELECT 1; DROP TABLE runs": "exactly one SQL statement, not 2",
        "": "exactly one SQL statement, not 0",
        "-- just a comment": "exactly one SQL statement, not 0",
        "SELEC 1": "query failed",
    }
    for sql, match in cases.items():
        _refused(store, sql, match=match)
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt", "x.parquet"]
    assert not inside.exists()
    assert store.query("SELECT run_id FROM runs").frame["run_id"].tolist() == ["good"]
    # SELECTs that would write or reconfigure from inside are refused by DuckDB itself.
    _refused(store, f"SELECT * FROM query('COPY (SELECT 1) TO ''{inside}''')")
    assert not inside.exists()


def test_the_configuration_stays_locked(setup):
    store, outside = setup
    _refused(store, "SET enable_external_access = true")
    cursor = store._cursor()  # even code of ours holding a cursor cannot reopen it
    with pytest.raises(Exception, match="locked"):
        cursor.execute("SET enable_external_access = true")
    cursor.close()
    _refused(store, f"SELECT * FROM read_text('{outside / 'secret.txt'}')", match="query failed")


def test_python_variables_are_not_tables(setup):
    store, _ = setup
    secret_frame = pd.DataFrame({"secret": [OUTSIDE_TEXT]})
    _refused(store, "SELECT * FROM secret_frame", match="query failed")
    assert len(secret_frame) == 1


def test_views_parameters_and_row_cap_still_work(setup):
    store, _ = setup
    frame = store.query(
        "SELECT s.label, count(*) AS n FROM samples s JOIN runs r USING (run_id) "
        "WHERE r.run_id = ? GROUP BY 1 ORDER BY 1",
        ["good"],
    ).frame
    assert frame.to_dict("records") == [{"label": "a", "n": 4}, {"label": "b", "n": 4}]
    named = store.query(
        "SELECT count(*) AS n FROM vectors WHERE run_id = $run AND layer = $layer",
        {"run": "good", "layer": 1},
    )
    assert named.frame["n"][0] > 0
    hostile = "good' OR '1'='1"
    assert store.query("SELECT * FROM runs WHERE run_id = ?", [hostile]).frame.empty
    capped = store.query("SELECT * FROM range(50)", max_rows=7)
    assert len(capped.frame) == 7 and capped.truncated and capped.max_rows == 7
    whole = store.query("SELECT * FROM range(7)", max_rows=7)
    assert len(whole.frame) == 7 and not whole.truncated
    assert store.query("FROM samples LIMIT 1").frame.shape[0] == 1  # DuckDB's FROM-first SELECT
    assert not store.query("DESCRIBE vectors").frame.empty
    assert store.query("WITH t AS (SELECT 1 AS x) SELECT x FROM t").frame["x"][0] == 1


@pytest.mark.parametrize("max_rows", [-1, 1.5, "10", True, 10**9])
def test_bad_row_caps_are_refused(setup, max_rows):
    store, _ = setup
    with pytest.raises(StoreError, match="max_rows"):
        store.query("SELECT 1", max_rows=max_rows)


def test_a_slow_query_is_stopped_by_its_time_limit(setup):
    store, _ = setup
    started = time.monotonic()
    with pytest.raises(StoreError, match=r"query stopped: it ran longer than 0.3 s"):
        store.query("SELECT count(*) FROM range(1000000000000)", timeout_s=0.3)
    assert time.monotonic() - started < 10
    assert store.query("SELECT 1 AS x", timeout_s=5).frame["x"][0] == 1  # the store still works
    with pytest.raises(StoreError, match="timeout"):
        store.query("SELECT 1", timeout_s=0)


def test_summary_views_give_the_label_means_and_typical_norms(setup, damage):
    store, _ = setup
    damage.copy("broken")  # a run whose summaries are damaged is left out of the views
    (damage.folder("broken") / "summaries" / "summary.json").write_text("{")
    frame = store.query(
        "SELECT layer, label, n, mean FROM label_means WHERE run_id = $run AND hook = "
        "'resid_post' AND position = 'mean' ORDER BY layer, label",
        {"run": "good"},
    ).frame
    sums = store.label_sums("good", "resid_post", "mean")
    assert frame["n"].tolist() == sums.counts.ravel().tolist()
    np.testing.assert_allclose(np.stack(frame["mean"]), sums.means.reshape(-1, sums.means.shape[2]))
    norms = store.query(
        "SELECT typical_norm, l2(list_transform(range(3), lambda i: 2.0)) AS l2 FROM site_norms "
        "WHERE run_id = 'good' AND hook = 'resid_post' AND position = 'mean' ORDER BY layer"
    ).frame
    np.testing.assert_allclose(norms["typical_norm"], sums.typical_norms)
    assert norms["l2"].round(6).eq(round(12**0.5, 6)).all()
    runs = store.query("SELECT DISTINCT run_id FROM label_means ORDER BY 1").frame
    assert runs["run_id"].tolist() == ["good"]
    assert store.query("SELECT count(*) AS n FROM runs").frame["n"][0] == 2


PUBLIC_REFUSED = [
    ("SELECT * FROM duckdb_settings()", "table functions such as duckdb_settings()"),
    ("SELECT value FROM duckdb_settings() WHERE name = 'allowed_directories'", "duckdb_settings"),
    ("SELECT current_setting('allowed_directories')", "current_setting()"),
    ("SELECT string_split(current_setting('allowed_directories')[1], '/')", "current_setting"),
    ("SELECT getenv('HOME')", "getenv()"),
    ("SELECT * FROM read_parquet('runs/good/vectors/part-00000.parquet', filename=true)",
     "read_parquet()"),
    ("SELECT * FROM information_schema.tables", "'information_schema.tables' is not a view"),
    ("SELECT * FROM memory.main.runs", "is not a view"),
    ("SELECT sql FROM duckdb_views()", "duckdb_views()"),
    ("WITH v AS (SELECT * FROM duckdb_databases()) SELECT * FROM v", "duckdb_databases()"),
    ("SELECT (SELECT path FROM duckdb_databases() LIMIT 1)", "duckdb_databases()"),
    ("DESCRIBE SELECT * FROM glob('/*')", "glob()"),
    ("SHOW TABLES", "SHOW cannot be used"),
    ("SELECT * FROM pragma_database_list", "is not a view"),
    ("SELECT * FROM query('SELECT 1')", "query()"),
]  # fmt: skip


@pytest.mark.parametrize(("sql", "reason"), PUBLIC_REFUSED)
def test_public_queries_read_only_the_views_and_reveal_no_server_path(setup, sql, reason):
    store, _ = setup
    with pytest.raises(StoreError, match=re.escape(reason)) as info:
        store.query(sql, public=True)
    assert str(store.root) not in str(info.value) and "/" not in str(info.value).split(":")[0]


def test_public_queries_keep_views_ctes_describe_and_parameters(setup):
    store, _ = setup
    query = "SELECT label, count(*) AS n FROM samples WHERE run_id = $run GROUP BY label ORDER BY 1"
    assert store.query(query, {"run": "good"}, public=True).frame["n"].tolist() == [4, 4]
    assert not store.query("DESCRIBE label_means", public=True).frame.empty
    cte = "WITH t AS (SELECT run_id FROM runs) SELECT count(*) AS n FROM t "
    cte += "JOIN samples USING (run_id)"
    assert store.query(cte, public=True).frame["n"][0] == 8
    frame = store.query("SELECT * FROM runs", public=True).frame
    assert not frame.astype(str).apply(lambda c: c.str.contains(str(store.root))).any().any()


def test_runs_view_names_a_model_folder_by_its_name(store_root):
    write_run(store_root, "local", label_rows(["a", "b"], 2), model="/srv/models/secret-model")
    store = open_store(store_root)
    frame = store.query("SELECT model, replace(model, '/', '|') AS m FROM runs WHERE run_id = "
                        "'local'", public=True).frame  # fmt: skip
    assert frame.to_dict("records") == [{"model": "secret-model", "m": "secret-model"}]


def test_max_values_counts_every_element_of_a_vector(setup):
    store, _ = setup
    cut = store.query("SELECT sample_idx, vector FROM vectors", max_values=20)
    assert len(cut.frame) == 2 and cut.truncated  # 1 + 8 values a row: 18 fit, 27 do not
    nested = store.query("SELECT [vector, vector] AS v FROM vectors", max_values=20)
    assert len(nested.frame) == 1 and nested.truncated
    whole = store.query("SELECT range AS i FROM range(5)", max_values=5)
    assert len(whole.frame) == 5 and not whole.truncated
    capped = store.query("SELECT range AS i FROM range(50)", max_rows=7, max_values=1000)
    assert len(capped.frame) == 7 and capped.truncated
    with pytest.raises(StoreError, match="max_values"):
        store.query("SELECT 1", max_values=0)
    with pytest.raises(StoreError, match="query stopped"):
        store.query("SELECT count(*) FROM range(1000000000000)", timeout_s=0.3, max_values=10)
