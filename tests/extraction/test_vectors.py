"""`python -m extraction vectors`: a vector set from a paired run, its files, its errors, and no
torch. In-process `main()` calls; one real process checks that the verb never imports torch."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from pathlib import Path

import gguf
import pytest
import torch

from extraction.__main__ import main
from store import open_store

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def store_copy(tiny_paired_store, tmp_path):
    root = tmp_path / "store"
    shutil.copytree(tiny_paired_store["root"], root)
    return {**tiny_paired_store, "root": root}


def _vectors(capsys, *args) -> tuple[int, str, str]:
    code = main(["vectors", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_methods_make_sets_that_are_reused_and_exported(store_copy, capsys, tmp_path):
    root, run_id = str(store_copy["root"]), store_copy["run_id"]
    code, out, err = _vectors(capsys, "--run", run_id[:10], "--store", root)
    assert code == 0 and out.strip() == store_copy["set_id"]  # the same settings: reused
    assert "using it" in err
    pt, gg = tmp_path / "v.pt", tmp_path / "v.gguf"
    code, out, _ = _vectors(capsys, "--run", run_id, "--store", root, "--method", "mean_diff",
                            "--hook", "resid_pre", "--layers", "-2,-1", "--name", "mine",
                            "--pt", str(pt), "--gguf", str(gg))  # fmt: skip
    assert code == 0
    set_id = out.strip().splitlines()[-1]
    vector_set = open_store(root).vector_set(set_id)
    assert (vector_set.manifest.method, vector_set.manifest.hook) == ("mean_diff", "resid_pre")
    assert vector_set.layers == (2, 3) and set_id.startswith("mine-")
    assert sorted(torch.load(io.BytesIO(pt.read_bytes()), weights_only=True)) == [2, 3]
    names = sorted(t.name for t in gguf.GGUFReader(gg).tensors)
    assert names == ["direction.1", "direction.2"]  # resid_pre[L] = output of block L-1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--run", "no-such-run"], "no committed run 'no-such-run'"),
        (["--run", "../../etc"], "run id '../../etc' is not valid"),
        (["--run", "RUN", "--method", "pca"], "unknown method 'pca'"),
        (["--run", "RUN", "--hook", "mlp_out"], "unknown hook 'mlp_out'"),
        (["--run", "RUN", "--layers", "9"], "layer 9 out of range 0..3"),
        (["--run", "RUN", "--layers", "0", "--hook", "resid_pre"], "layer 0: every pair has "
         "identical states"),  # both sides end in the same token: nothing to find
        (["--run", "RUN", "--set-id", "SET"], "already exists"),
        (["--run", "RUN", "--set-id", "a/b"], "run id 'a/b' is not valid"),
    ],
)  # fmt: skip
def test_bad_input_exits_2_with_one_line_and_writes_nothing(store_copy, capsys, args, message):
    args = [a.replace("RUN", store_copy["run_id"]).replace("SET", store_copy["set_id"])
            for a in args]  # fmt: skip
    before = sorted(p.name for p in (store_copy["root"] / "vector_sets").iterdir())
    code, out, err = _vectors(capsys, *args, "--store", str(store_copy["root"]))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert sorted(p.name for p in (store_copy["root"] / "vector_sets").iterdir()) == before


def test_a_run_without_pairs_is_refused(tiny_store, capsys):
    run_id = open_store(tiny_store["root"]).resolve_run_id("emo-llama")
    code, _, err = _vectors(capsys, "--run", run_id, "--store", str(tiny_store["root"]))
    assert code == 2 and "is not of a paired dataset" in err
    assert not (tiny_store["root"] / "vector_sets").exists()


def test_an_unwritable_store_fails_with_one_line(store_copy, capsys):
    shutil.rmtree(store_copy["root"] / "vector_sets")
    (store_copy["root"] / "vector_sets").write_text("a file where the folder belongs")
    code, _, err = _vectors(capsys, "--run", store_copy["run_id"], "--store",
                            str(store_copy["root"]))  # fmt: skip
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err


@pytest.mark.slow  # seconds: a real process
def test_the_verb_never_imports_torch(store_copy):
    script = (
        "import sys\nfrom extraction.__main__ import main\n"
        f"code = main(['vectors', '--run', {store_copy['run_id']!r}, '--method', 'pca_diff', "
        f"'--store', {str(store_copy['root'])!r}])\n"
        "assert 'torch' not in sys.modules, 'torch imported'\nsys.exit(code)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith("pca_diff-")
