"""Datasets: load and validate JSONL or CSV files of labelled text.

Schema (one record per sample):
    text      required, non-empty: what the model reads
    label     required: the class of the sample (gratitude, anger, A, plain, ...)
    id        optional, unique; defaults to the 1-based line/row number
    pair_id   optional: groups exactly two samples, one with side "a" and one with side "b"
    side      "a" or "b", required when pair_id is set
    category  optional free text (political, grammar_error, ...)
    prompt, response   optional, for teacher-forced workflows (text is then prompt + response)

Every error names the file, the line (1-based, counting the CSV header as line 1) and the bad
value, and loading stops at the first one: nothing is half-loaded.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

FIELDS = ("id", "text", "label", "pair_id", "side", "category", "prompt", "response")
SIDES = ("a", "b")


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
        if not self.id:
            raise ValueError(f"id {self.id!r} is empty")
        if not isinstance(self.text, str) or not self.text.strip():
            raise ValueError(f"text {self.text!r} is empty")
        if not isinstance(self.label, str) or not self.label.strip():
            raise ValueError(f"label {self.label!r} is empty")
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


def _clean(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str | int | float):
        raise ValueError(f"value {value!r} is not text")
    text = str(value)
    return text if text.strip() else None


def _records(path: Path, raw: bytes) -> list[tuple[int, dict]]:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DatasetError(
            f"{path}: line {line}: bytes {raw[exc.start : exc.end]!r} are not UTF-8"
        ) from exc
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        if reader.fieldnames is None:
            raise DatasetError(f"{path}: empty file")
        return [(i + 2, row) for i, row in enumerate(reader)]
    if path.suffix.lower() not in (".jsonl", ".json", ".ndjson"):
        raise DatasetError(f"{path}: unsupported extension {path.suffix!r}; use .jsonl or .csv")
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(
                f"{path}: line {number}: not valid JSON ({exc.msg}): {line[:80]!r}"
            ) from None
        if not isinstance(record, dict):
            raise DatasetError(f"{path}: line {number}: expected an object, got {record!r:.80}")
        records.append((number, record))
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
            values = {key: _clean(record.get(key)) for key in FIELDS}
            # Keep the raw text so an error shows the blank value the user wrote.
            values["text"] = record.get("text")
            if not values["text"] and teacher_forced:
                values["text"] = (values["prompt"] or "") + (values["response"] or "")
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
