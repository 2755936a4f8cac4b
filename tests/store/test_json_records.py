"""store.json_records: records found where they sit in a user's JSON, bounded and never run."""

from __future__ import annotations

import json

import pytest

from store import json_records
from store.json_records import RecordsError, location_of, read_records, with_features


def test_records_are_found_in_document_order_with_their_place_and_label():
    document = {
        "meta": {"prompt_template": "x"},  # a dict with neither prompt nor response: not one
        "results": [
            {"label": "a", "variations": [{"prompt": "p0", "response": "r0"},
                                          {"prompt": "p1", "response": "r1", "label": "own"}]},
            {"odd key!": [{"prompt": "p2", "response": "r2", "id": 7}]},
        ],
    }  # fmt: skip
    _, records = read_records(json.dumps(document).encode(), ".json", "f.json")
    assert [r.location for r in records] == [
        "results[0].variations[0]",
        "results[0].variations[1]",
        'results[1]["odd key!"][0]',
    ]
    assert [r.label for r in records] == ["a", "own", "unlabelled"]
    assert [r.id for r in records] == ["results[0].variations[0]", "results[0].variations[1]", "7"]
    assert location_of(()) == "$" and location_of((3,)) == "[3]"


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        ({"prompt": 5, "response": "r"}, "prompt is not text"),
        ({"prompt": "p", "response": ["r"]}, "response is not text"),
        ({"response": "only an answer"}, "no prompt field"),
        ({"prompt": "  ", "response": "r"}, "no prompt"),
        ({"prompt": "p\x00", "response": "r"}, "NUL"),
        ({"prompt": "p" * 100_001, "response": "r"}, "100,001 characters"),
    ],
)
def test_a_bad_record_is_reported_and_the_others_go_on(record, problem):
    document = [{"prompt": "fine", "response": "yes"}, record]
    _, records = read_records(json.dumps(document).encode(), ".json", "f.json")
    assert records[0].problem is None and problem in records[1].problem


@pytest.mark.parametrize(
    ("raw", "suffix", "message"),
    [
        (b"[" * 100_000 + b"]" * 100_000, ".json", "nested too deeply"),
        (json.dumps({"a": [[[[{"prompt": "p"}]]]]}).encode().replace(b"[[", b"[" * 40 + b"[")
         .replace(b"]]", b"]" * 40 + b"]"), ".json", "nested deeper than 64"),
        (b'{"prompt": "p", "response": 1' + b"0" * 5000 + b"}", ".json", "5,001 characters"),
        (b'[{"prompt": "p", "response": NaN}]', ".json", "NaN is not a number"),
        (b'[{"prompt": "p", "response": 1e999}]', ".json", "out of range"),
        (b'\xff\xfe{"prompt": 1}', ".json", "not UTF-8"),
        (b'{"prompt": "p"', ".json", "not valid JSON"),
        (b'{"a": 1}', ".json", "no records"),
        (b'{"prompt": "p"}\n[1]\n', ".jsonl", "line 2: a record must be a JSON object"),
        (b'{"prompt": "p"}', ".yaml", "unsupported file type '.yaml'"),
        (b"prompt\n\x00", ".csv", "NUL byte"),
    ],
)  # fmt: skip
def test_files_that_cannot_be_read_raise_one_error(raw, suffix, message):
    with pytest.raises(RecordsError, match=message) as info:
        read_records(raw, suffix, "upload" + suffix)
    assert str(info.value).startswith("upload" + suffix) and len(str(info.value)) < 400


def test_size_and_count_bounds(monkeypatch):
    monkeypatch.setattr(json_records, "MAX_SOURCE_BYTES", 100)
    with pytest.raises(RecordsError, match="over 0 MiB"):
        read_records(b" " * 101, ".json", "big.json")
    monkeypatch.setattr(json_records, "MAX_SOURCE_BYTES", 1 << 20)
    monkeypatch.setattr(json_records, "MAX_RECORDS", 3)
    many = [{"prompt": "p", "response": "r"}] * 4
    with pytest.raises(RecordsError, match="more than 3 records"):
        read_records(json.dumps(many).encode(), ".json", "many.json")
    monkeypatch.setattr(json_records, "MAX_NODES", 10)
    with pytest.raises(RecordsError, match="more than 10 JSON values"):
        read_records(json.dumps(list(range(20))).encode(), ".json", "wide.json")


def test_jsonl_and_csv_rows_are_records_and_come_back_wrapped():
    raw = (
        b'{"id": "a", "prompt": "p", "response": "r", "label": "x"}\n\n'
        b'{"text": "t", "label": "y"}\n'
    )
    rows, records = read_records(raw, ".jsonl", "d.jsonl")
    assert [r.location for r in records] == ["line 1", "line 3"]
    assert records[1].prompt == "t" and records[1].response == ""
    out = with_features(rows, records, {"line 1": {"layer_2": {"status": "ok"}}},
                        {"layer_2": {"sae_id": "s"}}, ".jsonl")  # fmt: skip
    assert out["records"][0]["sae_activations"] == {"layer_2": {"status": "ok"}}
    assert out["records"][1]["sae_activations"] == {}
    assert out["sae_extraction_metadata"] == {"layer_2": {"sae_id": "s"}}
    assert rows[0] == {"id": "a", "prompt": "p", "response": "r", "label": "x"}  # not changed
    rows, records = read_records(b"prompt,response,label\nhi,there,z\n", ".csv", "d.csv")
    assert records[0].location == "line 2" and records[0].label == "z"
