"""Where things live inside a store directory. Nothing outside `store/` builds these paths.

    STORE/
      runs/<run_id>/
        config.json          what was asked for; written first, used by --resume
        samples.parquet      one row per sample (sample_idx, id, text, label, ..., n_tokens)
        tokens/part-*.parquet  token ids and text per position (only for `all` positions)
        answers/part-*.parquet generated answers (only for `--generate` runs; merged into
                             samples.parquet at commit, kept as the record --resume reads)
        vectors/part-*.parquet one row per (sample, hook, layer, position[, token])
        progress.json        samples done so far (for live progress; not part of the result)
        summaries/           label sums and a fixed subsample, written at commit (store.summaries)
          labels.parquet  subsample.parquet  summary.json (written last)
        manifest.json        provenance, written at commit
        _COMMITTED           commit marker, written last: a run without it is invisible
      saes/<sae_id>/         an SAE this tool trained, in sae-lens's on-disk format
        cfg.json  sae_weights.safetensors   what sae-lens's SAE.load_from_disk reads
        manifest.json        the SAE's card: provenance and quality (explained variance, L0,
                             dead features)
        _COMMITTED           commit marker, written last
      features/<feature_run_id>/   SAE features of a dataset (python -m extraction sae)
        source.<ext>         the dataset file as given (JSON export writes it back)
        samples.parquet      one row per record (where it sits, label, status, token counts)
        topk/part-*.parquet  one row per kept position: top-K feature ids and activations
        tokens/part-*.parquet  token ids and text per position
        manifest.json        provenance, written at commit
        _COMMITTED           commit marker, written last
      vector_sets/<set_id>/  control vectors computed from a paired run (store.vectorsets)
        manifest.json  vectors.parquet  _COMMITTED
      readouts/<key>/        one model's final norm and unembedding, for reading directions as
        manifest.json  unembedding.parquet  _COMMITTED     tokens (store.readouts); key: weights
      jobs/                  the app's job registry: laid out by jobs.paths, not here
      uploads/<sha>-<name>   datasets uploaded through the app (jobs.paths, jobs.uploads)

Part files are written to a temporary name and renamed, so a part is either whole or absent.
Readers take only names of the exact form `part-NNNNN.parquet`: a sync tool's conflict copy
(`part-00000 (1).parquet`) or a half-written `.part-00000.parquet.tmp` is never read twice over.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath, PureWindowsPath

from settings.run import validate_run_id

COMMIT_MARKER = "_COMMITTED"
FENCE_FILE = "parts_fence.json"
PART_GLOB = "part-*.parquet"
PART_NAME = re.compile(r"part-\d{5,9}\.parquet")
# A manifest is a few KiB; the cap keeps a planted 1 GB "manifest" from being read into memory.
MANIFEST_MAX_BYTES = 4 * 1024 * 1024


def runs_dir(root: Path) -> Path:
    return root / "runs"


def run_dir(root: Path, run_id: str) -> Path:
    return runs_dir(root) / validate_run_id(run_id)


def manifest_path(run: Path) -> Path:
    return run / "manifest.json"


def config_path(run: Path) -> Path:
    return run / "config.json"


def samples_path(run: Path) -> Path:
    return run / "samples.parquet"


def progress_path(run: Path) -> Path:
    return run / "progress.json"


def fence_path(run: Path) -> Path:
    """An uncommitted run's reservation of part numbers for its parts-only writers (see
    store.writer, "Several writers of one run"); never read by readers."""
    return run / FENCE_FILE


def marker_path(run: Path) -> Path:
    return run / COMMIT_MARKER


def vectors_dir(run: Path) -> Path:
    return run / "vectors"


def tokens_dir(run: Path) -> Path:
    return run / "tokens"


def answers_dir(run: Path) -> Path:
    return run / "answers"


def summaries_dir(run: Path) -> Path:
    return run / "summaries"


def summary_path(run: Path) -> Path:
    return summaries_dir(run) / "summary.json"


def label_sums_path(run: Path) -> Path:
    return summaries_dir(run) / "labels.parquet"


def subsample_path(run: Path) -> Path:
    return summaries_dir(run) / "subsample.parquet"


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def part_files(folder: Path) -> list[Path]:
    """The part files of a `vectors/` or `tokens/` folder, in write order."""
    return sorted(p for p in folder.glob(PART_GLOB) if PART_NAME.fullmatch(p.name))


def is_committed(run: Path) -> bool:
    return marker_path(run).is_file()


# -- SAEs and feature runs (issue 12) ---------------------------------------------------------
SAE_CFG = "cfg.json"  # sae-lens's names (sae_lens.constants), fixed by its on-disk format
SAE_WEIGHTS = "sae_weights.safetensors"
SAE_PROMOTED = "promoted_tokens.parquet"  # ours: the tokens each decoder direction promotes


ENTRY_FOLDERS = ("runs", "saes", "features")  # committed kinds: <folder>/<id>/ + _COMMITTED


def entry_dir(root: Path, folder: str, entry_id: str) -> Path:
    """`root/<folder>/<id>` for a run, an SAE or a feature run (ValueError for anything else)."""
    if folder not in ENTRY_FOLDERS:
        raise ValueError(f"unknown store folder {folder!r:.40}")
    return root / folder / validate_run_id(entry_id)


def saes_dir(root: Path) -> Path:
    return root / "saes"


def sae_dir(root: Path, sae_id: str) -> Path:
    return entry_dir(root, "saes", sae_id)


def features_dir(root: Path) -> Path:
    return root / "features"


def feature_run_dir(root: Path, feature_run_id: str) -> Path:
    return entry_dir(root, "features", feature_run_id)


def topk_dir(feature_run: Path) -> Path:
    return feature_run / "topk"


def source_path(feature_run: Path, suffix: str) -> Path:
    return feature_run / f"source{suffix}"


def is_absolute(text: str) -> bool:
    return text.startswith(("/", "~")) or PureWindowsPath(text).is_absolute()


def public_path(text: str) -> str:
    """An absolute path cut to its last component (`/srv/data/x.jsonl` -> `x.jsonl`): how a
    published store (a snapshot, the query views) names a model folder or a dataset file."""
    if not is_absolute(text):
        return text
    name = (PureWindowsPath if "\\" in text else PurePosixPath)(text).name
    return name or text.strip("/\\~") or "?"


# -- vector sets and model readouts: folders with a manifest and a commit marker, like runs -------
def vector_sets_dir(root: Path) -> Path:
    return root / "vector_sets"


def vector_set_dir(root: Path, set_id: str) -> Path:
    return vector_sets_dir(root) / validate_run_id(set_id)


def vector_set_file(folder: Path) -> Path:
    return folder / "vectors.parquet"


def readouts_dir(root: Path) -> Path:
    return root / "readouts"


def readout_dir(root: Path, key: str) -> Path:
    return readouts_dir(root) / validate_readout_key(key)


def unembedding_file(folder: Path) -> Path:
    return folder / "unembedding.parquet"


_READOUT_KEY = re.compile(r"[0-9a-f]{64}")


def validate_readout_key(key: object) -> str:
    """A readout folder name: 64 lowercase hex digits (a weights hash, see store.readouts)."""
    if not isinstance(key, str) or not _READOUT_KEY.fullmatch(key):
        shown = key[:80] if isinstance(key, str) else key
        raise ValueError(f"readout key {shown!r} is not 64 lowercase hex digits")
    return key
