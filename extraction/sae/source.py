"""Where an SAE comes from, what it reads, and whether it fits the model: checked before loading.

An SAE is named three ways (`SaeSettings.sae` / `sae_id`):

* an SAE of the store (`--sae default-sae-smollm2` or an unambiguous prefix): its card says the
  model weights, hook and layer it was trained on;
* a folder in sae-lens's format (`cfg.json` + `sae_weights.safetensors`), e.g. an SAE copied out
  of another store or saved by sae-lens;
* a sae-lens pretrained release and an id in it (`--sae gemma-scope-2-270m-pt-res --sae-id
  layer_12_width_16k_l0_medium`): resolved through sae-lens's own directory of releases, its
  config fetched from Hugging Face (online, or from the local HF cache).

`find_sae` reads only the SAE's config; `check_against_model` then compares its hook and layer
(sae-lens names sites the TransformerLens way, `blocks.12.hook_resid_post`), its width `d_in`,
the model it names and the TransformerLens weight processing it expects with the model's config
and the requested backend, so a mismatch is one clear error before any weights load, never a
silent run that encodes the wrong activations. `load_sae` loads the weights with sae-lens.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from extraction.models import ResolvedModel, file_sha256
from settings.sae import SaeSettings, parse_tl_hook_name
from store import Store, StoreError
from store import layout as store_layout
from store.atomic import read_regular
from store.saes import CFG_MAX_BYTES, SaeCard

# The TransformerLens weight processing options that change the residual stream's basis.
_BASIS_OPTIONS = ("center_writing_weights",)


class SaeError(ValueError):
    """The SAE cannot be found, read or used with this model; the message says which and why."""


@dataclass(frozen=True)
class SaeSource:
    """An SAE found and its config read (no weights loaded)."""

    kind: str  # store | folder | release
    name: str  # the store SAE id, the folder's name, or the release
    sae_id: str  # the store SAE id, the folder's name, or the id within the release
    folder: Path | None
    cfg: dict[str, Any]
    hook: str
    layer: int
    d_in: int
    d_sae: int
    architecture: str
    processing: str  # the TransformerLens processing its activations had: none | default
    model_name: str | None  # the model it says it was trained on
    card: SaeCard | None  # for SAEs this tool trained

    @property
    def hook_name(self) -> str:
        return f"blocks.{self.layer}.hook_{self.hook}"

    def sha256(self) -> str:
        if self.folder is None:
            return f"hub:{self.name}/{self.sae_id}"
        return file_sha256(self.folder / store_layout.SAE_WEIGHTS)


def _meta(cfg: dict, key: str) -> Any:
    metadata = cfg.get("metadata")
    if isinstance(metadata, dict) and metadata.get(key) is not None:
        return metadata[key]
    return cfg.get(key)


def _from_cfg(kind: str, name: str, sae_id: str, folder: Path | None, cfg: object,
              card: SaeCard | None) -> SaeSource:  # fmt: skip
    """A SaeSource from a sae-lens config dict, every field checked (SaeError naming it)."""
    what = f"SAE {name!r}" if kind != "release" else f"SAE {name}/{sae_id}"
    if not isinstance(cfg, dict):
        raise SaeError(f"{what}: its cfg.json is not a JSON object")
    d_in, d_sae = cfg.get("d_in"), cfg.get("d_sae")
    for key, value in (("d_in", d_in), ("d_sae", d_sae)):
        if type(value) is not int or value < 1:
            raise SaeError(f"{what}: its config has no usable {key} ({str(value)[:40]})")
    try:
        hook, layer = parse_tl_hook_name(_meta(cfg, "hook_name"))
    except ValueError as exc:
        raise SaeError(f"{what}: {exc}") from None
    kwargs = _meta(cfg, "model_from_pretrained_kwargs")
    kwargs = kwargs if isinstance(kwargs, dict) else {}
    processing = "default" if any(kwargs.get(option) for option in _BASIS_OPTIONS) else "none"
    model_name = _meta(cfg, "model_name")
    return SaeSource(
        kind, name, sae_id, folder, cfg, hook, layer, d_in, d_sae,
        str(cfg.get("architecture", "standard")), processing,
        model_name if isinstance(model_name, str) else None, card,
    )  # fmt: skip


def _folder_cfg(folder: Path) -> dict:
    from sae_lens.loading.pretrained_sae_loaders import handle_config_defaulting

    try:
        cfg = json.loads(read_regular(folder / store_layout.SAE_CFG, CFG_MAX_BYTES))
    except FileNotFoundError:
        raise SaeError(f"SAE folder {folder.name!r} has no {store_layout.SAE_CFG}") from None
    except (OSError, ValueError, RecursionError) as exc:
        raise SaeError(f"SAE folder {folder.name!r}: cfg.json cannot be read ({exc})") from None
    if not isinstance(cfg, dict):
        raise SaeError(f"SAE folder {folder.name!r}: cfg.json is not a JSON object")
    try:
        return handle_config_defaulting(cfg)
    except Exception as exc:  # noqa: BLE001 - a planted cfg.json may break it in any way
        raise SaeError(
            f"SAE folder {folder.name!r}: sae-lens cannot read its cfg.json ({exc})"
        ) from None


def _release_cfg(release: str, sae_id: str) -> dict:
    """The config of a pretrained SAE through sae-lens's own directory (and the network)."""
    from sae_lens.loading.pretrained_sae_loaders import load_sae_config_from_huggingface
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    directory = get_pretrained_saes_directory()
    if release not in directory:
        near = sorted(r for r in directory if release.lower()[:6] in r.lower())[:5]
        hint = f" (similar: {', '.join(near)})" if near else ""
        raise SaeError(
            f"unknown sae-lens release {release!r}{hint}: see sae-lens's pretrained SAEs list"
        )
    ids = directory[release].saes_map
    if sae_id not in ids:
        shown = ", ".join(list(ids)[:5]) + (", ..." if len(ids) > 5 else "")
        raise SaeError(f"release {release!r} has no SAE id {sae_id!r}; its ids: {shown}")
    try:
        return load_sae_config_from_huggingface(release, sae_id)
    except Exception as exc:  # noqa: BLE001 - hub errors come in many types; one line for all
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise SaeError(
            f"cannot fetch SAE {release}/{sae_id} from Hugging Face (repo "
            f"{directory[release].repo_id}): {type(exc).__name__}: {reason}. Pretrained SAE "
            "releases need the network, or their files in the local Hugging Face cache"
        ) from None


