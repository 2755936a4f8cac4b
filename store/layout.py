"""Where things live inside a store directory. Nothing outside `store/` builds these paths.

    STORE/
      runs/<run_id>/
        config.json          what was asked for; written first, used by --resume
        samples.parquet      one row per sample (sample_idx, id, text, label, ..., n_tokens)
        tokens/part-*.parquet  token ids and text per position (only for `all` positions)
        vectors/part-*.parquet one row per (sample, hook, layer, position[, token])
        progress.json        samples done so far (for live progress; not part of the result)
        manifest.json        provenance, written at commit
        _COMMITTED           commit marker, written last: a run without it is invisible
      jobs/                  the app's job registry (see store.jobs)
        .lock                registry lock (fcntl): launches and state changes hold it
        <job_id>/job.json    one job record, rewritten atomically on every state change
        <job_id>/log.txt     stdout and stderr of the job's processes
      uploads/<sha>-<name>   datasets uploaded through the app (content-addressed)

Part files are written to a temporary name and renamed, so a part is either whole or absent.
"""

from __future__ import annotations

from pathlib import Path

from store.manifest import validate_run_id

COMMIT_MARKER = "_COMMITTED"
PART_GLOB = "part-*.parquet"


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


def marker_path(run: Path) -> Path:
    return run / COMMIT_MARKER


def vectors_dir(run: Path) -> Path:
    return run / "vectors"


def tokens_dir(run: Path) -> Path:
    return run / "tokens"


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def is_committed(run: Path) -> bool:
    return marker_path(run).is_file()


def jobs_dir(root: Path) -> Path:
    return root / "jobs"


def jobs_lock_path(root: Path) -> Path:
    return jobs_dir(root) / ".lock"


def job_dir(root: Path, job_id: str) -> Path:
    # Same safe-name rule as run ids: one path component, no '..'.
    return jobs_dir(root) / validate_run_id(job_id)


def job_record_path(job: Path) -> Path:
    return job / "job.json"


def job_log_path(job: Path) -> Path:
    return job / "log.txt"


def uploads_dir(root: Path) -> Path:
    return root / "uploads"
