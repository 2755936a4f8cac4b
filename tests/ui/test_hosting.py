"""Hosting a store for visitors (AppTest): read-only mode fails closed in the sidebar and on every
page, no absolute server path or traceback reaches a visitor, and text from a URL is shown as
text, never as Markdown. Secrets files are written only under tmp_path (see `secrets_file`).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
from streamlit import config
from streamlit.testing.v1 import AppTest

from tests.support.synthetic import pair_rows, write_run
from tests.ui.apptest import PAGES, REPO, TIMEOUT, chart, messages, open_page, page_text, shown

# (environment value of ACTX_READ_ONLY or None, secrets.toml text or None)
READ_ONLY_CONFIGS = {
    "env empty": ("", None),
    "env enabled": ("enabled", None),
    "env yes": ("yes", None),
    "secrets true": (None, "read_only = true\n"),
    "secrets unparsable": (None, "read_only = false\nread_only = false\n"),  # duplicated key
    "env 0 but secrets true": ("0", "ACTX_READ_ONLY = true\n"),
}


def configure(monkeypatch, secrets_file: Path, value: str | None, secrets: str | None) -> None:
    if value is not None:
        monkeypatch.setenv("ACTX_READ_ONLY", value)
    if secrets is not None:
        secrets_file.write_text(secrets)


def app() -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    return at


def offers_a_way_to_write(at: AppTest) -> list[str]:
    """Widgets a visitor could use to start a run, upload, or point the app elsewhere.

    A text box that only filters what a page shows (Pairs' search) is not one; a text box in the
    sidebar (the store box) or one that names a store, folder or path is."""
    found = [f"text box {t.label!r}" for t in at.sidebar.text_input]
    found += [f"text box {t.label!r}" for t in at.text_input
              if re.search(r"store|folder|path|directory", t.label, re.I)]  # fmt: skip
    found += [f"uploader {u.label!r}" for u in at.get("file_uploader")]
    starts_work = re.compile(r"launch|start|compute|train|steer|generate", re.I)
    found += [f"button {b.label!r}" for b in at.button if starts_work.search(b.label)]
    found += [f"checkbox {c.label!r}" for c in at.checkbox if "create" in c.label.lower()]
    return found


@pytest.mark.parametrize("how", list(READ_ONLY_CONFIGS))
@pytest.mark.slow
def test_every_read_only_configuration_offers_nothing_to_write(
    tiny_env, secrets_file, monkeypatch, how
):
    configure(monkeypatch, secrets_file, *READ_ONLY_CONFIGS[how])
    at = app()
    assert not at.sidebar.text_input  # no store box
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        at.switch_page("pages/new_run.py")  # no New run page in the navigation
    for page in PAGES:
        at = open_page(page)
        assert not offers_a_way_to_write(at), (page, offers_a_way_to_write(at))
        # Not even a link to the New run page (links that open a run elsewhere are fine).
        assert "new_run" not in [link.proto.page for link in at.get("page_link")], page
    # Streamlit's own display of an uncaught exception shows neither type nor trace.
    assert config.get_option("client.showErrorDetails") == "none"


def test_an_explicit_off_leaves_the_app_writable(tiny_env, secrets_file, monkeypatch):
    # The counterpart of the test above: the same checks do see a store box and the New run page.
    configure(monkeypatch, secrets_file, "off", "read_only = false\n")
    at = app()
    assert at.sidebar.text_input
    at.switch_page("pages/new_run.py")
    at.run()
    assert not at.exception
    assert offers_a_way_to_write(at)
    assert config.get_option("client.showErrorDetails") != "none"


def _absolute_paths(tiny_store: dict) -> list[str]:
    """Server paths a read-only visitor must not see: the store's and the models' folders."""
    store = open_store_manifests(tiny_store)
    paths = {str(tiny_store["root"]), str(Path(tiny_store["root"]).parent)}
    for m in store:
        paths |= {m["model"], m["model_source"], str(m["extra"].get("dataset_path", ""))}
    return sorted(p for p in paths if p.startswith("/"))


def open_store_manifests(tiny_store: dict) -> list[dict]:
    runs = Path(tiny_store["root"]) / "runs"
    return [json.loads((runs / r / "manifest.json").read_text()) for r in tiny_store["run_ids"]]


@pytest.mark.slow  # seconds: every page in read-only mode
def test_read_only_pages_name_no_server_path(tiny_env, secrets_file, monkeypatch):
    monkeypatch.setenv("ACTX_READ_ONLY", "1")
    hidden = _absolute_paths(tiny_env)
    assert hidden, "the tiny store's models are folders: there must be paths to hide"
    at = app()
    caption = at.sidebar.caption[0].value
    assert Path(tiny_env["root"]).name in shown(caption) and "/" not in caption
    for page in PAGES:
        text = page_text(open_page(page))
        leaked = [p for p in hidden if p in text]
        assert not leaked, (page, leaked)
    # Every run's provenance: model_source (a folder here) shows the model's name instead, the
    # dataset path its file name.
    at = open_page("pages/runs.py")
    for run_id in tiny_env["run_ids"]:
        at.selectbox(key="run").set_value(run_id).run()
        manifest = json.loads(at.json[0].value)
        assert not [p for p in hidden if p in json.dumps(manifest)], run_id
        assert manifest["model_source"] == manifest["model"] == Path(manifest["model"]).name
        assert manifest["extra"]["dataset_path"].endswith(".jsonl")
        assert "/" not in manifest["extra"]["dataset_path"]
    assert "/" not in "".join(at.dataframe[0].value["model"])


@pytest.mark.slow  # seconds: every page's messages
def test_read_only_messages_name_the_store_by_its_name(synthetic_env, secrets_file, monkeypatch):
    monkeypatch.setenv("ACTX_READ_ONLY", "1")
    synthetic_env.mkdir(parents=True)
    for page in PAGES:
        text = messages(open_page(page))
        assert "read-only store store has no committed runs" in shown(text), page
        assert str(synthetic_env.parent) not in text
    # The command that would make the missing per-token run names the store by name too.
    write_run(synthetic_env, "pairs-no-all", pair_rows(4), dataset_name="minimal_pairs")
    at = open_page("pages/pairs.py")
    command = at.code[0].value
    assert "--store store" in command and str(synthetic_env.parent) not in command
    # Outside read-only mode the operator gets the real path.
    monkeypatch.delenv("ACTX_READ_ONLY")
    assert f"--store {synthetic_env}" in open_page("pages/pairs.py").code[0].value


def _explode(*args, **kwargs):
    raise RuntimeError("boom in /srv/secret/app.py")


@pytest.mark.parametrize("page", PAGES)
def test_an_unexpected_exception_is_one_line_for_a_visitor(
    tiny_env, secrets_file, monkeypatch, caplog, page
):
    monkeypatch.setenv("ACTX_READ_ONLY", "1")
    monkeypatch.setattr("ui.controls.runs_table", _explode)  # the analysis pages' first read
    monkeypatch.setattr("ui.runs_compute.runs_listing", _explode)  # the Runs page's first read
    with caplog.at_level(logging.ERROR, logger="activation_explorer.app"):
        at = open_page(page)
    assert [e.value for e in at.error] == [
        "This view failed: RuntimeError. The details are in the server log."
    ]
    assert "secret" not in page_text(at) and not at.exception
    assert "boom in /srv/secret/app.py" in caplog.text  # the operator still gets the traceback


def test_outside_read_only_mode_the_details_are_one_click_away(tiny_env, secrets_file,
                                                               monkeypatch):  # fmt: skip
    monkeypatch.setattr("ui.controls.runs_table", _explode)
    at = open_page("pages/directions.py", check=False)
    assert at.error[0].value.startswith("This view failed: RuntimeError")
    assert "boom" in at.exception[0].message  # inside a closed "Details" expander


def test_markdown_in_a_url_value_is_shown_as_text(tiny_env):
    at = open_page("pages/pairs.py", {"pair": "[session expired](http://evil.example/login)"})
    (warning,) = [w.value for w in at.warning if "link asks for pair" in w.value]
    # Brackets escaped: no link; and a zero-width space after the scheme stops GFM's autolink.
    assert "\\[session expired\\](http\\://\u200bevil.example/login)" in warning
    assert "[session expired](http" not in warning
    assert not chart(at, "||b - a|| per token").empty  # the default pair is drawn


def test_a_huge_url_value_is_echoed_cut_short(tiny_env):
    # 400 KB in all: Streamlit itself ignores a query string over 512 KiB.
    at = open_page("pages/directions.py", {"baseline": "x" * 100_000, "runs": ["y" * 60_000] * 5})
    assert len(messages(at)) < 3_000
    assert "and 2 more" in messages(at)  # five bad runs: three named, two counted
    assert not chart(at, "L2 norm").empty
