"""Prompt + response records in a user's file, where each one sits, and the JSON that goes back.

Scripts that run SAEs over model answers keep their data as JSON, often nested: a list of
`results`, each with `variations`, each a record with `prompt` and `response`. `read_records`
finds every record of such a document and names where it sits (`results[0].variations[2]`), so
an export can write the same document back with each record gaining `sae_activations`
(`with_features`). JSON Lines and CSV files are read too (one record per line or row, named
`line N`), which makes every dataset of this project a source as well.

A record is an object with a `prompt` or a `response` (or, in JSONL/CSV, any row; a row with
only `text` is a prompt without response). Whether a record is usable is decided per record
(`Record.problem`): a bad record is reported with its reason and the others go on. What makes
the whole file unusable raises `RecordsError` naming the file and the place: bytes that are not
UTF-8, JSON that does not parse, more than MAX_RECORDS records, nesting deeper than MAX_DEPTH,
more than MAX_NODES values, a number longer than MAX_NUMBER_CHARS digits or not finite. Files are
parsed, never executed, and sizes are bounded before anything grows with them.

Standard library only: the store (export) and extraction (input) both read files through here.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import re
from dataclasses import dataclass
from typing import Any

MAX_SOURCE_BYTES = 64 * 1024 * 1024
MAX_DEPTH = 64
MAX_NODES = 5_000_000
MAX_RECORDS = 1_000_000
MAX_TEXT_CHARS = 100_000  # one prompt or response (as extraction.datasets)
MAX_NUMBER_CHARS = 100
SUFFIXES = (".json", ".jsonl", ".ndjson", ".csv")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
NO_LABEL = "unlabelled"


class RecordsError(ValueError):
    """The file cannot be read as records; the message names the file and where."""


def json_number(text: str) -> int | float:
    """parse_int / parse_float for json.loads: bounded length, finite, never a digit bomb."""
    if len(text) > MAX_NUMBER_CHARS:
        raise ValueError(f"a number of {len(text):,} characters (at most {MAX_NUMBER_CHARS})")
    value = float(text) if any(c in text for c in ".eE") else int(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range")
    return value


def json_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number a dataset may hold")


def loads_bounded(text: str) -> Any:
    """json.loads with bounded numbers; RecursionError and bad numbers become ValueError."""
    try:
        return json.loads(
            text, parse_int=json_number, parse_float=json_number, parse_constant=json_constant
        )
    except RecursionError:
        raise ValueError(f"JSON nested too deeply (at most {MAX_DEPTH} levels)") from None


@dataclass(frozen=True)
class Record:
    """One record: where it sits, its fields as found, and why it cannot be used (or None)."""

    location: str
    path: tuple[str | int, ...]  # keys and indices from the document's root (JSON), or (line,)
    id: str
    label: str
    prompt: str
    response: str
    problem: str | None = None


def location_of(path: tuple[str | int, ...]) -> str:
    """('results', 0, 'variations', 2) -> 'results[0].variations[2]'; () -> '$'."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _IDENTIFIER.match(part):
            text += f".{part}" if text else part
        else:
            text += f"[{json.dumps(part)}]"
    return text or "$"


def _text_of(record: dict, key: str) -> tuple[str, str | None]:
    value = record.get(key)
    if value is None:
        return "", None
    if not isinstance(value, str):
        return "", f"{key} is not text"
    if len(value) > MAX_TEXT_CHARS:
        return "", f"{key} is {len(value):,} characters long (at most {MAX_TEXT_CHARS:,})"
    if "\x00" in value:
        return "", f"{key} contains a NUL character"
    return value, None


def _name_of(value: object) -> str | None:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    text = " ".join(str(value).split())[:200]
    return text or None


def _record(path: tuple, record: dict, ancestors: list[dict], location: str) -> Record:
    """A Record from one object; a field that cannot be used becomes its `problem`."""
    prompt, bad_prompt = _text_of(record, "prompt")
    response, bad_response = _text_of(record, "response")
    if "prompt" not in record and "response" not in record:
        prompt, bad_prompt = _text_of(record, "text")  # a plain dataset row: text, no answer
    problem = bad_prompt or bad_response
    if problem is None and not prompt.strip():
        problem = "no prompt" if "prompt" in record or "text" in record else "no prompt field"
    label = None
    for source in (record, *reversed(ancestors)):  # the record's own, else the nearest parent's
        label = label or _name_of(source.get("label")) or _name_of(source.get("category"))
    return Record(location, path, _name_of(record.get("id")) or location, label or NO_LABEL,
                  prompt, response, problem)  # fmt: skip


