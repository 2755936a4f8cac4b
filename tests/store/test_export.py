"""`python -m store export`: one run's vectors as CSV `label,d1,...,dD`, .npy or Parquet, read
back equal; bad values named; a damaged run is one line; nothing is replaced silently; it works
on a read-only store and writes nothing into it."""

from __future__ import annotations

import io
import os

import numpy as np
import pandas as pd
import pytest

from store import open_store
from store.__main__ import main
from store.export import encode_vectors


def run_export(capsys, *args: str) -> tuple[int, list[str], list[str]]:
    """(exit status, stdout lines, stderr lines) of an in-process `python -m store export`."""
    try:
        code = main(["export", *args])
    except SystemExit as exc:  # argparse's own refusals
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err.splitlines()


def _base(root, out) -> list[str]:
    return ["--store", str(root), "--run", "good", "--hook", "resid_post", "--layer", "-1",
            "--position", "mean", "--out", str(out)]  # fmt: skip


@pytest.mark.parametrize("fmt", ["csv", "npy", "parquet"])
def test_export_reads_back_equal(store_root, tmp_path, capsys, fmt):
    out = tmp_path / f"v.{fmt}"
    code, stdout, _ = run_export(capsys, *_base(store_root, out), "--label", "id,label")
    assert code == 0 and stdout == [f"wrote 8 rows x 8 (resid_post layer 2 mean of good) to {out}"]
    X, samples = open_store(store_root).vectors("good", "resid_post", 2, "mean")
    if fmt == "npy":
        np.testing.assert_array_equal(np.load(out, allow_pickle=False), X)
        return
    frame = pd.read_csv(out) if fmt == "csv" else pd.read_parquet(out)
    assert list(frame.columns) == ["label"] + [f"d{j}" for j in range(1, 9)]
    assert list(frame["label"]) == [f"{i}:{lab}" for i, lab in zip(samples["id"], samples["label"],
                                                                    strict=True)]  # fmt: skip
    np.testing.assert_array_equal(frame.iloc[:, 1:].to_numpy(np.float32), X)
    if fmt == "csv":
        assert out.read_text().splitlines()[0] == "label," + ",".join(f"d{j}" for j in range(1, 9))


def test_labels_that_need_quotes_stay_one_cell():
    data = encode_vectors(np.ones((2, 2)), ['a,"b"', "line\nbreak"], "csv")
    frame = pd.read_csv(io.BytesIO(data))
    assert list(frame["label"]) == ['a,"b"', "line\nbreak"] and frame.shape == (2, 3)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--hook", "resid_mid"], "run 'good' has no hook 'resid_mid'; it has"),
        (["--layer", "7"], "layer 7 out of range 0..2"),
        (["--layer", "-9"], "layer -9 out of range 0..2"),
        (["--position", "answer_mean"], "run 'good' has no position 'answer_mean'"),
        (["--position", "all"], "position 'all' has one row per token"),
        (["--label", "colour"], "label column 'colour' is not a sample column; choose from"),
        (["--label", ","], "label columns must name at least one sample column"),
        (["--run", "nope"], "no committed run 'nope'"),
        (["--run", "../x"], "run id '../x' is not valid"),
        (["--format", "xlsx"], "argument --format: invalid choice: 'xlsx'"),
        (["--out", "OUT/v.txt"], "cannot tell the format of"),
        (["--out", "OUT/missing/v.csv"], "does not exist"),
        (["--out", "OUT"], "is a folder"),
        (["--layer", "1e999"], "argument --layer: invalid int value"),
    ],
)
def test_bad_values_are_named_in_one_line(store_root, tmp_path, capsys, args, message):
    argv = _base(store_root, tmp_path / "v.csv")
    for flag, value in zip(args[::2], args[1::2], strict=True):
        value = value.replace("OUT", str(tmp_path))
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    code, _, err = run_export(capsys, *argv)
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ")
    assert message in err[0], err
    assert not (tmp_path / "v.csv").exists()


def test_never_replaces_a_file_silently_nor_writes_through_a_link(store_root, tmp_path, capsys):
    out = tmp_path / "v.csv"
    out.write_text("keep me")
    code, _, err = run_export(capsys, *_base(store_root, out))
    assert code == 2 and err == [f"error: '{out}' exists; pass --force to replace it"]
    assert out.read_text() == "keep me"
    assert run_export(capsys, *_base(store_root, out), "--force")[0] == 0
    assert out.read_text().startswith("label,d1,")
    # a planted link: refused, and with --force the link itself is replaced, not its target
    target = tmp_path / "elsewhere.txt"
    target.write_text("not yours")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    assert run_export(capsys, *_base(store_root, link))[0] == 2
    assert run_export(capsys, *_base(store_root, link), "--force")[0] == 0
    assert target.read_text() == "not yours" and not link.is_symlink()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_damaged_run_is_one_line_and_others_still_export(damage, tmp_path, capsys):
    damage.copy("broken")
    damage.part("broken").write_bytes(b"not parquet")
    argv = _base(damage.root, tmp_path / "v.csv")
    argv[argv.index("good")] = "broken"
    code, _, err = run_export(capsys, *argv)
    assert code == 2 and len(err) == 1
    assert err[0].startswith("error: run 'broken': cannot read vectors (file vectors/part-00000")
    assert str(damage.root) not in err[0]
    assert run_export(capsys, *_base(damage.root, tmp_path / "v.csv"))[0] == 0


def test_export_works_read_only_and_writes_nothing_into_the_store(
    store_root, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("ACTX_READ_ONLY", "1")

    def listing():
        return sorted((str(p), p.stat().st_mtime_ns) for p in store_root.rglob("*"))

    before = listing()
    os.chmod(store_root / "runs" / "good", 0o555)
    try:
        assert run_export(capsys, *_base(store_root, tmp_path / "v.parquet"))[0] == 0
    finally:
        os.chmod(store_root / "runs" / "good", 0o755)
    assert listing() == before
