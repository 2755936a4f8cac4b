"""Load a resolved model into a capture backend (the only place that calls from_pretrained).

Hugging Face ids are passed through untouched: they work where the hub is reachable or the
weights are cached, and fail with a clear ModelError otherwise. TransformerLens is given the
already-loaded Hugging Face model, so it never downloads weights itself; it needs its official
name for architectures it only knows by name (Gemma 3), otherwise the local folder.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import shutil
import sys
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path

import torch

from extraction.capture import Backend, HFBackend, TLBackend
from extraction.models import ModelError, ResolvedModel
from settings.run import DEVICE_MAPS, TL_PROCESSING

# The names are settings.run.TL_PROCESSING; zip(strict) fails at import if the two drift apart.
TL_OPTIONS = dict(
    zip(
        TL_PROCESSING,
        ({}, {"fold_ln": True, "center_writing_weights": True, "center_unembed": True}),
        strict=True,
    )
)


@dataclass
class Loaded:
    backend: Backend
    tokenizer: object
    hf_model: torch.nn.Module


def pick_device(device: str) -> torch.device:
    """`auto` (CUDA when present, else CPU), or a torch device this machine really has.

    Raises ValueError naming the device, so a bad `--device` fails before any weights load.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        target = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if target.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device {device!r}: torch sees no CUDA GPU here; use cpu or auto")
        if target.index is not None and target.index >= count:
            raise ValueError(f"device {device!r}: this machine has {count} CUDA GPU(s)")
    elif target.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r}: MPS is not available here; use cpu or auto")
    return target


def _quiet_transformers() -> None:
    # Our own progress bar reports the run; transformers' per-load bars and info lines would
    # bury it (and a bad-input error must stay the only line on stderr).
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def model_layer_count(resolved: ResolvedModel) -> int:
    """Number of decoder blocks, read from the config alone (no weights)."""
    return model_dims(resolved)[0]


def model_dims(resolved: ResolvedModel) -> tuple[int, int]:
    """(decoder blocks, residual width d_model), read from the config alone (no weights)."""
    from transformers import AutoConfig

    _quiet_transformers()
    try:
        config = AutoConfig.from_pretrained(resolved.source)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read the config of {resolved.name!r}: {exc}") from exc
    config = getattr(config, "text_config", None) or config
    return int(config.num_hidden_layers), int(config.hidden_size)


def load_tokenizer(resolved: ResolvedModel):
    """The model's tokenizer alone (what a Ray run's driver needs: its workers load weights)."""
    from transformers import AutoTokenizer

    _quiet_transformers()
    try:
        return AutoTokenizer.from_pretrained(resolved.source)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load the tokenizer of {resolved.name!r}: {exc}") from exc


MAX_DEVICE_MAP_BYTES = 1024 * 1024
_MAP_DEVICE = re.compile(r"^(cpu|disk|mps|cuda(:\d{1,3})?)$")


def device_map_of(spec: str) -> str | dict[str, int | str]:
    """What `from_pretrained(device_map=...)` gets for `--device-map`: a placement name or a
    device as is, or the {module name: device} object of a .json file (a GPU number, cuda:N,
    cpu, mps or disk). Raises ValueError naming the bad value."""
    if not spec.endswith(".json"):
        return spec
    path = Path(spec)
    try:
        if path.stat().st_size > MAX_DEVICE_MAP_BYTES:
            raise ValueError(f"device map {spec!r} is over {MAX_DEVICE_MAP_BYTES} bytes")
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"device map {spec!r}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"device map {spec!r} is not JSON: {exc}") from None
    if not isinstance(data, dict) or not data:
        raise ValueError(f"device map {spec!r} must be a non-empty object {{module: device}}")
    for module, where in data.items():
        fits = (type(where) is int and 0 <= where < 1024) or (
            isinstance(where, str) and _MAP_DEVICE.match(where)
        )
        if not isinstance(module, str) or len(module) > 500 or not fits:
            raise ValueError(
                f"device map {spec!r}: {str(module)[:80]!r} -> {str(where)[:40]!r} is not a "
                "module name and a device (a GPU number, cuda:N, cpu, mps or disk)"
            )
    return data