def _walk(document: Any, where: str) -> list[Record]:
    """Every record of a JSON document in document order (iterative: no recursion limit)."""
    records: list[Record] = []
    nodes = 0
    # (value, path, ancestors: the objects above it)
    stack: list[tuple[Any, tuple, list[dict]]] = [(document, (), [])]
    while stack:
        value, path, ancestors = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise RecordsError(f"{where}: more than {MAX_NODES:,} JSON values")
        if len(path) > MAX_DEPTH:
            raise RecordsError(
                f"{where}: {location_of(path[:8])}...: nested deeper than {MAX_DEPTH}"
            )
        if isinstance(value, dict):
            if "prompt" in value or "response" in value:
                if len(records) >= MAX_RECORDS:
                    raise RecordsError(f"{where}: more than {MAX_RECORDS:,} records")
                records.append(_record(path, value, ancestors, location_of(path)))
                continue
            children = [(value[key], (*path, key)) for key in value]
        elif isinstance(value, list):
            children = [(item, (*path, index)) for index, item in enumerate(value)]
        else:
            continue
        below = [*ancestors, value] if isinstance(value, dict) else ancestors
        stack.extend((child, child_path, below) for child, child_path in reversed(children))
    return records


def _json_lines(text: str, where: str) -> tuple[list[Any], list[Record]]:
    rows, records = [], []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        if len(records) >= MAX_RECORDS:
            raise RecordsError(f"{where}: more than {MAX_RECORDS:,} records")
        try:
            row = loads_bounded(line)
        except ValueError as exc:
            raise RecordsError(f"{where}: line {number}: not usable JSON ({exc})") from None
        if not isinstance(row, dict):
            raise RecordsError(f"{where}: line {number}: a record must be a JSON object")
        _walk(row, f"{where}: line {number}")  # bounds the depth and size of each line
        rows.append(row)
        records.append(_record((len(rows) - 1,), row, [], f"line {number}"))
    return rows, records


def _csv_rows(text: str, where: str) -> tuple[list[Any], list[Record]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows, records = [], []
    try:
        for row in reader:
            if len(records) >= MAX_RECORDS:
                raise RecordsError(f"{where}: more than {MAX_RECORDS:,} records")
            clean = {k: v for k, v in row.items() if isinstance(k, str)}
            rows.append(clean)
            records.append(_record((len(rows) - 1,), clean, [], f"line {reader.line_num}"))
    except csv.Error as exc:
        raise RecordsError(f"{where}: line {reader.line_num}: not valid CSV ({exc})") from None
    return rows, records


def read_records(raw: bytes, suffix: str, where: str) -> tuple[Any, list[Record]]:
    """(the parsed document, its records). `suffix` picks the format: `.json` is one JSON
    document (records anywhere inside), `.jsonl`/`.ndjson` one object per line, `.csv` rows.
    For JSONL and CSV the document is the list of rows."""
    if len(raw) > MAX_SOURCE_BYTES:
        raise RecordsError(
            f"{where}: {len(raw) / 2**20:.1f} MiB, over {MAX_SOURCE_BYTES >> 20} MiB"
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise RecordsError(f"{where}: line {line}: bytes that are not UTF-8") from None
    if "\x00" in text:
        raise RecordsError(f"{where}: a NUL byte; a text file has none")
    suffix = suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        document, records = _json_lines(text, where)
    elif suffix == ".csv":
        document, records = _csv_rows(text, where)
    elif suffix == ".json":
        try:
            document = loads_bounded(text)
        except json.JSONDecodeError as exc:
            raise RecordsError(f"{where}: line {exc.lineno}: not valid JSON ({exc.msg})") from None
        except ValueError as exc:
            raise RecordsError(f"{where}: not usable JSON ({exc})") from None
        records = _walk(document, where)
    else:
        raise RecordsError(f"{where}: unsupported file type {suffix!r}; use {', '.join(SUFFIXES)}")
    if not records:
        raise RecordsError(f"{where}: no records (objects with a prompt and a response)")
    return document, records


def with_features(
    document: Any,
    records: list[Record],
    features: dict[str, dict],
    metadata: dict[str, Any],
    suffix: str,
) -> Any:
    """A copy of `document` in which record `r` gains `sae_activations` = `features[r.location]`
    (merged into what it already has: several layers may be added one after the other), with
    `sae_extraction_metadata` = `metadata` (merged the same way) at the top. A document that is
    a list (JSONL, CSV or a JSON array) is wrapped as {"records": [...], ...}."""
    out = copy.deepcopy(document)
    for record in records:
        if suffix in (".json",):
            target = out
            for part in record.path:
                target = target[part]
        else:
            target = out[record.path[0]]
        existing = target.get("sae_activations")
        merged = dict(existing) if isinstance(existing, dict) else {}
        merged.update(features.get(record.location, {}))
        target["sae_activations"] = merged
    if not isinstance(out, dict):
        out = {"records": out}
    existing = out.get("sae_extraction_metadata")
    merged = dict(existing) if isinstance(existing, dict) else {}
    merged.update(metadata)
    out["sae_extraction_metadata"] = merged
    return out


def dump_json(document: Any) -> str:
    """The text of an export: UTF-8 JSON, indented, non-ASCII kept as is."""
    return json.dumps(document, ensure_ascii=False, indent=2) + "\n"
