"""SAEs and feature runs as store kinds: damaged or planted folders are listed with a reason and
never fatal, hostile values are refused with a StoreError, and reading writes nothing."""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import pytest

from extraction.__main__ import main
from store import StoreError, open_store


@pytest.fixture
def root(tiny_sae_store, tmp_path) -> Path:
    shutil.copytree(tiny_sae_store["root"], tmp_path / "store")
    return tmp_path / "store"


def _copy(root: Path, kind: str, source: str, target: str, record: str) -> Path:
    """A copy of an SAE or feature run under a new id (its record says the new id)."""
    dst = root / kind / target
    shutil.copytree(root / kind / source, dst)
    data = json.loads((dst / record).read_text())
    data["sae_id" if kind == "saes" else "feature_run_id"] = target
    (dst / record).write_text(json.dumps(data))
    return dst


def _weights_with_header(header: bytes) -> bytes:
    return struct.pack("<Q", len(header)) + header


SAE_DAMAGE = {
    "card-not-json": (lambda f: (f / "manifest.json").write_text("{nope"), "not JSON"),
    "card-other-id": (lambda f: (f / "manifest.json").write_text(
        (f / "manifest.json").read_text().replace('"card-other-id"', '"sae-tiny"')),
        "says SAE id 'sae-tiny' but its folder is 'card-other-id'"),
    "card-bad-field": (lambda f: (f / "manifest.json").write_text(
        json.dumps({**json.loads((f / "manifest.json").read_text()), "d_sae": "64"})),
        "d_sae '64' must be a whole number"),
    "no-weights": (lambda f: (f / "sae_weights.safetensors").unlink(),
                   "it has no sae_weights.safetensors"),
    "weights-bomb": (lambda f: (f / "sae_weights.safetensors").write_bytes(
        struct.pack("<Q", 1 << 40)), "has a header of 1099511627776 bytes"),
    "weights-outside": (lambda f: (f / "sae_weights.safetensors").write_bytes(_weights_with_header(
        json.dumps({"W_dec": {"dtype": "F32", "shape": [64, 32], "data_offsets": [0, 8192]}})
        .encode())), "places tensor 'W_dec' outside the file"),
    "weights-pickle": (lambda f: (f / "sae_weights.safetensors").write_bytes(b"\x80\x04\x95..."),
                       "sae_weights.safetensors"),
    "cfg-other-width": (lambda f: (f / "cfg.json").write_text(
        json.dumps({**json.loads((f / "cfg.json").read_text()), "d_in": 48})),
        "cfg.json says d_in 48, d_sae 64; the card says 32, 64"),
    "cfg-symlink": (lambda f: ((f / "cfg.json").unlink(),
                               (f / "cfg.json").symlink_to("/etc/passwd")),
                    "cfg.json cannot be read"),
}  # fmt: skip


def test_damaged_or_planted_saes_are_listed_with_a_reason(root, capsys):
    for name, (damage, _) in SAE_DAMAGE.items():
        damage(_copy(root, "saes", "sae-tiny", name, "manifest.json"))
    os.symlink(root / "saes" / "sae-tiny", root / "saes" / "linked")
    (root / "saes" / "bad name!").mkdir()
    (root / "saes" / "bad name!" / "_COMMITTED").write_text("x")
    store = open_store(root)
    assert [c.sae_id for c in store.saes.list()] == ["sae-tiny"]
    reasons = {d.folder: d.reason for d in store.saes.damaged()}
    for name, (_, message) in SAE_DAMAGE.items():
        assert message in reasons[f"saes/{name}"], (name, reasons[f"saes/{name}"])
    assert "symbolic link" in reasons["saes/linked"]
    assert "SAE id 'bad name!' is not valid" in reasons["saes/bad name!"]
    with pytest.raises(StoreError, match="SAE 'no-weights' is damaged: it has no sae_weights"):
        store.saes.card("no-weights")
    assert main(["list", "--store", str(root), "--kind", "saes"]) == 0
    out, err = capsys.readouterr()
    assert out.count("\n") == 1 and out.startswith("sae-tiny\t")
    assert err.count("damaged saes/") == len(reasons)


FEATURE_DAMAGE = {
    "manifest-garbage": (lambda f: (f / "manifest.json").write_bytes(b"\xff\xfe"), "not UTF-8"),
    "bad-positions": (lambda f: (f / "manifest.json").write_text(json.dumps(
        {**json.loads((f / "manifest.json").read_text()), "positions": "every"})),
        "unknown positions 'every'"),
    "topk-not-parquet": (lambda f: (f / "topk" / "part-00000.parquet").write_text("PAR1 no"),
                         "file topk/part-00000.parquet is not Parquet"),
    "no-topk": (lambda f: (f / "topk" / "part-00000.parquet").unlink(), "no topk part files"),
    "samples-wrong": (lambda f: shutil.copy(f / "tokens" / "part-00000.parquet",
                                            f / "samples.parquet"),
                      "file samples.parquet has no column 'location'"),
}  # fmt: skip