def find_sae(settings: SaeSettings, store: Store) -> SaeSource:
    """The SAE that `settings` name, with its config read (no weights)."""
    if settings.sae_id is not None:
        cfg = _release_cfg(settings.sae, settings.sae_id)
        return _from_cfg("release", settings.sae, settings.sae_id, None, cfg, None)
    folder = Path(settings.sae).expanduser()
    if folder.is_dir():
        card = None
        try:  # a folder copied out of a store keeps its card: use what it says
            card = SaeCard.from_dict(
                json.loads(read_regular(store_layout.manifest_path(folder), CFG_MAX_BYTES))
            )
        except (OSError, ValueError, TypeError, RecursionError):
            card = None
        name = folder.resolve().name
        return _from_cfg("folder", name, name, folder, _folder_cfg(folder), card)
    try:
        card = store.saes.card(settings.sae)
    except StoreError as exc:
        if "damaged" in str(exc) or "ambiguous" in str(exc):
            raise SaeError(str(exc)) from None
        raise SaeError(
            f"SAE {settings.sae!r} not found: give a folder with cfg.json, an SAE id of this "
            f"store ({', '.join(c.sae_id for c in store.saes.list()[:5]) or 'it has none'}), "
            "or a sae-lens release with --sae-id"
        ) from None
    folder = store.saes.folder(card.sae_id)
    return _from_cfg("store", card.sae_id, card.sae_id, folder, _folder_cfg(folder), card)


def _official(name: str) -> str | None:
    """TransformerLens's official Hugging Face name for a model name or alias, if it knows it."""
    from transformer_lens.loading_from_pretrained import get_official_model_name

    try:
        return get_official_model_name(name).lower()
    except ValueError:
        return name.lower() if name.count("/") == 1 else None


def check_against_model(
    source: SaeSource,
    model: ResolvedModel,
    n_layers: int,
    d_model: int,
    backend: str,
    tl_processing: str,
) -> None:
    """Refuse (SaeError, one line) an SAE whose layer, width, model or basis do not fit."""
    what = f"SAE {source.name}" + (f"/{source.sae_id}" if source.kind == "release" else "")
    if source.layer >= n_layers:
        raise SaeError(
            f"{what} reads {source.hook_name}, but model {model.name!r} has layers "
            f"0..{n_layers - 1}"
        )
    if source.d_in != d_model:
        raise SaeError(
            f"{what} reads vectors of width {source.d_in} ({source.hook_name}), but model "
            f"{model.name!r} has d_model {d_model}"
        )
    card = source.card
    if card is not None and card.weights_sha256 and card.weights_sha256 != model.weights_sha256:
        raise SaeError(
            f"{what} was trained on model {card.model!r} (weights {card.weights_sha256[:12]}), "
            f"not on {model.name!r} (weights {model.weights_sha256[:12]})"
        )
    if card is None and source.model_name:
        ours = model.embedded.tl_name if model.embedded and model.embedded.tl_name else model.name
        theirs, mine = _official(source.model_name), _official(ours)
        if theirs and mine and theirs != mine:
            raise SaeError(f"{what} was trained on model {source.model_name!r}, not {model.name!r}")
    used = tl_processing if backend == "transformer_lens" else "none"
    if source.processing != used:
        fix = (
            "--backend transformer_lens --tl-processing default"
            if source.processing == "default"
            else "--backend hf (or --tl-processing none)"
        )
        raise SaeError(
            f"{what} was trained on activations with TransformerLens weight processing "
            f"{source.processing!r}, and this run would give {used!r} (another residual "
            f"basis); rerun with {fix}"
        )


def load_sae(source: SaeSource, device: str):
    """The SAE's weights through sae-lens's own loaders, on `device`, in eval mode."""
    from sae_lens import SAE

    try:
        if source.kind == "release":
            sae = SAE.from_pretrained(source.name, source.sae_id, device=device)
        else:
            sae = SAE.load_from_disk(str(source.folder), device=device)
    except Exception as exc:  # noqa: BLE001 - untrusted weights fail in many ways; one line
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise SaeError(f"cannot load SAE {source.name!r}: {reason}") from None
    if sae.cfg.d_in != source.d_in or sae.cfg.d_sae != source.d_sae:
        raise SaeError(f"SAE {source.name!r}: its weights do not match its config")
    return sae.eval()
