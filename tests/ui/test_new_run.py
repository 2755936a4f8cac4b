"""The New run page (AppTest): launch on a tiny model, watch it finish and show up in Runs;
cancel; upload checks; read-only mode; and the app process never importing torch."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from streamlit.testing.v1 import AppTest

from extraction.datasets import load_dataset
from jobs import JobError, ReadOnlyError, cancel, launch, list_jobs, reconcile, save_upload
from store import open_store
from store.writer import list_uncommitted
from tests.support.synthetic import pair_rows, write_run
from tests.support.tiny import emotion_rows
from ui.jobs import _size, check_upload, estimate_run_bytes, prefill_query
from ui.pairs_compute import new_run_prefill

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 30


@pytest.fixture
def store_root(tmp_path, monkeypatch):
    monkeypatch.delenv("ACTX_READ_ONLY", raising=False)
    root = tmp_path / "store"
    monkeypatch.setenv("ACTX_STORE", str(root))
    yield root
    for job in reconcile(root) if root.exists() else []:
        if job.active:
            cancel(root, job.job_id, read_only=False, timeout=2)


def new_run_page() -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    at.run()
    at.switch_page("pages/new_run.py")
    at.run()
    assert not at.exception, at.exception
    return at


def pick_model_folder(at: AppTest, folder: Path) -> None:
    at.radio(key="model_kind").set_value("Hugging Face id or local folder").run()
    at.text_input(key="model_other").input(str(folder)).run()


def rerun_until(at: AppTest, predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        at.run()  # what the fragment's run_every does in a browser
        assert not at.exception, at.exception
        if predicate(at):
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def shown(element) -> str:
    """An alert's text as the reader sees it (messages are Markdown-escaped plain text)."""
    return element.value.replace("\\", "")


def job_lines(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown if "**" in m.value]


@pytest.mark.slow
def test_launch_from_the_page_completes_and_appears_in_runs(store_root, tiny_models):
    at = new_run_page()
    pick_model_folder(at, tiny_models["llama"])
    at.selectbox(key="dataset_pick").set_value("emotions").run()
    at.multiselect(key="hooks").set_value(["resid_post", "mlp_out"]).run()
    at.text_input(key="layers").input("0,-1").run()
    at.text_input(key="name").input("from-the-page").run()
    at.button(key="launch").click().run()
    assert at.success and "Started job" in at.success[0].value, [e.value for e in at.error]

    # A second click with the same settings joins the running job instead of starting another.
    at.button(key="launch").click().run()
    assert "already" in at.info[0].value
    rerun_until(at, lambda a: any("**done**" in line for line in job_lines(a)), 180, "done")
    (run_id,) = open_store(store_root).run_ids()
    manifest = open_store(store_root).manifest(run_id)
    assert manifest.name == "from-the-page" and manifest.layers == (0, 3)
    assert manifest.hooks == ("resid_post", "mlp_out")
    # The finished job's card opens its run in the analysis page it fits.
    rerun_until(at, lambda a: a.get("page_link"), 30, "the job's links")
    opens = {b.proto.page: parse_qs(b.proto.query_string) for b in at.get("page_link")}
    assert opens == {"directions": {"runs": [run_id]}}

    # Without restarting the app, the Runs page lists it.
    at.switch_page("pages/runs.py").run()
    assert not at.exception
    assert run_id in list(at.dataframe[0].value["run_id"])


def test_upload_errors_are_shown_by_line(store_root):
    at = new_run_page()
    at.radio(key="dataset_kind").set_value("Upload a file").run()
    bad = b'{"text": "a", "label": "x"}\n{"text": "b"}\n'
    at.file_uploader(key="dataset_upload").set_value(("bad.jsonl", bad, "application/json"))
    at.run()
    assert "line 2: missing column 'label'" in shown(at.error[0])
    assert at.button(key="launch").disabled
    assert not (store_root / "uploads").exists()  # nothing invalid is stored

    good = "".join(json.dumps(r) + "\n" for r in emotion_rows(2)).encode()
    at.file_uploader(key="dataset_upload").set_value(("my data.jsonl", good, "application/json"))
    at.run()
    assert at.success and "**6 samples**" in preview(at)  # the preview says what it holds
    (saved,) = (store_root / "uploads").iterdir()
    assert saved.name.endswith("-my_data.jsonl")


