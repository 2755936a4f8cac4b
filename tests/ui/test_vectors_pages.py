"""The Vectors and Steering pages (AppTest over a copy of the tiny paired store, made by real
extraction with one `pca_center` set): what they draw, a set computed from the page as a real
job, hostile URL values, damaged or planted sets and readouts, read-only mode; and, in a fresh
interpreter, a steering request answered by the real worker while the app never imports torch.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from jobs import ReadOnlyError, list_jobs, steering
from store import open_store
from tests.jobs.helpers import alive, wait_for
from tests.ui.apptest import REPO, TIMEOUT, chart, messages, open_page, page_text, shown
from tests.ui.test_hostile_urls import HOSTILE

VECTORS, STEERING = "pages/vectors.py", "pages/steering.py"
KEYS = {
    VECTORS: ("set", "words", "scaled", "vec_run"),
    STEERING: ("set", "steer_layers", "strength", "tokens"),
}


@pytest.fixture
def paired_env(tiny_paired_store, tmp_path, monkeypatch):
    root = tmp_path / "store"
    shutil.copytree(tiny_paired_store["root"], root, symlinks=True)
    monkeypatch.setenv("ACTX_STORE", str(root))
    monkeypatch.delenv("ACTX_READ_ONLY", raising=False)
    yield {**tiny_paired_store, "root": root}
    record = steering.WorkerRecord.read(root.resolve())
    if steering.is_worker(record, root.resolve()):  # a test that steered stops its worker
        os.kill(record.pid, signal.SIGTERM)
        wait_for(lambda: not alive(record.pid), 30, "the worker to stop")


def _buttons(at) -> list[str]:
    return [b.label for b in at.get("download_button")] + [b.label for b in at.button]


@pytest.mark.slow  # a real job process
def test_the_vectors_page_shows_a_set_and_computes_another_as_a_job(paired_env):
    set_id = paired_env["set_id"]
    at = open_page(VECTORS)
    assert at.query_params["set"] == set_id  # the default is pinned
    figures = chart(at, "Explained variance and sign agreement")
    assert set(figures["figure"]) == {"explained_variance", "sign_agreement"}
    assert figures["value"].between(0, 1).all() and len(figures) == 2 * 4  # 4 layers
    dom = chart(at, "Cosine with")
    assert set(dom["with"]) == {"difference of means (Directions)"}
    assert dom["cosine"].between(-1, 1).all()
    words = at.dataframe[0].value
    assert list(words["direction"]) == [f"layer {x}" for x in (0, 1, 2, 3)]
    assert words["promotes"].str.len().gt(0).all()
    assert {"Download .pt", "Download GGUF", "Compute"} <= set(_buttons(at))
    assert [link.proto.page for link in at.get("page_link")][:1] == ["steering"]

    # Compute a pca_diff set from the form: a real job of the `vectors` kind.
    at.selectbox(key="vec_method").set_value("pca_diff").run()  # as a browser reruns on change
    at.button(key="vec_compute").click().run()
    assert "Computing" in " ".join(s.value for s in at.success), messages(at)
    (job,) = [s.job for s in list_jobs(paired_env["root"]).statuses]
    assert job.kind == "vectors" and job.settings.method == "pca_diff"
    wait_for(lambda: not list_jobs(paired_env["root"]).statuses[0].job.active, 120, "the job")
    assert list_jobs(paired_env["root"]).statuses[0].job.state == "done"
    at = open_page(VECTORS, {"set": set_id})
    compared = chart(at, "Cosine with")
    store = open_store(paired_env["root"])
    ours, theirs = store.vector_set(set_id), store.vector_set(job.run_id)
    assert theirs.manifest.method == "pca_diff"
    expected = (ours.vectors * theirs.vectors).sum(axis=1)  # unit vectors, same layers
    drawn = compared[compared["with"] == f"pca_diff ({job.run_id})"].sort_values("layer")
    np.testing.assert_allclose(drawn["cosine"], expected, rtol=1e-5)


@pytest.mark.parametrize("page", [VECTORS, STEERING])
@pytest.mark.parametrize("value", ["markdown", "huge", "inf", "dot dot", "empty"])
def test_hostile_url_values(paired_env, page, value):
    keys = KEYS[page]
    hostile = HOSTILE[value][: 480_000 // len(keys)]
    at = open_page(page, dict.fromkeys(keys, hostile))
    text = messages(at)
    assert "[session expired](" not in text and len(text) < 400 * len(keys)
    if page == STEERING and value == "empty":  # `?steer_layers=`: a link to no layers at all
        assert "Pick at least one layer" in text
    elif page == VECTORS:
        assert not chart(at, "Explained variance").empty
    else:
        assert at.button(key="generate")
    if hostile:
        assert "The link asks for" in text
    assert at.query_params["set"] == paired_env["set_id"]


def _plant_damaged_set(root, set_id):
    folder = root / "vector_sets" / "planted"
    shutil.copytree(root / "vector_sets" / set_id, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "manifest.json").write_text(json.dumps({**manifest, "set_id": "planted"}))
    (folder / "vectors.parquet").write_bytes(b"PAR1 nope")


def test_a_damaged_or_planted_set_is_named_and_the_healthy_one_drawn(paired_env):
    root = paired_env["root"]
    _plant_damaged_set(root, paired_env["set_id"])
    (root / "vector_sets" / "link").symlink_to(root / "vector_sets" / paired_env["set_id"])
    for page in (VECTORS, STEERING):
        at = open_page(page, {"set": "planted"})
        picker = at.selectbox(key="set")
        assert picker.value == paired_env["set_id"] and len(picker.options) == 1, page
        assert "'planted'" in messages(at)
    at = open_page(VECTORS)
    assert at.expander[0].label == "2 damaged vector set(s) left out"
    text = at.text[0].value
    assert (
        "vector_sets/link" in text
        and "vector_sets/planted" in text
        and "is not Parquet" in text
        and str(root) not in text
    )


def test_a_damaged_readout_costs_only_the_words(paired_env):
    (folder,) = (paired_env["root"] / "readouts").iterdir()
    (folder / "unembedding.parquet").write_bytes(b"garbage")
    at = open_page(VECTORS)
    assert "not Parquet" in messages(at) and not at.dataframe
    assert not chart(at, "Explained variance").empty and "Download .pt" in _buttons(at)


def test_open_in_vectors_opens_the_runs_newest_set_or_the_form(paired_env):
    from ui import links
    from ui.compute import run_summaries
    from ui.context import StoreView

    run_id = paired_env["run_id"]
    view = StoreView(str(paired_env["root"]), (run_id,))
    runs = run_summaries(view).frame.set_index("run_id")
    (target,) = [t for t in links.open_in(runs, run_id) if t.title == "Vectors"]
    at = open_page(VECTORS, target.query)
    assert at.query_params["set"] == paired_env["set_id"] and "no vector set" not in messages(at)
    shutil.rmtree(paired_env["root"] / "vector_sets")
    at = open_page(VECTORS, target.query)
    assert "has no vector set yet: compute one below" in shown(messages(at))
    assert at.selectbox(key="vec_run").value == run_id


def test_a_store_without_sets_says_how_to_make_one(paired_env):
    shutil.rmtree(paired_env["root"] / "vector_sets")
    assert "has no vector sets" in messages(open_page(VECTORS))
    assert "compute one on the Vectors page" in messages(open_page(STEERING))


def test_read_only_offers_no_form_and_starts_no_worker(paired_env, monkeypatch):
    monkeypatch.setenv("ACTX_READ_ONLY", "1")
    shutil.rmtree(paired_env["root"] / "readouts")  # a store made without the model's readout
    at = open_page(VECTORS)
    assert not at.text_input and "Compute" not in _buttons(at)
    assert not chart(at, "Explained variance").empty and "Download .pt" in _buttons(at)
    assert "`python -m extraction readout --model model-llama --store store` saves it" in (
        shown(messages(at))
    )
    assert str(paired_env["root"].parent) not in page_text(at)
    at = open_page(STEERING, {"strength": "0.5", "steer_layers": ["1", "2"]})
    assert "read-only: it starts no steering worker" in messages(at)
    assert not at.button and not (paired_env["root"] / "steering").exists()
    command = shown(at.code[0].value)
    assert "--layers 1,2 --strength 0.5" in command and "--store store " in command
    assert str(paired_env["root"].parent) not in page_text(at)
    with pytest.raises(ReadOnlyError):  # the service refuses by itself too
        steering.submit(paired_env["root"], _settings(paired_env), read_only=True)


def _settings(env):
    from settings.vectors import SteerSettings

    return SteerSettings(prompt="Hi", vector_set=env["set_id"], max_new_tokens=4)


@pytest.mark.slow
def test_steering_answers_in_the_worker_and_the_app_never_imports_torch(paired_env):
    """A fresh interpreter opens the Steering page, presses Generate and reruns until the
    worker's three answers are drawn; then torch and transformers are not in its sys.modules."""
    script = f"""
import json, sys, time
from streamlit.testing.v1 import AppTest
at = AppTest.from_file("app.py", default_timeout={TIMEOUT})
at.query_params.update({{"strength": "1.0", "tokens": "10"}})
at.switch_page("pages/steering.py")
at.run()
at.button(key="generate").click().run()
deadline = time.monotonic() + 180
while len(at.main.code) < 3 and time.monotonic() < deadline and not at.error:
    time.sleep(0.2)
    at.run()
answers = [c.value for c in at.main.code]
print(json.dumps({{"answers": answers, "errors": [e.value for e in at.error],
                  "heavy": [m for m in ("torch", "transformers") if m in sys.modules]}}))
"""
    env = {"ACTX_STORE": str(paired_env["root"]), "PATH": "/usr/bin:/bin",
           "ACTX_STEER_IDLE_S": "20"}  # fmt: skip
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["errors"] == [] and len(report["answers"]) == 3, report
    baseline, steered, _control = report["answers"]
    assert steered != baseline  # strength 1.0 on the tiny model changes the greedy answer
    assert report["heavy"] == [], report
    assert steering.live_worker(paired_env["root"].resolve()) is not None  # kept for the next