def test_damaged_or_planted_feature_runs_are_listed_with_a_reason(root):
    for name, (damage, _) in FEATURE_DAMAGE.items():
        damage(_copy(root, "features", "feat-all", name, "manifest.json"))
    (root / "features" / "uncommitted").mkdir()  # a killed extraction: invisible, not damaged
    store = open_store(root)
    assert sorted(m.feature_run_id for m in store.features.list()) == ["feat-all", "feat-last"]
    reasons = {d.folder: d.reason for d in store.features.damaged()}
    assert set(reasons) == {f"features/{name}" for name in FEATURE_DAMAGE}
    for name, (_, message) in FEATURE_DAMAGE.items():
        assert message in reasons[f"features/{name}"], (name, reasons[f"features/{name}"])
    assert len(store.features.label_features("feat-all", "response")) > 0  # the others still read
    # a sample table that lies about its size is found when read
    run = root / "features" / "feat-last"
    data = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**data, "n_records": 99, "n_ok": 3}))
    with pytest.raises(StoreError, match="samples.parquet has 16 rows; the manifest says 99"):
        open_store(root).features.samples("feat-last")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.features.label_features("feat-all", scope="x' OR 1=1 --"), "unknown scope"),
        (lambda s: s.features.label_features("feat-last", scope="response"), "--positions all"),
        (lambda s: s.features.label_features("feat-all", top=10**9), "top 1000000000 must be"),
        (lambda s: s.features.label_features("feat-all", order="1; DROP"), "unknown order"),
        (lambda s: s.features.feature_labels("feat-all", 64), "feature 64 is not a feature"),
        (lambda s: s.features.feature_samples("feat-all", -1), "feature -1 is not a feature"),
        (lambda s: s.features.feature_samples("feat-all", 1, n=10**6), "n 1000000 must be"),
        (lambda s: s.features.sample_positions("feat-all", 16), "sample 16 is not a record"),
        (lambda s: s.features.manifest("../../etc"), "feature run id '../../etc' is not valid"),
        (lambda s: s.features.manifest("x" * 100_000), "feature run id 'xxxxx"),
        (lambda s: s.features.manifest("feat"), "ambiguous: it starts feat-all, feat-last"),
        (lambda s: s.saes.decoder_rows("sae-tiny", [64]), "feature 64 is not a feature"),
        (lambda s: s.saes.card(""), "SAE id '' is not valid"),
    ],
)
def test_hostile_values_are_refused_with_one_message(tiny_sae_store, call, message):
    with pytest.raises(StoreError, match=message) as info:
        call(open_store(tiny_sae_store["root"]))
    assert "\n" not in str(info.value) and len(str(info.value)) < 400


def test_reads_write_nothing(root):
    """Listing, summaries, one feature, one sample, the export and the decoder only read: what
    a hosted read-only copy of a store needs (the app never writes; jobs refuse there)."""
    before = sorted((p, p.stat().st_mtime_ns, p.stat().st_size) for p in root.rglob("*"))
    store = open_store(root)
    assert store.saes.list() and store.features.list()
    store.features.label_features("feat-all", "all", order="specificity")
    store.features.feature_samples("feat-all", 3, "response")
    store.features.sample_positions("feat-all", 0)
    assert len(store.features.export_json("feat-last")["records"]) == 16
    assert store.saes.decoder_rows("sae-tiny", [0, 63]).shape == (2, 32)
    assert sorted((p, p.stat().st_mtime_ns, p.stat().st_size) for p in root.rglob("*")) == before


def test_train_and_extract_into_a_store_that_cannot_be_written(tiny_sae_store, tmp_path, capsys):
    not_a_folder = tmp_path / "store-file"
    not_a_folder.write_text("")
    assert main(["train-sae", "--store", str(not_a_folder), "--run", "pr-llama", "--layer", "2",
                 "--no-progress"]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: store ") and "not a directory" in err[0]
    assert (
        main(
            [
                "sae",
                "--store",
                str(not_a_folder),
                "--model",
                tiny_sae_store["model"],
                "--dataset",
                str(tiny_sae_store["dataset"]),
                "--sae",
                "sae-tiny",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: store ") and "not a directory" in err[0]


def test_clean_removes_killed_trainings_and_extractions(root, capsys):
    (root / "saes" / "half-trained").mkdir()
    (root / "features" / "half-done" / "topk").mkdir(parents=True)
    assert main(["clean", "--store", str(root)]) == 0
    out = capsys.readouterr().out
    assert "removed saes/half-trained" in out and "removed features/half-done" in out
    assert sorted(p.name for p in (root / "saes").iterdir()) == ["sae-tiny"]