def test_upload_limit_and_names():
    with pytest.raises(JobError, match="2.0 MiB; the limit is 1 MiB"):
        check_upload("x.jsonl", b"x" * (2 * 2**20), 2**20)
    with pytest.raises(JobError, match="not a dataset"):
        check_upload("x.exe", b"", 2**20)


@pytest.mark.slow
def test_cancel_from_the_page_leaves_nothing_partial(store_root, tiny_models):
    rows = "".join(json.dumps(r) + "\n" for r in emotion_rows(per_label=1500)).encode()
    save_upload(store_root, "big.jsonl", rows, read_only=False)
    at = new_run_page()
    pick_model_folder(at, tiny_models["llama"])
    at.selectbox(key="dataset_pick").set_value("big.jsonl (uploaded)").run()
    at.number_input(key="batch_size").set_value(2).run()
    at.button(key="launch").click().run()
    assert at.success, [e.value for e in at.error]

    def writing(_at) -> bool:
        (status,) = list_jobs(store_root).statuses
        return bool(status.done)

    rerun_until(at, writing, 180, "samples written")
    (status,) = list_jobs(store_root).statuses
    assert (store_root / "runs" / status.job.run_id).is_dir()
    at.button(key=f"cancel-{status.job.job_id}").click().run()
    assert any("**cancelled**" in line for line in job_lines(at))
    (status,) = list_jobs(store_root).statuses
    assert status.job.state == "cancelled"
    assert not (store_root / "runs" / status.job.run_id).exists()
    assert list_uncommitted(store_root) == [] and open_store(store_root).run_ids() == []


def test_a_link_opens_the_page_with_its_settings_filled_in(store_root):
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    at.query_params.update(prefill_query("gemma3-270m", "minimal_pairs", ("mlp_out",), ("all",)))
    at.switch_page("pages/new_run.py")  # as a link does: the URL is read on the first run
    at.run()
    assert not at.exception, at.exception
    assert at.radio(key="model_kind").value == "Embedded"
    assert at.selectbox(key="model_embedded").value == "gemma3-270m"
    assert at.selectbox(key="dataset_pick").value == "minimal_pairs"
    assert at.multiselect(key="hooks").value == ["mlp_out"]
    assert at.multiselect(key="positions").value == ["all"]

    other = prefill_query("/models/mine", "emotions", ("resid_pre",), ("all",))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    at.query_params.update(other)
    at.switch_page("pages/new_run.py")
    at.run()
    assert at.radio(key="model_kind").value == "Hugging Face id or local folder"
    assert at.text_input(key="model_other").value == "/models/mine"


def test_prefill_names_the_dataset_as_the_page_lists_it(store_root, tmp_path):
    run_id = write_run(store_root, "pairs", pair_rows(3), dataset_name="minimal_pairs")
    manifest = open_store(store_root).manifest(run_id)
    shipped = REPO / "data" / "minimal_pairs.jsonl"
    builtin = replace(manifest, dataset_sha256=hashlib.sha256(shipped.read_bytes()).hexdigest(),
                      extra={"dataset_path": str(shipped)})  # fmt: skip
    assert new_run_prefill(builtin, "resid_post", store_root)["dataset_pick"] == "minimal_pairs"
    # A user's own data/minimal_pairs.jsonl with other content is not the built-in one.
    own = tmp_path / "data" / "minimal_pairs.jsonl"
    own.parent.mkdir()
    own.write_text('{"text": "a", "label": "x"}\n')
    assert new_run_prefill(replace(manifest, extra={"dataset_path": str(own)}),
                           "resid_post", store_root) is None  # fmt: skip

    upload = save_upload(store_root, "my pairs.jsonl", b'{"text": "a", "label": "x"}\n',
                         read_only=False)  # fmt: skip
    uploaded = replace(manifest, extra={"dataset_path": str(upload)})
    query = new_run_prefill(uploaded, "mlp_out", store_root)
    assert query["dataset_pick"] == "my_pairs.jsonl (uploaded)", query
    assert query["hooks"] == ["mlp_out"] and query["positions"] == ["all"]
    assert query["model_other"] == "synthetic-model"

    elsewhere = tmp_path / "elsewhere.jsonl"
    elsewhere.write_text('{"text": "a", "label": "x"}\n')
    assert new_run_prefill(replace(manifest, extra={"dataset_path": str(elsewhere)}),
                           "resid_post", store_root) is None  # fmt: skip


