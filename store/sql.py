"""The confined DuckDB connection: views over a store's healthy runs and one-SELECT queries.

The connection is in-memory (a DuckDB database file would lock readers out while a run writes)
and can read files only under the store's `runs/` folder: `allowed_directories` names it, external
access is off and the configuration is locked, so not even code holding a cursor can reopen it;
temp spill, replacement scans of Python variables and extension autoloading are off too.
`select` accepts a single SELECT only, so `COPY`, `ATTACH`, `INSTALL`, `SET`, `PRAGMA` and DDL
are refused before they run; rows are capped and a timeout interrupts the cursor.

The views `runs` (a table of the manifests), `samples` and `vectors`, and over the runs' summaries
`label_means` and `site_norms`, are built from relations, never from pasted SQL text, over the
files `store.files` and `store.summaries` checked; the run id of each row is taken from its folder,
not from what a copied file says. A macro `l2(v)` gives a vector's L2 norm.

`public=True` is for SQL typed by a visitor of a hosted page: besides the above, the query may
read only those views (and its own CTEs), may call no table function (`read_parquet`, `glob`,
`duckdb_settings()`, ...) and none of the functions that reveal the server (`current_setting`,
`getenv`, `duckdb_*`, `pragma_*`), judged on DuckDB's own parse tree (`json_serialize_sql`), so
no absolute path the views are built on can come back. `max_values` caps what a result holds,
counting every element of a list cell (a vector of 576 floats counts 576): rows past it are cut,
as past `max_rows`. The caller decides when to rebuild (a key that
changes with the set of healthy runs): committed files are immutable, so views go stale only when
that set changes.

Thread safety: one connection is shared by threads; every statement runs on its own `cursor()`,
as DuckDB requires, and the views are rebuilt under a lock. `close()` drops the connection (the
next cursor opens a new one); every open connection is also closed at interpreter exit, so no
DuckDB object is alive when its bindings are torn down (which printed nanobind "leaked ..."
lines at exit whenever a daemon thread, such as a server's, was still running).
"""

from __future__ import annotations

import atexit
import json
import os
import re
import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from store import layout
from store.catalog import DamagedRun
from store.errors import StoreError, one_line
from store.manifest import RunManifest

DEFAULT_MAX_ROWS = 10_000
MAX_QUERY_ROWS = 1_000_000
PUBLIC_VIEWS = ("runs", "samples", "vectors", "label_means", "site_norms")
# Functions that tell about the server rather than the data (settings hold absolute paths).
_SERVER_FUNCTIONS = re.compile(
    r"(duckdb_|pragma_|pg_).*|current_setting|getenv|getvariable|current_database|"
    r"current_catalog|current_schemas?|which_secret|version|platform|tf|icu_calendar_names"
)
_FETCH_BATCH = 256  # rows fetched at a time while counting values against max_values
MAX_RESULT_BYTES = 64 * 1024 * 1024  # with max_values: a result is cut past this many bytes too


@dataclass(frozen=True)
class QueryResult:
    """Rows of a capped query. `truncated` is True when more than `max_rows` rows matched.

    `skipped_runs` are healthy-looking runs left out of the views because a file of theirs
    cannot be read (so one damaged file does not break every query).
    """

    frame: pd.DataFrame
    truncated: bool
    max_rows: int
    skipped_runs: tuple[DamagedRun, ...] = ()


# Every connection that was opened, so interpreter exit can drop them all (see module doc).
_OPEN_CONNECTIONS: weakref.WeakSet[ConfinedConnection] = weakref.WeakSet()


@atexit.register
def _close_open_connections() -> None:
    for connection in list(_OPEN_CONNECTIONS):
        connection.close()


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def clean_message(exc: BaseException, root: Path) -> str:
    """An error message on one line, with the store's absolute paths made relative."""
    text = str(exc).split("\n")[0]
    runs = layout.runs_dir(root)
    for prefix in {str(runs.resolve()), str(runs.absolute()), str(runs)}:
        text = text.replace(prefix + os.sep, "runs/")
    for prefix in {str(root.resolve()), str(root.absolute()), str(root)}:
        text = text.replace(prefix + os.sep, "")
    return one_line(text)


def check_query(
    sql: object, max_rows: object, timeout_s: object, max_values: object = None
) -> None:
    """Refuse (StoreError) arguments of `select` that are not text, a row cap, a timeout or a
    value cap."""
    if not isinstance(sql, str):
        raise StoreError("query must be text")
    if type(max_rows) is not int or not 0 <= max_rows <= MAX_QUERY_ROWS:
        raise StoreError(f"max_rows {max_rows!r:.40} must be a whole number in 0..{MAX_QUERY_ROWS}")
    if timeout_s is not None and not (isinstance(timeout_s, int | float) and timeout_s > 0):
        raise StoreError(f"timeout {timeout_s!r:.40} must be a positive number of seconds")
    if max_values is not None and (type(max_values) is not int or max_values < 1):
        raise StoreError(f"max_values {max_values!r:.40} must be a whole number of at least 1")


