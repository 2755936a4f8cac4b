"""Model names: the GGUF conversion of the embedded models (on a tiny GGUF), and Hugging Face ids
that are cached, offline, unreachable or unknown (no real network: a fake cache and local
endpoints)."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import torch

from extraction.models import (
    COMPLETE_MARKER,
    EMBEDDED,
    EmbeddedModel,
    ModelError,
    ensure_converted,
    resolve,
)
from tests.support.tiny import tiny_gguf, tiny_model_dir


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory):
    return tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


def test_conversion_rebuilds_a_half_written_cache_and_keeps_the_weights(
    tmp_path, gguf_file, monkeypatch
):
    """An embedded model converts once into ACTX_MODEL_CACHE; a killed conversion is rebuilt; and
    what the fast conversion writes equals what transformers itself reads from the GGUF."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = EmbeddedModel("tiny-gguf", "tiny", None, lambda _cache: gguf_file, "test")
    monkeypatch.setitem(EMBEDDED, model.name, model)
    cache = tmp_path / "cache"
    monkeypatch.setenv("ACTX_MODEL_CACHE", str(cache))
    (cache / "tiny-gguf").mkdir(parents=True)
    (cache / "tiny-gguf" / "config.json").write_text("{ half written")  # a killed conversion
    resolved = resolve("tiny-gguf")
    folder = cache / "tiny-gguf"
    assert resolved.source == str(folder)
    marker = json.loads((folder / COMPLETE_MARKER).read_text())
    assert marker["gguf"] == "tiny.gguf" and resolved.weights_sha256 == marker["gguf_sha256"]
    assert ensure_converted(model, cache) == folder  # complete: used as is

    converted = AutoModelForCausalLM.from_pretrained(folder).state_dict()
    reference = AutoModelForCausalLM.from_pretrained(
        str(gguf_file.parent), gguf_file=gguf_file.name
    ).state_dict()
    assert converted.keys() == reference.keys()
    for name, tensor in reference.items():
        assert torch.equal(converted[name], tensor), name
    ours = AutoTokenizer.from_pretrained(folder)
    theirs = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
    assert ours.get_vocab() == theirs.get_vocab()
    for text in ("the theme", "Thé tea!", ""):
        assert ours(text)["input_ids"] == theirs(text)["input_ids"]


# -- Hugging Face ids -----------------------------------------------------------------------------
@pytest.fixture
def hub(monkeypatch, tmp_path):
    """An empty Hugging Face cache, online mode, and the hub at a local address (set per test)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return constants


def cache_model(cache_root, repo_id: str, model_dir) -> None:
    """Put a model folder into a Hugging Face cache the way a download leaves it."""
    repo = cache_root / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for file in model_dir.iterdir():
        (snapshot / file.name).write_bytes(file.read_bytes())


def test_a_cached_hub_id_loads_from_the_cache_without_the_network(hub, monkeypatch, tmp_path):
    from pathlib import Path

    cache_model(Path(hub.HF_HUB_CACHE), "someone/tiny", tiny_model_dir("llama", tmp_path / "m"))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    resolved = resolve("someone/tiny")
    assert resolved.source.startswith(hub.HF_HUB_CACHE) and "snapshots" in resolved.source
    assert len(resolved.weights_sha256) == 64  # the cached weights' hash, not just the id


def test_a_known_weights_hash_is_taken_instead_of_reading_the_weights(hub, monkeypatch, tmp_path):
    """A Ray worker gets its driver's hash: the same folder and source, the weights not hashed."""
    from pathlib import Path

    folder = tiny_model_dir("llama", tmp_path / "m")
    cache_model(Path(hub.HF_HUB_CACHE), "someone/tiny", folder)
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    for name in (str(folder), "someone/tiny"):
        hashed = resolve(name)
        given = resolve(name, weights_sha256="f" * 64)
        assert len(hashed.weights_sha256) == 64 and hashed.weights_sha256 != "f" * 64
        assert given.weights_sha256 == "f" * 64 and given.source == hashed.source


def test_an_uncached_hub_id_offline_is_one_cli_error_at_once(hub, monkeypatch, tmp_path, capsys):
    from extraction.__main__ import main

    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    store = tmp_path / "store"
    assert main(["run", "--model", "someone/not-here", "--dataset", "emotions",
                 "--store", str(store)]) == 2  # fmt: skip
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: model 'someone/not-here' is not a local folder")
    assert "HF_HUB_OFFLINE is set" in line and hub.HF_HUB_CACHE in line
    assert not store.exists()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when the block ends: connections are refused


def test_an_unreachable_hub_is_one_error_without_retries(hub, monkeypatch):
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setattr(hub, "ENDPOINT", endpoint)
    started = time.monotonic()
    with pytest.raises(ModelError, match=f"the hub at {endpoint} cannot be reached"):
        resolve("someone/not-here")
    # huggingface_hub's own retries sleep 1+2+4+8+8 s on a refused connection; we ask once.
    assert time.monotonic() - started < 10


class _Hub(BaseHTTPRequestHandler):
    known = "someone/there"

    def do_GET(self):  # noqa: N802 - http.server's name
        found = self.path.startswith(f"/api/models/{self.known}")
        body = json.dumps({"id": self.known, "sha": "0" * 40} if found else {"error": "nope"})
        self.send_response(200 if found else 404)
        self.send_header("Content-Type", "application/json")
        if not found:
            self.send_header("X-Error-Code", "RepoNotFound")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):  # quiet
        pass


def test_a_reachable_hub_is_asked_once_and_unknown_ids_say_so(hub, monkeypatch):
    server = HTTPServer(("127.0.0.1", 0), _Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_port}"
        monkeypatch.setattr(hub, "ENDPOINT", endpoint)
        with pytest.raises(ModelError, match=f"the hub at {endpoint} has no such model"):
            resolve("someone/not-here")
        online = resolve("someone/there")  # left to transformers to download, as before
        assert (online.source, online.weights_sha256) == ("someone/there", "hub:someone/there")
    finally:
        server.shutdown()
        server.server_close()
