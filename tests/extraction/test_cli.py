"""The CLI as a user meets it: real subprocesses, exit codes, one-line errors, SIGKILL + resume,
and a reader in another process while a run is written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from store import open_store
from store.writer import list_uncommitted
from tests.support.tiny import emotion_rows, write_jsonl

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "extraction", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=300, **kwargs,
    )  # fmt: skip


def _start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "extraction", *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.fixture
def dataset(tmp_path) -> Path:
    return write_jsonl(tmp_path / "emo.jsonl", emotion_rows(per_label=4))


def test_run_prints_run_id_last_and_list_shows_it(tmp_path, tiny_models, dataset, capsys):
    store = tmp_path / "store"
    assert _main(["run", "--model", str(tiny_models["llama"]), "--dataset", str(dataset),
                  "--hooks", "resid_post,mlp_out", "--layers", "all", "--positions", "last,mean",
                  "--store", str(store)]) == 0  # fmt: skip
    done = capsys.readouterr()
    run_id = done.out.strip().splitlines()[-1]
    assert [m.run_id for m in open_store(store).runs()] == [run_id]
    assert "100%" in done.err  # the progress bar
    assert _main(["list", "--store", str(store)]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line.split("\t")[:4] == [run_id, str(tiny_models["llama"]), "emo", "12 samples"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "no-such-model"], "unknown model 'no-such-model'"),
        (["--layers", "7"], "layer 7 out of range 0..3"),
        (["--layers", "-9,-1"], "layer -9 out of range 0..3"),  # a negative list parses
        (["--hooks", "resid_mid"], "unknown hook 'resid_mid'"),
        (["--dataset", "BAD"], "line 2: missing column 'label'"),
        (["--positions", "first"], "unknown position 'first'"),
        (["--batch-size", "many"], "invalid int value: 'many'"),
        (["--device", "cuda:99"], "device 'cuda:99'"),  # no GPU, or fewer than 100
        (["--device", "gpu"], "unknown device 'gpu'"),
        (["--compute-dtype", "float8"], "unknown compute dtype 'float8'"),
        (["--layers", "20-10"], "bad layer range '20-10'"),
        (["--layers", "0-99999999"], "bad layer '0-99999999'"),
        (["--flush-mb", "nan"], "--flush-mb nan must be > 0"),
        (["--store", "FILE"], "is not a directory"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_commits_nothing(
    tmp_path, tiny_models, dataset, args, message, capsys
):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok", "label": "a"}\n{"text": "no label"}\n')
    base = {
        "--model": str(tiny_models["llama"]),
        "--dataset": str(dataset),
        "--store": str(tmp_path / "s"),
    }
    a_file = tmp_path / "a-file"
    a_file.write_text("not a store")
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = {"BAD": str(bad), "FILE": str(a_file)}.get(value, value)
    # In-process `main()`: the same code path as the command, without a 4 s interpreter start
    # per case (test_a_bad_run_exits_2_in_a_real_process covers the process itself).
    capsys.readouterr()
    assert _main(["run", *[x for pair in base.items() for x in pair], "--no-progress"]) == 2
    stderr = capsys.readouterr().err
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and message in lines[0]
    assert a_file.read_text() == "not a store"
    runs = tmp_path / "s" / "runs"
    assert not runs.exists() or not any(runs.iterdir())


def _main(argv: list[str]) -> int:
    from extraction.__main__ import main

    try:
        return main(argv)
    except SystemExit as exc:  # argparse's own errors
        return int(exc.code)


@pytest.mark.slow
def test_a_bad_run_exits_2_in_a_real_process(tmp_path, tiny_models, dataset):
    done = cli("run", "--model", str(tiny_models["llama"]), "--dataset", str(dataset),
               "--layers", "-9,-1", "--store", str(tmp_path / "s"), "--no-progress")  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip() == "error: layer -9 out of range 0..3 (or -4..-1)"
    assert not (tmp_path / "s" / "runs").exists()


def _wait_for(predicate, timeout=120.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _big_dataset(tmp_path, n_per_label=100):
    return write_jsonl(tmp_path / "big.jsonl", emotion_rows(per_label=n_per_label))


@pytest.mark.slow
def test_sigkill_mid_run_leaves_nothing_visible_and_resume_finishes(tmp_path, tiny_models):
    store_root = tmp_path / "store"
    args = ["run", "--model", str(tiny_models["llama"]), "--dataset", str(_big_dataset(tmp_path)),
            "--hooks", "resid_pre,resid_post,mlp_out", "--batch-size", "4",
            "--store", str(store_root), "--no-progress"]  # fmt: skip
    proc = _start(*args, "--flush-mb", "0.01")  # a part file per batch: killed between parts
    parts = lambda: list(store_root.glob("runs/*/vectors/part-*.parquet"))  # noqa: E731
    _wait_for(lambda: len(parts()) >= 3 or proc.poll() is not None, what="parts")
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert open_store(store_root).runs() == []

    # In-process: only the killed run needs a process. The part size is not a setting.
    assert _main([*args, "--resume"]) == 0
    store = open_store(store_root)
    (manifest,) = store.runs()
    assert manifest.row_counts["resumed_samples"] > 0
    counts = store.query(
        "SELECT count(*) AS n, count(DISTINCT (hook, position, layer, sample_idx)) AS d, "
        "count(DISTINCT sample_idx) AS s FROM vectors",
    ).frame.iloc[0]
    assert counts["n"] == counts["d"] == 300 * 3 * 4 * 2
    assert counts["s"] == 300


@pytest.mark.slow
def test_reader_in_another_process_works_while_a_run_is_written(tmp_path, tiny_models, dataset):
    """This test's process reads while a `python -m extraction run` process writes."""
    store_root = tmp_path / "store"
    assert _main(["run", "--model", str(tiny_models["llama"]), "--dataset", str(dataset),
                  "--store", str(store_root), "--no-progress"]) == 0  # fmt: skip
    (committed,) = open_store(store_root).run_ids()
    writer = _start("run", "--model", str(tiny_models["llama"]), "--dataset",
                    str(_big_dataset(tmp_path)), "--batch-size", "2", "--flush-mb", "0.01",
                    "--store", str(store_root), "--no-progress")  # fmt: skip
    store = open_store(store_root)

    def writing() -> bool:  # the other run has part files on disk and no commit marker yet
        return any(any((p / "vectors").glob("part-*")) for p in list_uncommitted(store_root))

    reads, seen, rows_read = 0, set(), None
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        finished = writer.poll() is not None  # before reading: a finished run is committed
        ids = [m.run_id for m in store.runs()]
        seen.add(len(ids))
        X, _ = store.vectors(committed, "resid_post", 1, "last")
        rows_read = store.query("SELECT count(*) AS n FROM vectors").frame["n"][0]
        reads += writing()  # count the reads made while the other process wrote
        if len(ids) == 2 or finished:
            break
        time.sleep(0.02)  # leave the writer the CPU it needs
    writer.wait(timeout=300)
    assert writer.returncode == 0, writer.stderr.read()
    assert reads > 5  # it kept reading while the other process wrote
    assert seen == {1, 2}  # one run during the write, two once it committed
    assert X.shape[0] == 12 and rows_read > 0


def test_list_shows_healthy_runs_and_names_damaged_ones(tmp_path, capsys):
    from tests.support.synthetic import label_rows, write_run

    store = tmp_path / "store"
    write_run(store, "healthy", label_rows(["a", "b"], 3))
    write_run(store, "broken", label_rows(["a", "b"], 3))
    (store / "runs" / "broken" / "manifest.json").write_text("{ not json")
    stray = store / "runs" / "props copy"
    stray.mkdir()
    (stray / "_COMMITTED").write_text("")
    assert _main(["list", "--store", str(store)]) == 0
    done = capsys.readouterr()
    assert [line.split("\t")[0] for line in done.out.splitlines()] == ["healthy"]
    assert "Traceback" not in done.err
    damaged = [line for line in done.err.splitlines() if line.startswith("damaged run")]
    assert len(damaged) == 2 and any("broken" in d for d in damaged)
    assert any("props copy" in d for d in damaged)
    assert str(tmp_path) not in done.err  # named within the store, no server path


def test_list_of_a_store_that_is_a_file_is_one_line(tmp_path, capsys):
    a_file = tmp_path / "f"
    a_file.write_text("x")
    assert _main(["list", "--store", str(a_file)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ")