def _parse_tree(cursor: duckdb.DuckDBPyConnection, sql: str) -> object:
    try:
        text = cursor.execute("SELECT json_serialize_sql($q)", {"q": sql}).fetchall()[0][0]
        tree = json.loads(text)
    except (duckdb.Error, ValueError, RecursionError, TypeError):
        raise StoreError("this query cannot be checked, so it cannot run here") from None
    if not isinstance(tree, dict) or tree.get("error"):
        raise StoreError("only plain SELECT queries can run here")
    return tree


def check_public(cursor: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Refuse (StoreError) a SELECT that reads anything but the public views or calls a table
    function or a function that reveals the server (see the module doc)."""
    tree = _parse_tree(cursor, sql)
    tables, functions, ctes = [], [], set()
    stack = [tree]
    while stack:  # iterative: a deeply nested query must not exhaust Python's stack
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        kind = node.get("type")
        if kind == "TABLE_FUNCTION":
            name = (node.get("function") or {}).get("function_name", "?")
            raise StoreError(f"table functions such as {name}() cannot be used here; "
                             f"read the views {', '.join(PUBLIC_VIEWS)}")  # fmt: skip
        if kind == "SHOW_REF" and node.get("table_name"):
            raise StoreError("SHOW cannot be used here; the views are listed on the page")
        if kind == "BASE_TABLE":
            tables.append(node)
        if node.get("class") == "FUNCTION":
            functions.append(str(node.get("function_name", "")))
        if isinstance(node.get("cte_map"), dict):
            ctes.update(str(e.get("key", "")).lower() for e in node["cte_map"].get("map", []))
        stack.extend(node.values())
    for table in tables:
        name = str(table.get("table_name", ""))
        qualified = table.get("schema_name") or table.get("catalog_name")
        if qualified or (name.lower() not in PUBLIC_VIEWS and name.lower() not in ctes):
            shown = ".".join(
                str(p) for p in (table.get("qualified_name") or {}).get("path", [name])
            )
            raise StoreError(f"{shown!r:.80} is not a view here; use {', '.join(PUBLIC_VIEWS)}")
    for name in functions:
        if _SERVER_FUNCTIONS.fullmatch(name.lower()):
            raise StoreError(f"the function {name}() cannot be used here")


def _value_count(batch: pa.RecordBatch) -> np.ndarray:
    """Values each row holds: 1 per scalar cell, a list cell's length (nested lists counted
    by their leaves). [rows] int64"""
    counts = np.zeros(batch.num_rows, np.int64)
    for column in batch.columns:
        counts += _cell_sizes(column)
    return counts


def _cell_sizes(column: pa.Array) -> np.ndarray:
    kind = column.type
    listed = (
        pa.types.is_list,
        pa.types.is_large_list,
        pa.types.is_fixed_size_list,
        pa.types.is_map,
    )
    if any(test(kind) for test in listed):
        lengths = pc.list_value_length(column).fill_null(0).to_numpy(zero_copy_only=False)
        inner = _cell_sizes(pc.list_flatten(column))
        if len(inner) and inner.max() > 1:  # a list of lists: count the leaves
            owners = np.repeat(np.arange(len(column)), lengths.astype(np.int64))
            return np.bincount(owners, weights=inner, minlength=len(column)).astype(np.int64)
        return lengths.astype(np.int64)
    if pa.types.is_struct(kind):
        return sum((_cell_sizes(column.field(i)) for i in range(kind.num_fields)),
                   np.zeros(len(column), np.int64))  # fmt: skip
    return np.ones(len(column), np.int64)


def _runs_table(runs: Sequence[RunManifest]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "run_id": m.run_id,
                "name": m.name,
                "model": layout.public_path(m.model),  # a local model folder by its name
                "architecture": m.architecture,
                "backend": m.backend,
                "dataset": m.dataset_name,
                "n_samples": m.n_samples,
                "n_layers": m.n_layers,
                "d_model": m.d_model,
                "dtype": m.dtype,
                "created_at": m.created_at,
            }
            for m in runs
        ],
        columns=[
            "run_id", "name", "model", "architecture", "backend", "dataset", "n_samples",
            "n_layers", "d_model", "dtype", "created_at",
        ],
    )  # fmt: skip


class ConfinedConnection:
    """A lazily opened in-memory DuckDB connection that reads only under `root/runs/` (or
    another folder of the store: `folder`, e.g. `features` for the SAE feature runs)."""

    def __init__(self, root: Path, folder: str = "runs") -> None:
        self.root = Path(root)
        self.folder = folder
        self._lock = threading.Lock()  # the connection and the views
        self._con: duckdb.DuckDBPyConnection | None = None
        self._view_key: tuple | None = None
        self._skipped: tuple[DamagedRun, ...] = ()

    @property
    def is_open(self) -> bool:
        return self._con is not None

    def close(self) -> None:
        """Drop the DuckDB connection. The next `cursor()` opens a new one (with no views)."""
        with self._lock:
            con, self._con = self._con, None
            self._view_key = None
        if con is not None:
            con.close()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A new cursor of the shared connection (opened on first use); close it when done."""
        with self._lock:
            if self._con is None:
                self._con = self._connect()
                _OPEN_CONNECTIONS.add(self)
            return self._con.cursor()

    def _connect(self) -> duckdb.DuckDBPyConnection:
        """An in-memory connection that can read files under `runs/` and nothing else."""
        config = {
            "temp_directory": "",  # no spill folder: it would be one more readable place
            "python_enable_replacements": False,  # SQL must not read the caller's variables
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
        }
        con = duckdb.connect(":memory:", config=config)
        try:
            runs = self.root / self.folder
            allowed = sorted({str(runs.resolve()) + os.sep, str(runs.absolute()) + os.sep})
            # SET takes no parameters; the paths are quoted as SQL string constants.
            con.execute(f"SET allowed_directories = [{', '.join(map(_sql_string, allowed))}]")
            con.execute("SET enable_external_access = false")
            con.execute("SET lock_configuration = true")
        except BaseException:
            con.close()
            raise
        return con

    def has_views(self, key: tuple) -> bool:
        """True if the views were built for `key` on the connection that is open now."""
        with self._lock:
            return self._view_key == key and self._con is not None

    def build_views(
        self,
        key: tuple,
        runs: Sequence[RunManifest],
        samples: Sequence[str],
        vectors: Sequence[str],
        skipped: Sequence[DamagedRun],
        label_sums: Sequence[str] = (),
    ) -> None:
        """(Re)create `runs`, `samples`, `vectors` over these runs' checked files, and
        `label_means`, `site_norms` over the summaries' `label_sums` files, for `key`.

        `skipped` are the runs left out because a file of theirs failed its check; every
        `select` until the next build reports them.
        """
        runs_table = _runs_table(runs)
        cursor = self.cursor()
        try:
            with self._lock:
                # A table, not a registered frame: registrations are private to one cursor.
                cursor.execute("DROP TABLE IF EXISTS runs")
                cursor.from_df(runs_table).create("runs")
                # Views over relations, not SQL text: the file list never gets pasted into a query.
                if samples:
                    # The run id comes from the folder, as for vectors: a copied folder's
                    # samples.parquet still names the run it was copied from.
                    table = cursor.read_parquet(list(samples), filename=True, union_by_name=True)
                    drop = "filename, run_id" if "run_id" in table.columns else "filename"
                    table.project(
                        f"string_split(filename, '/')[-2] AS run_id, * EXCLUDE ({drop})"
                    ).create_view("samples")
                else:
                    cursor.execute(
                        "CREATE OR REPLACE VIEW samples AS SELECT NULL::VARCHAR AS run_id, "
                        "NULL::INTEGER AS sample_idx, NULL::VARCHAR AS label LIMIT 0"
                    )
                if vectors:
                    parts = cursor.read_parquet(list(vectors), filename=True, union_by_name=True)
                    # The run id is the directory two levels above each part file.
                    parts.project(
                        "string_split(filename, '/')[-3] AS run_id, * EXCLUDE (filename)"
                    ).create_view("vectors")
                else:
                    cursor.execute(
                        "CREATE OR REPLACE VIEW vectors AS SELECT NULL::VARCHAR AS run_id, "
                        "NULL::VARCHAR AS hook, NULL::VARCHAR AS position, "
                        "NULL::SMALLINT AS layer, NULL::INTEGER AS sample_idx, "
                        "NULL::INTEGER AS token_idx, NULL::FLOAT[] AS vector LIMIT 0"
                    )
                self._summary_views(cursor, label_sums)
                cursor.execute("CREATE OR REPLACE MACRO l2(v) AS sqrt(list_inner_product(v, v))")
                self._view_key = key
                self._skipped = tuple(skipped)
        except duckdb.Error as exc:
            message = clean_message(exc, self.root)
            raise StoreError(f"cannot build the query views ({message})") from None
        finally:
            cursor.close()

    @staticmethod
    def _summary_views(cursor: duckdb.DuckDBPyConnection, files: Sequence[str]) -> None:
        if not files:
            cursor.execute(
                "CREATE OR REPLACE VIEW label_means AS SELECT NULL::VARCHAR AS run_id, "
                "NULL::VARCHAR AS hook, NULL::VARCHAR AS position, NULL::SMALLINT AS layer, "
                "NULL::VARCHAR AS label, NULL::BIGINT AS n, NULL::DOUBLE[] AS mean, "
                "NULL::DOUBLE AS mean_norm, NULL::DOUBLE AS rms_norm LIMIT 0"
            )
            cursor.execute(
                "CREATE OR REPLACE VIEW site_norms AS SELECT NULL::VARCHAR AS run_id, "
                "NULL::VARCHAR AS hook, NULL::VARCHAR AS position, NULL::SMALLINT AS layer, "
                "NULL::BIGINT AS n, NULL::DOUBLE AS typical_norm LIMIT 0"
            )
            return
        # The run id is the directory two levels above summaries/labels.parquet.
        sums = cursor.read_parquet(list(files), filename=True).project(
            "string_split(filename, '/')[-3] AS run_id, hook, position, layer, label, "
            "count, sum, sum_sq_norm, sum_norm"
        )
        sums.project(
            "run_id, hook, position, layer, label, count AS n, "
            "list_transform(sum, lambda x: x / count) AS mean, sum_norm / count AS mean_norm, "
            "sqrt(sum_sq_norm / count) AS rms_norm"
        ).create_view("label_means")
        sums.aggregate(
            "run_id, hook, position, layer, sum(count)::BIGINT AS n, "
            "sum(sum_norm) / sum(count) AS typical_norm",
            "run_id, hook, position, layer",
        ).create_view("site_norms")

    def select(
        self,
        sql: str,
        params: Sequence[Any] | Mapping[str, Any] | None = None,
        max_rows: int = DEFAULT_MAX_ROWS,
        timeout_s: float | None = None,
        public: bool = False,
        max_values: int | None = None,
    ) -> QueryResult:
        """Run one SELECT over the views (arguments as `check_query` accepts them; `public` and
        `max_values` as the module doc says)."""
        check_query(sql, max_rows, timeout_s, max_values)
        cursor = self.cursor()
        timer = None
        try:
            statements = cursor.extract_statements(sql)
            if len(statements) != 1:
                raise StoreError(f"give exactly one SQL statement, not {len(statements)}")
            statement = statements[0]
            if statement.type != duckdb.StatementType.SELECT:
                raise StoreError(f"only SELECT queries can run here, not {statement.type.name}")
            if public:
                check_public(cursor, statement.query)
            if timeout_s is not None:
                timer = threading.Timer(timeout_s, cursor.interrupt)
                timer.daemon = True
                timer.start()
            bound = dict(params) if isinstance(params, Mapping) else list(params or [])
            if max_values is None:
                cursor.execute(statement, bound)
                rows = cursor.fetchmany(max_rows + 1)
                columns = [c[0] for c in cursor.description or []]
                truncated = len(rows) > max_rows
                frame = pd.DataFrame(rows[:max_rows], columns=columns)
            else:
                frame, truncated = self._fetch_counted(cursor, statement, bound, max_rows,
                                                       max_values)  # fmt: skip
        except duckdb.InterruptException:
            raise StoreError(f"query stopped: it ran longer than {timeout_s:g} s") from None
        except duckdb.Error as exc:
            raise StoreError(f"query failed: {clean_message(exc, self.root)}") from None
        finally:
            if timer is not None:
                timer.cancel()
            cursor.close()
        return QueryResult(frame, truncated, max_rows, self._skipped)

    @staticmethod
    def _fetch_counted(cursor, statement, bound, max_rows: int,
                       max_values: int) -> tuple[pd.DataFrame, bool]:  # fmt: skip
        """Fetch a few rows at a time until `max_rows` rows, `max_values` values or
        MAX_RESULT_BYTES bytes: (frame, whether rows were cut)."""
        relation = cursor.sql(statement.query, params=bound or None)
        reader = relation.to_arrow_reader(_FETCH_BATCH)
        batches, rows, values, size, truncated = [], 0, 0, 0, False
        for batch in reader:
            counts = values + np.cumsum(_value_count(batch))
            fits = int(np.searchsorted(counts, max_values, side="right"))
            keep = min(batch.num_rows, max_rows - rows, fits)
            part = batch.slice(0, keep)
            if size + part.nbytes > MAX_RESULT_BYTES:
                part, keep = batch.slice(0, 0), 0
            batches.append(part)
            rows, size = rows + keep, size + part.nbytes
            values = int(counts[keep - 1]) if keep else values
            if keep < batch.num_rows:
                truncated = True
                break
        table = pa.Table.from_batches(batches, schema=reader.schema)
        return table.to_pandas(), truncated