@pytest.mark.parametrize("how", ["env", "secrets", "broken secrets"])
def test_read_only_mode_has_no_run_page(store_root, monkeypatch, tmp_path, how):
    # settings.env reads secrets.toml files itself (the job layer has no Streamlit): write one
    # where Streamlit looks, in the working directory.
    work = tmp_path / "work"
    (work / ".streamlit").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(work)
    if how == "env":
        monkeypatch.setenv("ACTX_READ_ONLY", "1")
    else:
        text = "read_only = true\n" if how == "secrets" else "read_only = 0\nread_only = 0\n"
        (work / ".streamlit" / "secrets.toml").write_text(text)
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception
    assert not at.sidebar.text_input  # the store path cannot be changed by a visitor
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        at.switch_page("pages/new_run.py")

    # Reached directly, the page refuses and offers nothing to click.
    page = AppTest.from_file(str(REPO / "pages" / "new_run.py"), default_timeout=TIMEOUT)
    page.run()
    assert "read-only" in page.error[0].value
    assert not page.button and not page.file_uploader and not page.text_input
    with pytest.raises(ReadOnlyError):  # and the job layer refuses by itself
        launch(store_root, object(), read_only=False)


def test_store_path_is_pinned_in_read_only_mode(store_root, monkeypatch, tmp_path):
    """A visitor cannot point a read-only app at another folder of the server: there is no store
    box, and a store path in the session (left over, or planted) is ignored: ACTX_STORE is read."""
    write_run(store_root, "served-run", pair_rows(2))
    other = tmp_path / "other-store"
    write_run(other, "private-run", pair_rows(2))
    monkeypatch.setenv("ACTX_READ_ONLY", "1")
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    at.session_state["store_path"] = str(other)
    at.run()
    assert not at.exception, at.exception
    assert not at.sidebar.text_input
    captions = [c.value for c in at.sidebar.caption]
    assert f"Read-only store: {store_root.name}" in captions, captions
    assert not any(str(tmp_path) in c or other.name in c for c in captions), captions
    assert at.dataframe[0].value["name"].tolist() == ["served-run"]  # not the planted store's
    with pytest.raises(ReadOnlyError):
        launch(store_root, object(), read_only=True)  # refuses before looking at the spec


@pytest.mark.slow
def test_the_app_process_never_imports_torch(tiny_store):
    """Render every page of the app in a fresh interpreter, then look at sys.modules."""
    script = f"""
import json, sys
from pathlib import Path
from streamlit.testing.v1 import AppTest
rendered, errors = [], {{}}
for page in sorted(Path("pages").glob("*.py")):
    at = AppTest.from_file("app.py", default_timeout={TIMEOUT})  # fresh: no stale widget state
    at.run()
    try:
        at.switch_page(str(page))
    except ValueError:
        continue  # not in the navigation
    at.run()
    rendered.append(page.name)
    if at.exception:
        errors[page.name] = [str(e.value)[:200] for e in at.exception]
# Everything requirements.txt adds over requirements-app.txt: a hosted copy lacks them all.
heavy = sorted(m for m in ("torch", "transformers", "sae_lens", "transformer_lens", "accelerate",
                           "gguf", "safetensors", "sklearn", "tqdm", "tokenizers",
                           "huggingface_hub") if m in sys.modules)
print(json.dumps({{"rendered": rendered, "errors": errors, "heavy": heavy}}))
"""
    env = {"ACTX_STORE": str(tiny_store["root"]), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"runs.py", "new_run.py"} <= set(report["rendered"])
    assert "new_run.py" not in report["errors"] and "runs.py" not in report["errors"]
    assert report["heavy"] == [], report


