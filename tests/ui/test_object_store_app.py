"""The app reading a store on object storage (`ACTX_STORE=s3://...`, moto's server), hosted
read-only: every page draws from the mirrored runs, a visitor sees neither the cache folder nor the
endpoint, hostile URL values are dropped with a warning, and a planted run is listed as damaged.
"""

from __future__ import annotations

import secrets

import pytest

from tests.jobs.helpers import wait_for
from tests.support.tiny import emotion_rows, write_jsonl
from tests.ui.apptest import PAGES, messages, open_page, page_text, shown
from tests.ui.test_hosting import offers_a_way_to_write

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def s3_app_store(s3_server, tiny_models, tmp_path_factory) -> dict:
    from extraction.runner import execute
    from settings.run import RunSettings

    uri = f"s3://{s3_server.bucket}/app-{secrets.token_hex(4)}"
    data = write_jsonl(tmp_path_factory.mktemp("s3-app") / "emo.jsonl", emotion_rows(3))
    runs = []
    for name in ("emo-a", "emo-b"):
        settings = RunSettings(model=str(tiny_models["llama"]), dataset=str(data), name=name,
                               hooks=("resid_post",), positions=("last", "mean"))  # fmt: skip
        runs.append(execute(settings, uri, progress=False).run_id)
    return {"uri": uri, "run_ids": runs}


@pytest.fixture
def hosted(s3_app_store, s3_server, secrets_file, monkeypatch) -> dict:
    monkeypatch.setenv("ACTX_STORE", s3_app_store["uri"])
    monkeypatch.setenv("ACTX_READ_ONLY", "1")
    return s3_app_store


def test_every_page_reads_the_s3_store_read_only_without_server_details(hosted, s3_server):
    hidden = [str(s3_server.cache), s3_server.endpoint, "127.0.0.1", "mirror"]
    for page in PAGES:
        at = open_page(page)
        text = page_text(at) + " ".join(str(v) for df in at.dataframe
                                        for v in df.value.to_numpy().ravel())  # fmt: skip
        assert not [h for h in hidden if h in text], page
        assert not offers_a_way_to_write(at), page
    at = open_page("pages/runs.py")
    assert sorted(at.dataframe[0].value["run_id"]) == sorted(hosted["run_ids"])
    prefix = hosted["uri"].rsplit("/", 1)[-1]
    assert prefix in at.sidebar.caption[0].value.replace("\\", "")  # the store by its name


@pytest.mark.parametrize(
    "value", ["../../etc/passwd", "[expired](http://evil.example)", "z" * 5000]
)
def test_a_hostile_run_in_the_url_is_dropped_with_a_warning(hosted, value):
    at = open_page("pages/runs.py", {"run": value})
    assert len(at.dataframe[0].value) == 2
    said = messages(at)
    assert "which this store does not have" in shown(said)
    assert "](http://evil" not in said and len(said) < 2000  # plain text, cut short


def test_a_planted_run_on_the_server_is_listed_as_damaged(hosted, s3_server):
    s3_server.put(hosted["uri"], "runs/planted/_COMMITTED", b"x")
    s3_server.put(hosted["uri"], "runs/planted/manifest.json", b"{ not json")
    try:  # the shared store lists the server again within store.fs.SYNC_INTERVAL_S
        at = wait_for(lambda: (a := open_page("pages/runs.py")) and "damaged" in messages(a) and a,
                      timeout=60, what="the planted run listed")  # fmt: skip
        folders = [f for df in at.dataframe if "folder" in df.value for f in df.value["folder"]]
        assert folders == ["runs/planted"]
        assert sorted(at.dataframe[0].value["run_id"]) == sorted(hosted["run_ids"])
    finally:
        s3_server.delete(hosted["uri"], "runs/planted/_COMMITTED")
        s3_server.delete(hosted["uri"], "runs/planted/manifest.json")


def test_new_run_on_an_s3_store_points_to_the_command_line(s3_app_store, secrets_file, monkeypatch):
    monkeypatch.setenv("ACTX_STORE", s3_app_store["uri"])
    at = open_page("pages/new_run.py")
    assert "command line" in at.info[0].value
    assert not at.button and not at.get("file_uploader")  # nothing that would start a job


def test_an_unreachable_bucket_is_one_error_naming_only_the_store(s3_server, secrets_file,
                                                                    monkeypatch):  # fmt: skip
    monkeypatch.setenv("ACTX_STORE", "s3://no-such-bucket-actx/hosted-store")
    monkeypatch.setenv("ACTX_READ_ONLY", "1")
    at = open_page("pages/runs.py")
    (error,) = at.error
    assert "hosted-store" in shown(error.value) and "does not exist" in error.value
    assert "no-such-bucket-actx" not in error.value


@pytest.fixture(scope="module")
def s3_paired_store(s3_server, tiny_models, tmp_path_factory) -> dict:
    """A paired run and its vector set on the server (no readout: kept in local stores only)."""
    from extraction.control import compute_vector_set
    from extraction.runner import execute
    from settings.run import RunSettings
    from settings.vectors import VectorSettings
    from tests.support.tiny import pair_rows

    uri = f"s3://{s3_server.bucket}/pairs-{secrets.token_hex(4)}"
    data = write_jsonl(tmp_path_factory.mktemp("s3-pairs") / "pairs.jsonl", pair_rows(6))
    settings = RunSettings(model=str(tiny_models["llama"]), dataset=str(data), name="pairs",
                           hooks=("resid_post",), positions=("last",))  # fmt: skip
    run_id = execute(settings, uri, progress=False).run_id
    set_id, made = compute_vector_set(uri, VectorSettings(run=run_id))
    assert made
    return {"uri": uri, "run_id": run_id, "set_id": set_id}


@pytest.mark.parametrize("hosted_mode", [True, False], ids=["read-only", "writable"])
def test_vectors_and_steering_read_an_s3_vector_set_and_start_nothing(
    s3_paired_store, s3_server, secrets_file, monkeypatch, hosted_mode
):
    monkeypatch.setenv("ACTX_STORE", s3_paired_store["uri"])
    if hosted_mode:
        monkeypatch.setenv("ACTX_READ_ONLY", "1")
    else:
        monkeypatch.delenv("ACTX_READ_ONLY", raising=False)
    at = open_page("pages/vectors.py")
    assert at.query_params["set"] == s3_paired_store["set_id"]
    assert not [w for w in at.text_input if w.key != "store_box"]  # no form (the sidebar's box)
    assert not [b for b in at.button if b.label == "Compute"]
    said = shown(messages(at))
    assert "kept in local stores only" in said  # no readout: words say why, no traceback
    assert hosted_mode or "compute vector sets into it from the command line" in said
    hidden = [str(s3_server.cache), s3_server.endpoint, "mirror"]
    assert not [h for h in hidden if h in page_text(at)]
    at = open_page("pages/steering.py", {"strength": "0.5"})
    assert "it starts no steering worker" in messages(at) and not at.button
    assert "python -m extraction steer" in at.code[0].value
