"""ui.context on its own: Markdown escaping, server paths hidden in read-only mode, and the one
hashable store view that every cached read is keyed by."""

from __future__ import annotations

import re

import pytest

from tests.support.synthetic import label_rows, write_run
from ui.compute import run_summaries
from ui.context import StoreView, plain, public_manifest, public_text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[session expired](http://evil)", "\\[session expired\\](http\\://\u200bevil)"),
        ("**bold** _it_ `code` $x$ :red[x] <b>", "\\*\\*bold\\*\\* \\_it\\_ \\`code\\` \\$x\\$ "
         "\\:red\\[x\\] \\<b\\>"),
        ("# title", "\\# title"),
        ("- item", "\\- item"),
        ("12. item", "12\\. item"),
        ("see www.evil.com or me@evil.com", "see www\u200b.evil.com or me@\u200bevil.com"),
        ("two\nlines", "two lines"),
        ("a/b, 3 - 2 (ok)", "a/b, 3 - 2 (ok)"),
    ],
)  # fmt: skip
def test_plain_shows_markdown_as_written(text, expected):
    assert plain(text) == expected


def test_public_text_cuts_server_paths_only_in_read_only_mode(monkeypatch):
    text = "no committed run 'x' in /srv/data/my-store (see ~/.cache/models/llama and a/b)"
    monkeypatch.setenv("ACTX_READ_ONLY", "0")
    assert public_text(text) == text
    monkeypatch.setenv("ACTX_READ_ONLY", "1")
    assert public_text(text) == "no committed run 'x' in my-store (see llama and a/b)"
    assert public_text("http://example.org/x") == "http://example.org/x"
    assert public_text("store '/srv/st/'") == "store 'st'"


def test_public_manifest_names_models_and_files_not_paths(monkeypatch):
    manifest = {
        "model": "/home/me/models/tiny-llama", "model_source": "/home/me/models/tiny-llama",
        "dataset_name": "emotions", "n_layers": 4,
        "extra": {"dataset_path": "/srv/data/emotions.jsonl", "list": ["/a/b/c", "plain"]},
    }  # fmt: skip
    monkeypatch.setenv("ACTX_READ_ONLY", "0")
    assert public_manifest(manifest) == manifest
    monkeypatch.setenv("ACTX_READ_ONLY", "1")
    shown = public_manifest(manifest)
    assert shown["model"] == shown["model_source"] == "tiny-llama"
    assert shown["extra"] == {"dataset_path": "emotions.jsonl", "list": ["c", "plain"]}
    assert shown["n_layers"] == 4 and manifest["extra"]["dataset_path"].startswith("/")
    hub = public_manifest({"model": "smollm2-135m", "model_source": "HuggingFaceTB/SmolLM2"})
    assert hub["model_source"] == "HuggingFaceTB/SmolLM2"  # a hub id is not a path
    assert not re.search(r"(^|\s)/", str(shown))


def test_the_store_view_is_the_cache_key(tmp_path, monkeypatch):
    monkeypatch.delenv("ACTX_READ_ONLY", raising=False)
    root = tmp_path / "store"
    write_run(root, "first", label_rows(["a", "b"], 3))
    before = StoreView(str(root), ("first",))
    assert hash(before) == hash(StoreView(str(root), ("first",)))
    assert run_summaries(before).frame["run_id"].tolist() == ["first"]
    write_run(root, "second", label_rows(["a", "b"], 3))
    # The same view is served from the cache; the next rerun's view sees the new run.
    assert run_summaries(before).frame["run_id"].tolist() == ["first"]
    after = StoreView(str(root), tuple(before.store.run_ids()))
    assert after != before
    assert sorted(run_summaries(after).frame["run_id"]) == ["first", "second"]
    assert before.name == "store"
