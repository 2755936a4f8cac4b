"""Datasets: load and validate JSONL or CSV files of labelled text.

Schema (one record per sample):
    text      required, non-empty: what the model reads
    label     required: the class of the sample (gratitude, anger, A, plain, ...)
    id        optional, unique; defaults to the 1-based line/row number
    pair_id   optional: groups exactly two samples, one with side "a" and one with side "b"
    side      "a" or "b", required when pair_id is set
    category  optional free text (political, grammar_error, ...)
    prompt, response   optional, for teacher-forced workflows (text is then prompt + response)

Every error names the file, the line (1-based, counting the CSV header as line 1; for a CSV
record with quoted line breaks, the line it starts on) and the bad value, and loading stops at the
first one: nothing is half-loaded. Files come from users and uploads, so sizes are bounded
before anything grows with them: a text field holds at most MAX_TEXT_CHARS characters, a name
field (id, label, pair_id, side, category) MAX_NAME_CHARS, a record MAX_COLUMNS fields and a
file MAX_RECORDS records; a JSON record is one flat object whose values are text, numbers (of at
most MAX_NUMBER_CHARS characters, finite) or null, never lists, objects or true/false. Hostile
input (a CSV field over csv's own 128 KiB limit, JSON nested 100,000 deep, a 5,000-digit number,
NUL bytes) is a DatasetError like any other bad row, never a traceback.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

from store.json_records import json_constant, json_number

FIELDS = ("id", "text", "label", "pair_id", "side", "category", "prompt", "response")
TEXT_FIELDS = ("text", "prompt", "response")
SIDES = ("a", "b")
MAX_TEXT_CHARS = 100_000  # one sample's text (prompt, response); far above any model context
MAX_NAME_CHARS = 1_000  # id, label, pair_id, side, category: shown in tables and legends
MAX_COLUMNS = 64  # fields per record (known ones are read, others ignored)
MAX_RECORDS = 1_000_000


class DatasetError(ValueError):
    """A dataset file is malformed; the message names the file, line and value."""


@dataclass(frozen=True)
class Sample:
    """One dataset row. Validates itself; never reads files."""

    id: str
    text: str
    label: str
    pair_id: str | None = None
    side: str | None = None
    category: str | None = None
    prompt: str | None = None
    response: str | None = None

    def __post_init__(self) -> None:
        for name in FIELDS:
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ValueError(
                    f"{name} must be text, got {_kind(value)} {_short(value)}".rstrip()
                )
            if value is not None:
                _check_length(name, value)
        if not self.id:
            raise ValueError(f"id {self.id!r} is empty")
        if self.text is None or not self.text.strip():
            raise ValueError(f"text {_short(self.text)} is empty")
        if self.label is None or not self.label.strip():
            raise ValueError(f"label {_short(self.label)} is empty")
        if self.pair_id is not None and self.side not in SIDES:
            raise ValueError(f"side {self.side!r} must be 'a' or 'b' when pair_id is set")
        if self.side is not None and self.pair_id is None:
            raise ValueError(f"side {self.side!r} given without a pair_id")


@dataclass(frozen=True)
class Dataset:
    name: str
    path: str
    sha256: str
    samples: tuple[Sample, ...]

    @property
    def labels(self) -> list[str]:
        return sorted({s.label for s in self.samples})

    def __len__(self) -> int:
        return len(self.samples)


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "the number"
    return {dict: "an object", list: "a list", type(None): "null"}.get(type(value), "a value")


def _short(value: object, limit: int = 60) -> str:
    """repr of a value, cut to `limit` characters (a row's value may be 100 KB)."""
    if isinstance(value, dict | list):
        return ""  # never repr a container: it may be huge, or deep
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _check_length(name: str, value: str) -> None:
    limit = MAX_TEXT_CHARS if name in TEXT_FIELDS else MAX_NAME_CHARS
    if len(value) > limit:
        raise ValueError(f"{name} is {len(value):,} characters long; at most {limit:,} are allowed")
    if "\x00" in value:
        raise ValueError(f"{name} contains a NUL character")


def _clean(name: str, value: object) -> str | None:
    """A name field's value as text (numbers become text), None when blank or missing."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{name} must be text or a number, got {_kind(value)}")
    text = str(value)
    return text if text.strip() else None


def _json_record(line: str) -> dict:
    try:
        record = json.loads(
            line, parse_int=json_number, parse_float=json_number, parse_constant=json_constant
        )
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg}): {_short(line, 80)}") from None
    except RecursionError:
        raise ValueError("JSON nested too deeply; a record is one flat object") from None
    except ValueError as exc:  # from the number hooks
        raise ValueError(f"not a usable JSON value: {exc}") from None
    if not isinstance(record, dict):
        raise ValueError(f"expected an object, got {_kind(record)} {_short(record, 40)}".rstrip())
    if len(record) > MAX_COLUMNS:
        raise ValueError(f"{len(record):,} fields; a record has at most {MAX_COLUMNS}")
    return record


def _csv_records(path: Path, text: str) -> list[tuple[int, dict]]:
    """(line the record starts on, header -> value) for each CSV record; blank lines skipped."""
    reader = csv.reader(io.StringIO(text, newline=""))
    records: list[tuple[int, dict]] = []
    header: list[str] | None = None
    last = 0
    try:
        for row in reader:
            start, last = last + 1, reader.line_num
            if not row:
                continue
            if len(row) > MAX_COLUMNS:
                raise DatasetError(
                    f"{path}: line {start}: {len(row):,} columns; at most {MAX_COLUMNS}"
                )
            if header is None:
                header = row
                continue
            if len(row) > len(header):
                raise DatasetError(
                    f"{path}: line {start}: {len(row)} values but the header has "
                    f"{len(header)} columns"
                )
            if len(records) >= MAX_RECORDS:
                raise DatasetError(f"{path}: more than {MAX_RECORDS:,} records")
            padded = row + [None] * (len(header) - len(row))  # short rows: missing is None
            records.append((start, dict(zip(header, padded, strict=True))))
    except csv.Error as exc:
        why = str(exc)
        if "field larger than field limit" in why:
            why = f"a field is longer than {MAX_TEXT_CHARS:,} characters"
        raise DatasetError(f"{path}: line {last + 1}: not valid CSV ({why})") from None
    if header is None:
        raise DatasetError(f"{path}: empty file")
    return records


def _records(path: Path, raw: bytes) -> list[tuple[int, dict]]:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DatasetError(
            f"{path}: line {line}: bytes {raw[exc.start : exc.end]!r} are not UTF-8"
        ) from exc
    if "\x00" in text:  # csv and json disagree on NUL across Python versions: refuse first
        line = text[: text.index("\x00")].count("\n") + 1
        raise DatasetError(f"{path}: line {line}: a NUL byte; a text dataset has none")
    if path.suffix.lower() == ".csv":
        return _csv_records(path, text)
    if path.suffix.lower() not in (".jsonl", ".json", ".ndjson"):
        raise DatasetError(f"{path}: unsupported extension {path.suffix!r}; use .jsonl or .csv")
    records = []
    # Lines end at \n only: str.splitlines would also cut at U+2028 and friends, which JSON
    # allows unescaped inside a string.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        if len(records) >= MAX_RECORDS:
            raise DatasetError(f"{path}: more than {MAX_RECORDS:,} records")
        try:
            records.append((number, _json_record(line)))
        except ValueError as exc:
            raise DatasetError(f"{path}: line {number}: {exc}") from None
    return records


def parse_dataset(raw: bytes, name: str, path: str) -> Dataset:
    """Validate file contents (`path` gives the format by extension and names errors)."""
    where = Path(path)
    records = _records(where, raw)
    if not records:
        raise DatasetError(f"{where}: no records")
    samples: list[Sample] = []
    line_of: dict[str, int] = {}
    for number, record in records:
        teacher_forced = "prompt" in record and "response" in record
        for required in ("label",) if teacher_forced else ("text", "label"):
            if required not in record:
                raise DatasetError(f"{where}: line {number}: missing column {required!r}")
        try:
            values = {key: _clean(key, record.get(key)) for key in FIELDS if key not in TEXT_FIELDS}
            # Text fields are not converted: an error shows the blank value or the wrong type.
            for key in ("prompt", "response"):
                value = record.get(key)
                values[key] = None if isinstance(value, str) and not value.strip() else value
            values["text"] = record.get("text")
            if not values["text"] and teacher_forced:
                parts = (values["prompt"], values["response"])
                if all(isinstance(part, str | None) for part in parts):
                    values["text"] = "".join(part or "" for part in parts)
            values["id"] = values["id"] or str(number)
            sample = Sample(**values)
        except ValueError as exc:
            raise DatasetError(f"{where}: line {number}: {exc}") from None
        if sample.id in line_of:
            raise DatasetError(
                f"{where}: line {number}: duplicate id {sample.id!r} (first on line "
                f"{line_of[sample.id]})"
            )
        line_of[sample.id] = number
        samples.append(sample)
    _check_pairs(where, samples, line_of)
    return Dataset(name, path, hashlib.sha256(raw).hexdigest(), tuple(samples))


def _check_pairs(where: Path, samples: list[Sample], line_of: dict[str, int]) -> None:
    sides: dict[str, dict[str, Sample]] = {}
    for sample in samples:
        if sample.pair_id is None:
            continue
        pair = sides.setdefault(sample.pair_id, {})
        if sample.side in pair:
            raise DatasetError(
                f"{where}: line {line_of[sample.id]}: pair {sample.pair_id!r} has side "
                f"{sample.side!r} twice"
            )
        pair[sample.side] = sample
    for pair_id, pair in sides.items():
        if len(pair) != 2:
            (only,) = pair.values()
            missing = "b" if only.side == "a" else "a"
            raise DatasetError(
                f"{where}: line {line_of[only.id]}: pair {pair_id!r} has no side {missing!r}"
            )


def load_dataset(path: str | Path) -> Dataset:
    """Load a JSONL or CSV file; a bare name like `emotions` means `data/emotions.jsonl`."""
    resolved = resolve_dataset_path(path)
    return parse_dataset(resolved.read_bytes(), resolved.stem, str(resolved))


def builtin_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "data"


def builtin_datasets() -> list[str]:
    return sorted(p.stem for p in builtin_dir().glob("*.jsonl"))


def resolve_dataset_path(path: str | Path) -> Path:
    candidate = Path(path)
    if candidate.is_file():
        return candidate
    builtin = builtin_dir() / f"{path}.jsonl"
    if not candidate.suffix and builtin.is_file():
        return builtin
    raise DatasetError(
        f"dataset {str(path)!r} not found: give a .jsonl/.csv file or a built-in name "
        f"({', '.join(builtin_datasets())})"
    )
