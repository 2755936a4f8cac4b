"""Checks for the built-in datasets in data/*.jsonl."""

from __future__ import annotations

import collections
import json
import pathlib

import pytest

DATA_DIR = pathlib.Path(__file__).resolve().parents[2] / "data"
FILES = [
    "emotions.jsonl",
    "propositions.jsonl",
    "minimal_pairs.jsonl",
    "style_pairs.jsonl",
    "prompt_responses.jsonl",
]
REQUIRED = {"id": str, "text": str, "label": str}
OPTIONAL = {"pair_id": str, "side": str, "category": str}
TEACHER_FORCED = {"prompt": str, "response": str}  # instead of text: text = prompt + response


def load_rows(name: str) -> list[dict]:
    rows = []
    with open(DATA_DIR / name, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            assert line.strip(), f"{name}:{lineno}: blank line"
            row = json.loads(line)
            assert isinstance(row, dict), f"{name}:{lineno}: not an object"
            rows.append(row)
    return rows


def pairs_of(rows: list[dict]) -> dict[str, dict[str, dict]]:
    """pair_id -> {side: row}; asserts each pair has exactly one 'a' and one 'b'."""
    by_pair: dict[str, list[dict]] = collections.defaultdict(list)
    for row in rows:
        if "pair_id" in row:
            by_pair[row["pair_id"]].append(row)
    out = {}
    for pid, members in by_pair.items():
        sides = sorted(r.get("side") for r in members)
        assert sides == ["a", "b"], f"pair {pid} has sides {sides}"
        out[pid] = {r["side"]: r for r in members}
    return out


def test_all_files_present():
    present = sorted(p.name for p in DATA_DIR.glob("*.jsonl"))
    for name in FILES:
        assert name in present


@pytest.mark.parametrize("name", sorted(p.name for p in DATA_DIR.glob("*.jsonl")))
def test_schema(name):
    rows = load_rows(name)
    assert rows, f"{name} is empty"
    for row in rows:
        if "prompt" in row:  # teacher-forced records: prompt + response stand for text
            assert all(isinstance(row.get(k), str) and row[k].strip() for k in TEACHER_FORCED)
            assert "text" not in row, f"{name} {row['id']}: text given with prompt and response"
            row = {**row, "text": row["prompt"] + row["response"]}
        for key, typ in REQUIRED.items():
            assert isinstance(row.get(key), typ), f"{name} {row.get('id')}: bad {key}"
        assert row["id"].strip() and row["text"].strip() and row["label"].strip(), row
        extra = set(row) - set(REQUIRED) - set(OPTIONAL) - set(TEACHER_FORCED)
        assert not extra, f"{name} {row['id']}: unknown fields {extra}"
        for key, typ in OPTIONAL.items():
            if key in row:
                assert isinstance(row[key], typ) and row[key], f"{name} {row['id']}: bad {key}"
        if "side" in row:
            assert row["side"] in ("a", "b"), row
            assert "pair_id" in row, f"{name} {row['id']}: side without pair_id"
        if "pair_id" in row:
            assert "side" in row, f"{name} {row['id']}: pair_id without side"
    ids = [r["id"] for r in rows]
    dup_ids = [k for k, v in collections.Counter(ids).items() if v > 1]
    assert not dup_ids, f"{name}: duplicate ids {dup_ids}"
    texts = [r.get("text", r.get("prompt")) for r in rows]
    dup_texts = [k for k, v in collections.Counter(texts).items() if v > 1]
    assert not dup_texts, f"{name}: duplicate texts {dup_texts}"
    pairs_of(rows)


# What data/README.md states, exactly; each phrase must stay in it, word for word.
README = (DATA_DIR / "README.md").read_text(encoding="utf-8")
STATED = {
    "emotions.jsonl": "240 single sentences, 60 per label",
    "propositions.jsonl": "12 contrasting pairs (24 rows)",
    "minimal_pairs.jsonl": "176 pairs (352 rows)",
    "style_pairs.jsonl": "60 pairs (120 rows)",
    "prompt_responses.jsonl": "120 prompt + response records, 30 per label",
}


@pytest.mark.parametrize("name", FILES)
def test_the_data_readme_states_these_counts(name):
    assert STATED[name] in " ".join(README.split()), name


def _ids(prefix: str, count: int, width: int, sides: str = "") -> list[str]:
    return [f"{prefix}{i:0{width}d}{side}" for i in range(1, count + 1) for side in sides or [""]]


def _interleaved(values: list[str]) -> bool:
    """No long runs of one value: shuffled, not sorted into blocks."""
    changes = sum(a != b for a, b in zip(values, values[1:], strict=False))
    return changes >= len(values) // 3


def test_emotions():
    rows = load_rows("emotions.jsonl")
    counts = collections.Counter(r["label"] for r in rows)
    assert counts == {"gratitude": 60, "anger": 60, "apology": 60, "neutral": 60}
    assert [r["id"] for r in rows] == _ids("emo-", 240, 4)
    assert _interleaved([r["label"] for r in rows])
    words = [len(r["text"].split()) for r in rows]
    assert min(words) == 2 and 30 <= max(words) <= 40, (min(words), max(words))  # "2 to ~35"


def test_propositions():
    rows = load_rows("propositions.jsonl")
    pairs = pairs_of(rows)
    assert len(rows) == 24 and list(pairs) == _ids("prop-", 12, 2)
    assert [r["id"] for r in rows] == _ids("prop-", 12, 2, "ab")
    for pid, sides in pairs.items():
        assert sides["a"]["label"] == "A" and sides["b"]["label"] == "B", pid
        assert sides["a"]["category"] == sides["b"]["category"], pid
    cats = collections.Counter(p["a"]["category"] for p in pairs.values())
    assert cats == {"political": 6, "science": 6}


def test_minimal_pairs():
    rows = load_rows("minimal_pairs.jsonl")
    pairs = pairs_of(rows)
    assert len(rows) == 352 and list(pairs) == _ids("mp-", 176, 3)
    assert [r["id"] for r in rows] == _ids("mp-", 176, 3, "ab")
    for pid, sides in pairs.items():
        assert sides["a"]["label"] == "original" and sides["b"]["label"] == "edited", pid
        assert sides["a"]["category"] == sides["b"]["category"], pid
    categories = [p["a"]["category"] for p in pairs.values()]
    assert collections.Counter(categories) == {
        "meaning_change": 36, "grammar_error": 36, "negation": 36, "number_agreement": 36,
        "tense": 32,
    }  # fmt: skip
    assert _interleaved(categories)


def test_style_pairs():
    rows = load_rows("style_pairs.jsonl")
    pairs = pairs_of(rows)
    assert len(rows) == 120 and list(pairs) == _ids("sty-", 60, 3)
    assert [r["id"] for r in rows] == _ids("sty-", 60, 3, "ab")
    for pid, sides in pairs.items():
        assert sides["a"]["label"] == "plain" and sides["b"]["label"] == "slangy", pid
    assert {r["category"] for r in rows} == {"style"}


def test_prompt_responses():
    rows = load_rows("prompt_responses.jsonl")
    counts = collections.Counter(r["label"] for r in rows)
    assert counts == {"cooking": 30, "programming": 30, "health": 30, "travel": 30}, counts
    assert [r["id"] for r in rows] == _ids("pr-", 120, 3)
    assert _interleaved([r["label"] for r in rows])
    # Responses start with a space, so prompt + response reads as one text.
    assert all(r["response"].startswith(" ") and not r["prompt"].endswith(" ") for r in rows)
    assert len({r["response"] for r in rows}) == len(rows)


# ---------------------------------------------------------------- embedded models


@pytest.fixture(scope="module")
def tokenizers():
    """The tokenizers extraction itself uses: from the converted embedded models."""
    from transformers import AutoTokenizer

    from extraction.models import EMBEDDED, resolve

    return {name: AutoTokenizer.from_pretrained(resolve(name).source) for name in EMBEDDED}


def _differs_in_one_token(tok, a: str, b: str) -> bool:
    ids_a, ids_b = tok(a)["input_ids"], tok(b)["input_ids"]
    return len(ids_a) == len(ids_b) and sum(x != y for x, y in zip(ids_a, ids_b, strict=True)) == 1


@pytest.mark.embedded
def test_minimal_pairs_differ_in_one_token(tokenizers):
    pairs = pairs_of(load_rows("minimal_pairs.jsonl"))
    failures = {}
    for name, tok in tokenizers.items():
        bad = sorted(
            pid
            for pid, sides in pairs.items()
            if not _differs_in_one_token(tok, sides["a"]["text"], sides["b"]["text"])
        )
        if bad:
            failures[name] = bad
    assert not failures, f"minimal pairs not differing in exactly one token: {failures}"