def check_placement(device_map: str | None, quantize: str | None) -> None:
    """Refuse a device map or quantisation this machine cannot do, before any weights load."""
    if quantize is not None:
        if not torch.cuda.is_available():
            raise ValueError(f"--quantize {quantize}: bitsandbytes quantisation needs a CUDA "
                             "GPU, and torch sees none here")  # fmt: skip
        if importlib.util.find_spec("bitsandbytes") is None:
            raise ValueError(f"--quantize {quantize} needs bitsandbytes: pip install bitsandbytes")
    if device_map is None:
        return
    placement = device_map_of(device_map)
    wanted = placement.values() if isinstance(placement, dict) else [placement]
    for where in wanted:
        if where == "disk" or where in DEVICE_MAPS:
            continue  # accelerate places these on what it finds (CPU where there is no GPU)
        pick_device(f"cuda:{where}" if type(where) is int else str(where))


def load(
    resolved: ResolvedModel,
    backend: str = "hf",
    device: str = "auto",
    compute_dtype: str = "float32",
    tl_processing: str = "none",
    *,
    device_map: str | None = None,
    quantize: str | None = None,
) -> Loaded:
    """The model on `device`, or spread by accelerate over `device_map` (and quantised by
    bitsandbytes: `quantize`), with its tokenizer, in a capture backend."""
    from transformers import AutoModelForCausalLM

    _quiet_transformers()
    dtype = getattr(torch, compute_dtype)
    target = pick_device(device)
    check_placement(device_map, quantize)
    options = _placement_options(device_map, quantize, dtype)
    try:
        tokenizer = load_tokenizer(resolved)
        hf_model = AutoModelForCausalLM.from_pretrained(resolved.source, dtype=dtype, **options)
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"cannot load model {resolved.name!r} from {resolved.source}: {exc}"
        ) from exc
    if "offload_folder" in options:  # the offloaded weights live as long as the model
        weakref.finalize(hf_model, shutil.rmtree, options["offload_folder"], True)
    if "device_map" not in options:
        hf_model.to(target)
    hf_model.eval()
    if backend == "hf":
        return Loaded(HFBackend(hf_model), tokenizer, hf_model)
    if backend != "transformer_lens":
        raise ModelError(f"unknown backend {backend!r}; choose hf or transformer_lens")
    return Loaded(
        _load_tl(resolved, hf_model, tokenizer, target, dtype, tl_processing), tokenizer, hf_model
    )


def _placement_options(device_map: str | None, quantize: str | None, dtype) -> dict:
    """from_pretrained's keywords for a device map and quantisation (none without either)."""
    options: dict = {}
    if quantize is not None:
        from transformers import BitsAndBytesConfig

        options["quantization_config"] = (
            BitsAndBytesConfig(load_in_8bit=True) if quantize == "8bit"
            else BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=dtype)
        )  # fmt: skip
        options["device_map"] = "auto"
    if device_map is not None:
        placement = device_map_of(device_map)
        options["device_map"] = placement
        if isinstance(placement, dict) and "disk" in placement.values():
            options["offload_folder"] = tempfile.mkdtemp(prefix="actx-offload-")
    return options


def placement_record(hf_model, device_map: str | None, quantize: str | None) -> dict | None:
    """The manifest's record of where the weights were: the device map asked for, modules per
    device as accelerate placed them, and the quantisation (None for a model on one device)."""
    if device_map is None and quantize is None:
        return None
    placed = getattr(hf_model, "hf_device_map", None) or {}
    modules: dict[str, int] = {}
    for where in placed.values():
        modules[str(where)] = modules.get(str(where), 0) + 1
    return {"device_map": device_map, "quantize": quantize, "modules_per_device": modules}


def _neutral_path(source: str) -> str:
    """A link to a local model folder whose path names no architecture.

    TransformerLens picks the architecture of a path by substrings of the path itself ("llama",
    "gemma-3", ...) before reading its config.json, so `/models/llama-tiny` of a GPT-2 would load
    wrongly. A link under a hex-named folder makes it read config.json instead. Hub ids pass as is.
    """
    folder = Path(source)
    if not folder.is_dir():
        return source
    digest = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]
    link_dir = Path(tempfile.gettempdir()) / f"actx-tl-{digest}"
    link_dir.mkdir(exist_ok=True)
    link = link_dir / "m"
    if not link.exists():
        link.symlink_to(folder.resolve(), target_is_directory=True)
    return str(link)


