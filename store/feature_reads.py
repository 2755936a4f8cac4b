"""Read feature runs: listing (strict), per-label summaries, one feature, one sample, JSON export.

`FeatureShelf` is `Store.features`. Listing reads every `features/<id>/manifest.json` strictly
(`store.catalog`) and checks each run's Parquet footers against what the reads need; a feature
run that fails is listed by `damaged()` with a one-line reason and left out of `list()`, never
fatal to the others. Reads run parameterised DuckDB queries on a connection confined to the
store's `features/` folder, cap their rows, and raise `StoreError` naming the feature run.

A *scope* says which positions a summary counts: `last_prompt` (the last prompt token of each
record, the only scope of a `last_prompt` run), `prompt`, `response` or `all` tokens (these need
an `all` run). Means and firing frequencies are over the positions of the scope; a feature that
was not among a position's stored top K counts as 0 there, so for rare features of a wide SAE
the figures are lower bounds.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from store import layout
from store.atomic import read_regular
from store.errors import StoreError, one_line
from store.features import FEATURES, OK, SAMPLE_SCHEMA, TOPK_SCHEMA, FeatureManifest
from store.json_records import MAX_SOURCE_BYTES, RecordsError, read_records, with_features
from store.shelf import Shelf
from store.sql import ConfinedConnection, clean_message
from store.writer import TOKEN_SCHEMA

SCOPES = ("last_prompt", "prompt", "response", "all")
ORDERS = ("mean_activation", "specificity", "frequency")
MAX_TOP = 500
MAX_SAMPLES_SHOWN = 200
_READ_ERRORS = (duckdb.Error, pa.ArrowException, OSError, ValueError, KeyError)
# Which stored positions a scope counts; `s` is the samples table, `t` the top-K rows.
_SCOPE_SQL = (
    "($scope = 'all' OR ($scope = 'last_prompt' AND t.token_idx = s.answer_start - 1)"
    " OR ($scope = 'prompt' AND t.token_idx < s.answer_start)"
    " OR ($scope = 'response' AND t.token_idx >= s.answer_start))"
)
_ORDER_SQL = {
    "mean_activation": "mean_activation",
    "frequency": "frequency",
    "specificity": "mean_activation - coalesce(mean_elsewhere, 0)",
}


def _schema_problem(schema: pa.Schema, wanted: pa.Schema) -> str | None:
    for spec in wanted:
        if spec.name not in schema.names:
            return f"has no column {spec.name!r}"
        found = schema.field(spec.name).type
        if found != spec.type and not (
            pa.types.is_list(spec.type) and pa.types.is_large_list(found)
        ):
            return f"has column {spec.name!r} of type {found}, not {spec.type}"
    return None


class FeatureShelf(Shelf):
    """The feature runs of one store directory."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, FEATURES)
        self._sql = ConfinedConnection(self.root, "features")

    def close(self) -> None:
        self._sql.close()

    def _parts(self, manifest: FeatureManifest) -> dict[str, list[str]]:
        folder = layout.feature_run_dir(self.root, manifest.feature_run_id)
        return {
            "samples": [str(layout.samples_path(folder))],
            "topk": [str(p) for p in layout.part_files(layout.topk_dir(folder))],
            "tokens": [str(p) for p in layout.part_files(layout.tokens_dir(folder))],
        }

    def files(self, manifest: FeatureManifest) -> list[Path]:
        return [Path(path) for paths in self._parts(manifest).values() for path in paths]

    def problem(self, manifest: FeatureManifest) -> str | None:
        files = self._parts(manifest)
        folder = layout.feature_run_dir(self.root, manifest.feature_run_id)
        if not files["topk"]:
            return "it has no topk part files"
        wanted = {"samples": SAMPLE_SCHEMA, "topk": TOPK_SCHEMA, "tokens": TOKEN_SCHEMA}
        for kind, paths in files.items():
            for path in paths:
                rel = Path(path).relative_to(folder).as_posix()
                try:
                    if not stat.S_ISREG(os.lstat(path).st_mode):
                        return f"file {rel} is not a regular file"
                    schema = pq.read_schema(path)
                except FileNotFoundError:
                    return f"file {rel} is missing"
                except (OSError, pa.ArrowException, ValueError):
                    return f"file {rel} is not Parquet (or is cut short)"
                problem = _schema_problem(schema, wanted[kind])
                if problem:
                    return f"file {rel} {problem}"
        return None

    def manifest(self, name: str) -> FeatureManifest:
        """A healthy feature run by id or unambiguous prefix; StoreError otherwise."""
        return self.get(name)

    # -- queries ---------------------------------------------------------------------------
    def _query(self, manifest: FeatureManifest, what: str, sql: str, **params: Any):
        """Run one internal query over a feature run's files; failures name the run."""
        given = {**self._parts(manifest), **params}
        cursor = self._sql.cursor()
        try:  # DuckDB refuses named parameters that the statement does not use
            relation = cursor.sql(sql, params={k: v for k, v in given.items() if f"${k}" in sql})
            return relation.df()
        except _READ_ERRORS as exc:
            message = clean_message(exc, self.root).replace("runs/", "")
            raise StoreError(
                f"feature run {manifest.feature_run_id!r}: cannot read {what} ({message})"
            ) from None
        finally:
            cursor.close()

    def _check_scope(self, manifest: FeatureManifest, scope: str) -> None:
        if scope not in SCOPES:
            raise StoreError(f"unknown scope {scope!r:.40}; choose from {', '.join(SCOPES)}")
        if manifest.positions == "last_prompt" and scope != "last_prompt":
            raise StoreError(
                f"feature run {manifest.feature_run_id!r} kept only the last prompt token; "
                f"scope {scope!r} needs an `--positions all` run"
            )

    def samples(self, name: str) -> pd.DataFrame:
        """The records of a feature run, ordered by sample_idx."""
        manifest = self.manifest(name)
        frame = self._query(
            manifest, "samples", "SELECT * FROM read_parquet($samples) ORDER BY sample_idx"
        )
        if len(frame) != manifest.n_records:
            raise StoreError(
                f"feature run {manifest.feature_run_id!r}: samples.parquet has {len(frame)} "
                f"rows; the manifest says {manifest.n_records} records"
            )
        return frame

    def label_features(
        self, name: str, scope: str = "last_prompt", top: int = 20, order: str = "mean_activation"
    ) -> pd.DataFrame:
        """The top features of each label: label, feature, mean_activation, frequency (share of
        the label's positions where it fired), mean_elsewhere (its mean over the other labels),
        positions (of the label). `order` ranks them: mean_activation, frequency or
        specificity (mean activation minus mean elsewhere)."""
        manifest = self.manifest(name)
        self._check_scope(manifest, scope)
        if order not in ORDERS:
            raise StoreError(f"unknown order {order!r:.40}; choose from {', '.join(ORDERS)}")
        if type(top) is not int or not 1 <= top <= MAX_TOP:
            raise StoreError(f"top {top!r:.40} must be a whole number in 1..{MAX_TOP}")
        rank = _ORDER_SQL[order]  # one of three fixed expressions, never user text
        sql = f"""
            WITH s AS (SELECT sample_idx, label, answer_start FROM read_parquet($samples)
                       WHERE status = '{OK}'),
            p AS (SELECT s.label, t.feature_ids, t.activations
                  FROM read_parquet($topk) t JOIN s USING (sample_idx) WHERE {_SCOPE_SQL}),
            n AS (SELECT label, count(*) AS positions FROM p GROUP BY label),
            f AS (SELECT label, unnest(feature_ids) AS feature,
                         unnest(activations) AS activation FROM p),
            g AS (SELECT label, feature, sum(activation) AS total, count(*) AS fired FROM f
                  WHERE isfinite(activation) AND activation > 0 GROUP BY label, feature),
            a AS (SELECT feature, sum(total) AS total FROM g GROUP BY feature),
            m AS (SELECT g.label, g.feature, g.total / n.positions AS mean_activation,
                         g.fired / n.positions AS frequency,
                         (a.total - g.total) / nullif((SELECT sum(positions) FROM n)
                                                      - n.positions, 0) AS mean_elsewhere,
                         n.positions
                  FROM g JOIN n USING (label) JOIN a USING (feature))
            SELECT * FROM m
            QUALIFY row_number() OVER (PARTITION BY label ORDER BY {rank} DESC, feature) <= $top
            ORDER BY label, {rank} DESC, feature
        """
        return self._query(manifest, "features", sql, scope=scope, top=top)

    def feature_labels(self, name: str, feature: int, scope: str = "last_prompt") -> pd.DataFrame:
        """One feature across labels: label, positions, fired, frequency, mean_activation."""
        manifest = self.manifest(name)
        self._check_scope(manifest, scope)
        self._check_feature(manifest, feature)
        sql = f"""
            WITH s AS (SELECT sample_idx, label, answer_start FROM read_parquet($samples)
                       WHERE status = '{OK}'),
            p AS (SELECT s.label,
                         coalesce(list_extract(t.activations,
                                  list_position(t.feature_ids, $feature)), 0) AS activation
                  FROM read_parquet($topk) t JOIN s USING (sample_idx) WHERE {_SCOPE_SQL})
            SELECT label, count(*) AS positions, count(*) FILTER (activation > 0) AS fired,
                   count(*) FILTER (activation > 0) / count(*) AS frequency,
                   sum(activation) FILTER (isfinite(activation)) / count(*) AS mean_activation
            FROM p GROUP BY label ORDER BY label
        """
        return self._query(manifest, "features", sql, scope=scope, feature=feature)

    def feature_samples(
        self, name: str, feature: int, scope: str = "last_prompt", n: int = 12
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The records where a feature fires most: (samples: sample_idx, id, label, location,
        peak, firing, ordered by peak; tokens: sample_idx, token_idx, token, activation of the
        feature at every token of those records (0 where it was not among the top K))."""
        manifest = self.manifest(name)
        self._check_scope(manifest, scope)
        self._check_feature(manifest, feature)
        if type(n) is not int or not 1 <= n <= MAX_SAMPLES_SHOWN:
            raise StoreError(f"n {n!r:.40} must be a whole number in 1..{MAX_SAMPLES_SHOWN}")
        best = self._query(manifest, "features", f"""
            WITH s AS (SELECT sample_idx, id, label, location, answer_start
                       FROM read_parquet($samples) WHERE status = '{OK}'),
            hits AS (SELECT t.sample_idx, list_extract(t.activations,
                            list_position(t.feature_ids, $feature)) AS activation
                     FROM read_parquet($topk) t JOIN s USING (sample_idx)
                     WHERE list_contains(t.feature_ids, $feature) AND {_SCOPE_SQL})
            SELECT sample_idx, s.id, s.label, s.location, s.answer_start,
                   max(activation) AS peak, count(*) AS firing
            FROM hits JOIN s USING (sample_idx)
            WHERE isfinite(activation)
            GROUP BY ALL ORDER BY peak DESC, sample_idx LIMIT $n
        """, scope=scope, feature=feature, n=n)  # fmt: skip
        chosen = [int(i) for i in best["sample_idx"]]
        tokens = self._query(manifest, "tokens", """
            WITH k AS (SELECT sample_idx, token_idx, coalesce(list_extract(activations,
                              list_position(feature_ids, $feature)), 0) AS activation
                       FROM read_parquet($topk) WHERE list_contains($chosen, sample_idx))
            SELECT w.sample_idx, w.token_idx, w.token, coalesce(k.activation, 0) AS activation
            FROM read_parquet($tokens) w LEFT JOIN k USING (sample_idx, token_idx)
            WHERE list_contains($chosen, w.sample_idx)
            ORDER BY w.sample_idx, w.token_idx
        """, feature=feature, chosen=chosen)  # fmt: skip
        return best, tokens

    def sample_positions(self, name: str, sample_idx: int) -> pd.DataFrame:
        """One record position by position: token_idx, token, n_active, feature_ids,
        activations (empty where the run kept no features: `last_prompt` runs)."""
        manifest = self.manifest(name)
        if type(sample_idx) is not int or not 0 <= sample_idx < manifest.n_records:
            raise StoreError(
                f"sample {sample_idx!r:.40} is not a record of feature run "
                f"{manifest.feature_run_id!r} (0..{manifest.n_records - 1})"
            )
        return self._query(manifest, "positions", """
            WITH k AS (SELECT * FROM read_parquet($topk) WHERE sample_idx = $sample)
            SELECT w.token_idx, w.token, k.n_active, k.feature_ids, k.activations
            FROM read_parquet($tokens) w LEFT JOIN k USING (sample_idx, token_idx)
            WHERE w.sample_idx = $sample ORDER BY w.token_idx
        """, sample=sample_idx)  # fmt: skip

    @staticmethod
    def _check_feature(manifest: FeatureManifest, feature: object) -> None:
        if type(feature) is not int or not 0 <= feature < manifest.d_sae:
            raise StoreError(
                f"feature {feature!r:.40} is not a feature of this SAE (0..{manifest.d_sae - 1})"
            )

    # -- JSON export -----------------------------------------------------------------------
    def export_json(self, name: str) -> dict[str, Any]:
        """The dataset file as given, each record gaining `sae_activations.layer_L` and the
        document `sae_extraction_metadata.layer_L` (see store.json_records.with_features)."""
        manifest = self.manifest(name)
        folder = layout.feature_run_dir(self.root, manifest.feature_run_id)
        path = layout.source_path(folder, manifest.source_suffix)
        try:
            raw = read_regular(path, MAX_SOURCE_BYTES)
            document, records = read_records(raw, manifest.source_suffix, path.name)
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else one_line(exc)
            raise StoreError(
                f"feature run {manifest.feature_run_id!r}: cannot read its source file ({reason})"
            ) from None
        samples = self.samples(name)
        if len(records) != len(samples):
            raise StoreError(
                f"feature run {manifest.feature_run_id!r}: its source file has {len(records)} "
                f"records, its samples {len(samples)}"
            )
        rows = self._query(manifest, "features", """
            SELECT sample_idx, token_idx, n_active, feature_ids, activations
            FROM read_parquet($topk) ORDER BY sample_idx, token_idx
        """)  # fmt: skip
        layer_key = f"layer_{manifest.layer}"
        features = {}
        by_sample = dict(iter(rows.groupby("sample_idx"))) if len(rows) else {}
        for sample in samples.itertuples(index=False):
            entry: dict[str, Any] = {
                "activations": _activations(manifest, sample, by_sample.get(sample.sample_idx)),
                "answer_start_position": None if sample.status != OK else int(sample.answer_start),
                "total_tokens": None if sample.status != OK else int(sample.total_tokens),
                "status": sample.status,
            }
            features[sample.location] = {layer_key: entry}
        metadata = {layer_key: _metadata(manifest)}
        try:
            return with_features(document, records, features, metadata, manifest.source_suffix)
        except (RecordsError, KeyError, IndexError, TypeError) as exc:
            raise StoreError(
                f"cannot export feature run {manifest.feature_run_id!r}: {exc}"
            ) from None


def _top_features(ids, values) -> list[dict[str, Any]]:
    return [
        {"id": int(i), "activation": round(float(v), 6)}
        for i, v in zip(np.asarray(ids), np.asarray(values), strict=True)
    ]


def _activations(manifest: FeatureManifest, sample, rows: pd.DataFrame | None) -> dict:
    """{last_token: {...}} for a last_prompt run, {token_0: ..., token_1: ...} for an all run."""
    if rows is None or sample.status != OK:
        return {}
    out = {}
    for row in rows.itertuples(index=False):
        key = "last_token" if manifest.positions == "last_prompt" else f"token_{row.token_idx}"
        out[key] = {
            "top_k_features": _top_features(row.feature_ids, row.activations),
            "num_active_features": int(row.n_active),
        }
    return out


def _metadata(manifest: FeatureManifest) -> dict[str, Any]:
    from store.snapshot import public_path  # an export is shared: no server paths in it

    return {
        "sae_id": manifest.sae_id,
        "sae_release": manifest.sae if manifest.sae_source == "release" else None,
        "hook_name": manifest.hook_name,
        "top_k_features": manifest.top_k,
        "positions": manifest.positions,
        "provenance": {
            "tool": "activation-explorer",
            "feature_run_id": manifest.feature_run_id,
            "sae_source": manifest.sae_source,
            "sae": manifest.sae if manifest.sae_source != "folder" else manifest.sae_id,
            "sae_sha256": manifest.sae_sha256,
            "d_sae": manifest.d_sae,
            "model": public_path(manifest.model),
            "weights_sha256": manifest.weights_sha256,
            "backend": manifest.backend,
            "weight_processing": manifest.weight_processing,
            "dataset": manifest.dataset_name,
            "dataset_sha256": manifest.dataset_sha256,
            "chat_template": manifest.chat_template,
            "max_length": manifest.max_length,
            "code_version": manifest.code_version,
            "created_at": manifest.created_at,
        },
    }
