"""The confined DuckDB connection: views over a store's healthy runs and one-SELECT queries.

The connection is in-memory (a DuckDB database file would lock readers out while a run writes)
and can read files only under the store's `runs/` folder: `allowed_directories` names it, external
access is off and the configuration is locked, so not even code holding a cursor can reopen it;
temp spill, replacement scans of Python variables and extension autoloading are off too.
`select` accepts a single SELECT only, so `COPY`, `ATTACH`, `INSTALL`, `SET`, `PRAGMA` and DDL
are refused before they run; rows are capped and a timeout interrupts the cursor.

The views `runs` (a table of the manifests), `samples` and `vectors` are built from relations,
never from pasted SQL text, over the files `store.files` checked; the run id of each row is taken
from its folder, not from what a copied file says. The caller decides when to rebuild (a key that
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
import os
import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from store import layout
from store.catalog import DamagedRun
from store.errors import StoreError, one_line
from store.manifest import RunManifest

DEFAULT_MAX_ROWS = 10_000
MAX_QUERY_ROWS = 1_000_000


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


def check_query(sql: object, max_rows: object, timeout_s: object) -> None:
    """Refuse (StoreError) arguments of `select` that are not text, a row cap or a timeout."""
    if not isinstance(sql, str):
        raise StoreError("query must be text")
    if type(max_rows) is not int or not 0 <= max_rows <= MAX_QUERY_ROWS:
        raise StoreError(f"max_rows {max_rows!r:.40} must be a whole number in 0..{MAX_QUERY_ROWS}")
    if timeout_s is not None and not (isinstance(timeout_s, int | float) and timeout_s > 0):
        raise StoreError(f"timeout {timeout_s!r:.40} must be a positive number of seconds")


def _runs_table(runs: Sequence[RunManifest]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "run_id": m.run_id,
                "name": m.name,
                "model": m.model,
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
    ) -> None:
        """(Re)create `runs`, `samples`, `vectors` over these runs' checked files, for `key`.

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
                self._view_key = key
                self._skipped = tuple(skipped)
        except duckdb.Error as exc:
            message = clean_message(exc, self.root)
            raise StoreError(f"cannot build the query views ({message})") from None
        finally:
            cursor.close()

    def select(
        self,
        sql: str,
        params: Sequence[Any] | Mapping[str, Any] | None = None,
        max_rows: int = DEFAULT_MAX_ROWS,
        timeout_s: float | None = None,
    ) -> QueryResult:
        """Run one SELECT over the views (arguments as `check_query` accepts them)."""
        check_query(sql, max_rows, timeout_s)
        cursor = self.cursor()
        timer = None
        try:
            statements = cursor.extract_statements(sql)
            if len(statements) != 1:
                raise StoreError(f"give exactly one SQL statement, not {len(statements)}")
            statement = statements[0]
            if statement.type != duckdb.StatementType.SELECT:
                raise StoreError(f"only SELECT queries can run here, not {statement.type.name}")
            if timeout_s is not None:
                timer = threading.Timer(timeout_s, cursor.interrupt)
                timer.daemon = True
                timer.start()
            bound = dict(params) if isinstance(params, Mapping) else list(params or [])
            cursor.execute(statement, bound)
            rows = cursor.fetchmany(max_rows + 1)
            columns = [c[0] for c in cursor.description or []]
        except duckdb.InterruptException:
            raise StoreError(f"query stopped: it ran longer than {timeout_s:g} s") from None
        except duckdb.Error as exc:
            raise StoreError(f"query failed: {clean_message(exc, self.root)}") from None
        finally:
            if timer is not None:
                timer.cancel()
            cursor.close()
        truncated = len(rows) > max_rows
        frame = pd.DataFrame(rows[:max_rows], columns=columns)
        return QueryResult(frame, truncated, max_rows, self._skipped)
