"""Dataset loading: valid files parse; every malformed input names the file, line and value."""

from __future__ import annotations

import json

import pytest

from extraction.datasets import DatasetError, Sample, builtin_datasets, load_dataset


def _write(tmp_path, name, lines):
    path = tmp_path / name
    path.write_text("\n".join(json.dumps(x) if isinstance(x, dict) else x for x in lines) + "\n")
    return path


def test_jsonl_and_csv_parse_to_the_same_samples(tmp_path):
    rows = [{"id": "a", "text": "Hello there", "label": "x"}, {"text": "Bye, now", "label": "y"}]
    jsonl = load_dataset(_write(tmp_path, "d.jsonl", rows))
    csv_path = tmp_path / "d.csv"
    csv_path.write_text('id,text,label\na,Hello there,x\n,"Bye, now",y\n')
    csv = load_dataset(csv_path)
    assert [s.text for s in jsonl.samples] == [s.text for s in csv.samples]
    assert jsonl.samples[1].id == "2" and csv.samples[1].id == "3"  # default id = line number
    assert jsonl.labels == ["x", "y"] and len(jsonl.sha256) == 64


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (
            [{"text": "ok", "label": "a"}, {"label": "b"}],
            r"d\.jsonl: line 2: missing column 'text'",
        ),
        ([{"text": "ok"}], r"line 1: missing column 'label'"),
        ([{"text": "   ", "label": "a"}], r"line 1: text '   ' is empty"),
        (
            [{"id": "x", "text": "a", "label": "a"}, {"id": "x", "text": "b", "label": "a"}],
            r"line 2: duplicate id 'x' \(first on line 1\)",
        ),
        (
            [{"text": "a", "label": "a", "pair_id": "p1", "side": "a"}],
            r"line 1: pair 'p1' has no side 'b'",
        ),
        (
            [{"text": "a", "label": "a", "pair_id": "p1", "side": "left"}],
            r"line 1: side 'left' must be 'a' or 'b'",
        ),
        (['{"text": "a", "label": '], r"line 1: not valid JSON"),
    ],
)
def test_bad_rows_name_file_line_and_value(tmp_path, lines, message):
    with pytest.raises(DatasetError, match=message):
        load_dataset(_write(tmp_path, "d.jsonl", lines))


def test_undecodable_bytes_name_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"text": "fine", "label": "a"}\n{"text": "caf\xe9", "label": "a"}\n')
    with pytest.raises(DatasetError, match=r"bad\.jsonl: line 2: bytes b'\\xe9' are not UTF-8"):
        load_dataset(path)


def test_unknown_file_and_extension(tmp_path):
    with pytest.raises(DatasetError, match="dataset 'nope' not found"):
        load_dataset("nope")
    other = tmp_path / "d.txt"
    other.write_text("x")
    with pytest.raises(DatasetError, match="unsupported extension '.txt'"):
        load_dataset(other)


def test_builtin_names_resolve():
    assert {"emotions", "minimal_pairs", "propositions", "style_pairs"} <= set(builtin_datasets())
    assert len(load_dataset("emotions")) >= 200


def test_sample_validates_in_constructor():
    with pytest.raises(ValueError, match="side 'a' given without a pair_id"):
        Sample(id="1", text="t", label="l", side="a")


def test_teacher_forced_rows_build_text_from_prompt_and_response(tmp_path):
    path = _write(
        tmp_path, "tf.jsonl", [{"prompt": "Q: hi? A:", "response": " hello", "label": "x"}]
    )
    assert load_dataset(path).samples[0].text == "Q: hi? A: hello"
