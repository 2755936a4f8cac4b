"""Dataset loading: valid files parse; every malformed input names the file, line and value."""

from __future__ import annotations

import json

import pytest

from extraction.datasets import (
    MAX_TEXT_CHARS,
    DatasetError,
    Sample,
    builtin_datasets,
    load_dataset,
    parse_dataset,
)


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


# -- hostile files: every one is a DatasetError naming the file and line, never a traceback --------
def _load_bytes(tmp_path, name, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return load_dataset(path)


def test_a_csv_field_over_the_csv_module_limit_names_its_line(tmp_path):
    huge = "x" * 200_000  # over csv's own 131,072 limit: csv.Error inside the reader
    data = f'text,label\nfine,a\n"{huge}",b\n'.encode()
    with pytest.raises(DatasetError, match=r"big\.csv: line 3: .*longer than 100,000 characters"):
        _load_bytes(tmp_path, "big.csv", data)


def test_a_text_over_the_field_limit_is_refused_in_both_formats(tmp_path):
    text = "y" * (MAX_TEXT_CHARS + 1)  # under csv's limit, over ours
    with pytest.raises(DatasetError, match=r"line 2: text is 100,001 characters long"):
        _load_bytes(tmp_path, "d.csv", f"text,label\n{text},a\n".encode())
    with pytest.raises(DatasetError, match=r"line 1: text is 100,001 characters long"):
        load_dataset(_write(tmp_path, "d.jsonl", [{"text": text, "label": "a"}]))
    with pytest.raises(DatasetError, match=r"line 1: label is 1,001 characters long"):
        load_dataset(_write(tmp_path, "d.jsonl", [{"text": "t", "label": "l" * 1001}]))


def test_json_nested_100k_deep_is_a_message(tmp_path):
    deep = '{"text": "t", "label": ' + "[" * 100_000 + "]" * 100_000 + "}"
    with pytest.raises(DatasetError, match=r"deep\.jsonl: line 2: JSON nested too deeply"):
        _load_bytes(tmp_path, "deep.jsonl", b'{"text": "ok", "label": "a"}\n' + deep.encode())


def test_a_5000_digit_number_is_refused_before_int_conversion(tmp_path):
    line = '{"text": "t", "label": ' + "9" * 5000 + "}"
    with pytest.raises(DatasetError, match=r"n\.jsonl: line 1: .*number of 5,000 characters"):
        _load_bytes(tmp_path, "n.jsonl", line.encode())
    for bad in ("1e999", "NaN", "-Infinity"):
        with pytest.raises(DatasetError, match=r"line 1: not a usable JSON value"):
            _load_bytes(tmp_path, "n.jsonl", f'{{"text": "t", "label": {bad}}}'.encode())
    # A reasonable number is still a fine label.
    assert _load_bytes(tmp_path, "n.jsonl", b'{"text": "t", "label": 3}').labels == ["3"]


def test_nul_bytes_name_their_line(tmp_path):
    with pytest.raises(DatasetError, match=r"z\.csv: line 3: a NUL byte"):
        _load_bytes(tmp_path, "z.csv", b"text,label\nok,a\nbad\x00,b\n")
    with pytest.raises(DatasetError, match=r"z\.jsonl: line 1: a NUL byte"):
        _load_bytes(tmp_path, "z.jsonl", b'{"text": "a\x00", "label": "a"}\n')
    # An escaped NUL parses in JSON, then the field check refuses it.
    with pytest.raises(DatasetError, match=r"line 1: text contains a NUL character"):
        _load_bytes(tmp_path, "z.jsonl", b'{"text": "a\\u0000", "label": "a"}\n')


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"text": 5, "label": "a"}, r"line 1: text must be text, got the number 5$"),
        ({"text": ["a"], "label": "a"}, r"line 1: text must be text, got a list$"),
        ({"text": "t", "label": {"x": 1}}, r"line 1: label must be text or a number, got an obj"),
        ({"text": "t", "label": True}, r"line 1: label must be text or a number, got true/false"),
        ({"text": "t", "label": "a", "category": [1]}, r"line 1: category must be text or a "),
        ({"prompt": 1, "response": "r", "label": "a"}, r"line 1: prompt must be text"),
        ({f"c{i}": "v" for i in range(65)}, r"line 1: 65 fields; a record has at most 64"),
    ],
)
def test_values_that_are_not_text_are_named(tmp_path, record, message):
    with pytest.raises(DatasetError, match=message):
        load_dataset(_write(tmp_path, "d.jsonl", [record]))


def test_a_record_that_is_not_an_object_says_what_it_is(tmp_path):
    with pytest.raises(DatasetError, match=r"line 1: expected an object, got a list$"):
        load_dataset(_write(tmp_path, "d.jsonl", ["[" + ", ".join(["1"] * 10_000) + "]"]))


def test_too_many_columns_or_values_in_a_csv(tmp_path):
    header = ",".join(f"c{i}" for i in range(100)) + "\n"
    with pytest.raises(DatasetError, match=r"w\.csv: line 1: 100 columns; at most 64"):
        _load_bytes(tmp_path, "w.csv", header.encode())
    with pytest.raises(DatasetError, match=r"line 3: 4 values but the header has 2 columns"):
        _load_bytes(tmp_path, "w.csv", b"text,label\nok,a\nx,y,z,w\n")


def test_too_many_records(tmp_path, monkeypatch):
    monkeypatch.setattr("extraction.datasets.MAX_RECORDS", 3)
    rows = [{"text": f"t{i}", "label": "a"} for i in range(4)]
    with pytest.raises(DatasetError, match=r"d\.jsonl: more than 3 records"):
        load_dataset(_write(tmp_path, "d.jsonl", rows))
    csv_text = "text,label\n" + "".join(f"t{i},a\n" for i in range(4))
    with pytest.raises(DatasetError, match=r"d\.csv: more than 3 records"):
        _load_bytes(tmp_path, "d.csv", csv_text.encode())


def test_csv_errors_name_the_line_a_multiline_record_starts_on(tmp_path):
    data = b'text,label\n"one\nline two\nline three",a\n\n"   ",b\n'
    with pytest.raises(DatasetError, match=r"line 6: text '   ' is empty"):
        _load_bytes(tmp_path, "m.csv", data)
    ok = _load_bytes(tmp_path, "m.csv", b'id,text,label\n,"a\nb",x\n,c,y\n')
    assert [s.id for s in ok.samples] == ["2", "4"]  # default ids are start lines too
    assert ok.samples[0].text == "a\nb"


def test_a_line_separator_inside_a_json_string_is_not_a_new_line(tmp_path):
    rows = [{"text": "one\u2028two", "label": "a"}, {"text": "x", "label": "b"}]
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    dataset = load_dataset(path)
    assert [s.id for s in dataset.samples] == ["1", "2"]
    assert dataset.samples[0].text == "one\u2028two"


def test_an_upload_error_names_the_file_name_only():
    # check_upload passes the upload's safe file name as `path`: the message holds nothing else.
    with pytest.raises(DatasetError) as caught:
        parse_dataset(b'{"text": 5, "label": "a"}\n', "up", "up.jsonl")
    assert str(caught.value) == "up.jsonl: line 1: text must be text, got the number 5"