def _load_tl(resolved, hf_model, tokenizer, device, dtype, processing: str) -> TLBackend:
    from transformer_lens import HookedTransformer
    from transformer_lens import loading_from_pretrained as tl_loading

    if processing not in TL_OPTIONS:
        raise ModelError(
            f"unknown TransformerLens processing {processing!r}; choose {', '.join(TL_OPTIONS)}"
        )
    tl_name = resolved.embedded.tl_name if resolved.embedded and resolved.embedded.tl_name else None
    name = tl_name or _neutral_path(resolved.source)
    try:
        cfg = tl_loading.get_pretrained_model_config(
            name, hf_cfg=hf_model.config.to_dict(), device=str(device), dtype=dtype
        )
        model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
        state = tl_loading.get_pretrained_state_dict(name, cfg, hf_model)
    except (NotImplementedError, ValueError, OSError) as exc:
        raise ModelError(f"TransformerLens cannot load {resolved.name!r}: {exc}") from exc
    options = {
        "fold_ln": False,
        "center_writing_weights": False,
        "center_unembed": False,
        "fold_value_biases": False,
        "refactor_factored_attn_matrices": False,
        **TL_OPTIONS[processing],
    }
    _load_in_one_pass(model, state, options)
    model.to(device)
    label = processing_label(processing, str(model.cfg.normalization_type))
    if processing != "none" and "same basis" in label:
        print(
            f"[extraction] note: {resolved.name!r} uses RMSNorm, and TransformerLens centres only "
            "LayerNorm models: --tl-processing default just folds the norm scales into the next "
            "weights, so the activations equal --tl-processing none's up to rounding",
            file=sys.stderr,
            flush=True,
        )
    return TLBackend(model, label)


def _load_in_one_pass(model, state: dict, options: dict) -> None:
    """TransformerLens's `load_and_process_state_dict`, with the processed weights loaded by one
    `load_state_dict` call instead of one call per key.

    TransformerLens 3.9 loads key by key, and each call walks every module of the model: on
    SmolLM2 (574 keys) that is half a million module visits, about 4 s of CPU per load, more
    than the forward passes of a small run. Its processing (norm folding, the norm modules it
    swaps, centring) runs unchanged; only its per-key calls are gathered here, and loaded in one
    call (non-strict, as it does) after it returns: its `setup()` only re-registers hook points,
    which holds no weights, so loading after it gives the same parameters.
    """
    from transformer_lens import HookedTransformer

    gathered: dict = {}
    assigned = []  # its 4-bit path loads with assign=True: keep that

    def gather(part: dict, strict: bool = True, assign: bool = False):
        gathered.update(part)
        assigned.append(assign)

    model.load_state_dict = gather  # an instance attribute: shadows the method for this call
    try:
        model.load_and_process_state_dict(state, **options)
    finally:
        del model.load_state_dict
    HookedTransformer.load_state_dict(model, gathered, strict=False, assign=any(assigned))


def processing_label(processing: str, normalization: str) -> str:
    """What TransformerLens really did to the weights, for the manifest's `weight_processing`.

    `default` asks for fold_ln, center_writing_weights and center_unembed, but TransformerLens
    centres the writing weights of LayerNorm models only (`LN`/`LNPre`): on RMSNorm models
    (`RMS`/`RMSPre`, Llama and Gemma, so both embedded models) it folds the norm scales into the
    following weights and leaves the residual stream in Hugging Face's basis.
    center_unembed changes only W_U, which no hook site reads.
    """
    if processing == "none":
        return "none (raw weights, same basis as Hugging Face)"
    if normalization.startswith("RMS"):
        return (
            "fold_ln and center_unembed; no centring (TransformerLens centres LayerNorm models "
            "only, and this model uses RMSNorm), so the residual stream is in the same basis as "
            "Hugging Face"
        )
    return "fold_ln, center_writing_weights, center_unembed (residual basis differs from HF)"