def test_unreadable_job_records_are_listed_apart_and_never_break_the_page(store_root):
    jobs_dir = store_root / "jobs"
    for name, raw in (
        ("job-20240101-000000-000001", b"garbage{"),
        ("job-20240101-000000-000002", b'{"log_path": "/etc/passwd"}'),
        ("not a job", b"null"),
    ):
        (jobs_dir / name).mkdir(parents=True)
        (jobs_dir / name / "job.json").write_bytes(raw)
    at = new_run_page()
    (box,) = [e for e in at.expander if e.label.startswith("Unreadable job records")]
    assert box.label.startswith("Unreadable job records (3)")
    text = box.text[0].value
    assert "job-20240101-000000-000001: job.json is malformed: not valid JSON" in text
    assert "not a job: the folder name is not a job id" in text
    assert "root:" not in text  # nothing of /etc/passwd
    assert any(c.value == "No jobs yet." for c in at.caption)


def test_settings_are_checked_where_they_are_made_and_errors_are_plain_text(store_root):
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    at.query_params.update({"layers": "20-10", "model_kind": "Embedded"})
    at.switch_page("pages/new_run.py")
    at.run()
    at.button(key="launch").click().run()
    assert not at.exception
    assert "bad layer range '20-10'" in shown(at.error[0]), [e.value for e in at.error]
    assert not (store_root / "jobs").exists() or not any((store_root / "jobs").iterdir())

    at.text_input(key="layers").input("**bold** [x](http://evil)").run()
    at.button(key="launch").click().run()
    assert not at.exception
    message = at.error[0].value
    assert "\\*\\*bold\\*\\*" in message and "\\[x\\]" in message  # Markdown shown as text


def test_a_bad_setting_is_one_line_on_the_page(store_root, monkeypatch):
    monkeypatch.setenv("ACTX_UPLOAD_MB", "lots")
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    at.run()
    at.switch_page("pages/new_run.py").run()
    assert not at.exception
    assert "ACTX_UPLOAD_MB='lots' is not a number" in shown(at.error[0])
    assert not at.button


# -- before launch: what the run will hold; the store box --------------------------------------
def preview(at: AppTest) -> str:
    return shown(next(m for m in at.markdown if "samples" in m.value))


@pytest.mark.slow
def test_the_page_previews_the_dataset_and_the_runs_size(store_root, tiny_models):
    at = new_run_page()
    at.selectbox(key="dataset_pick").set_value("emotions").run()
    data = load_dataset("emotions")
    text = preview(at)
    assert f"{len(data)} samples" in text
    counts = Counter(sample.label for sample in data.samples)
    assert all(f"{label} ({n})" in text for label, n in counts.items())
    pick_model_folder(at, tiny_models["llama"])
    config = json.loads((tiny_models["llama"] / "config.json").read_text())
    n_layers, width = config["num_hidden_layers"], config["hidden_size"]
    at.text_input(key="layers").input("0,-1").run()  # 2 layers, resid_post, last and mean
    size = estimate_run_bytes(len(data), 2, 1, ("last", "mean"), width, "float16")
    assert size == len(data) * 2 * 2 * width * 2
    assert f"about **{_size(size)}** of vectors" in preview(at)
    assert f"2 of {n_layers} layers" in preview(at)
    # A hostile layers value from a link is named as text; nothing breaks.
    at.text_input(key="layers").input("[x](http://evil.example)").run()
    assert not at.exception and "Size: bad layer" in preview(at)
    assert "\\[x\\](http" in " ".join(m.value for m in at.markdown)  # escaped: no link


@pytest.mark.slow
def test_the_store_box_refuses_a_missing_folder_unless_asked_to_create_it(store_root, tmp_path):
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    at.switch_page("pages/runs.py").run()  # AppTest keeps a sidebar value only on a named page
    typo = tmp_path / "stor"
    at.text_input(key="store_box").input(str(typo)).run()
    assert not at.exception
    assert f"'{typo}' does not exist" in shown(at.error[0]) and "Create it" in shown(at.error[0])
    assert not typo.exists()  # nothing was created
    at.switch_page("pages/new_run.py").run()
    assert f"'{typo}' does not exist" in shown(at.error[0]) and not at.button
    assert not typo.exists()
    at.sidebar.checkbox(key="store_create").check().run()
    assert typo.is_dir() and not at.error
    assert "Launch" in [b.label for b in at.button]
