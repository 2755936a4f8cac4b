"""`ACTX_*` settings: one table, read from the environment, then `.streamlit/secrets.toml`.

`ENV_SETTINGS` is the only list of them; the README's table is checked against it by a test.
Every reader (the app, the job registry, the extraction CLI) goes through `setting()`.

Read-only mode fails closed (`read_only()`), because a hosted page is only as safe as its worst
configuration: it is on when *any* source turns it on, any value other than an explicit off
(`0`, `false`, `no`, `off`) counts as on (so `ACTX_READ_ONLY=""` and `=enabled` are on), and a
secrets file that exists but cannot be read or parsed counts as on (with one log line for the
operator per broken file). Secrets are parsed here with `tomllib` rather than through
`st.secrets`, so the job layer (no streamlit) decides exactly as the pages do.

Secrets files, as Streamlit looks for them: `~/.streamlit/secrets.toml` and
`./.streamlit/secrets.toml` (the working directory), plus the app folder's
`.streamlit/secrets.toml`, since job workers run elsewhere.
"""

from __future__ import annotations

import logging
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("activation_explorer.settings")

OFF_VALUES = ("0", "false", "no", "off")
APP_ROOT = Path(__file__).resolve().parent.parent
MAX_SECRETS_BYTES = 1 << 20


@dataclass(frozen=True)
class EnvSetting:
    """One `ACTX_*` setting. `secrets_key` is its short name in secrets.toml (besides `name`)."""

    name: str
    default: str
    meaning: str
    secrets_key: str | None = None


ENV_SETTINGS = (
    EnvSetting("ACTX_STORE", "store_data",
               "the store the app opens and run.sh fills: a folder, or a URI (s3://bucket/prefix)"),
    EnvSetting(
        "ACTX_READ_ONLY", "0",
        "hosted mode: no runs, uploads, cancels or store box; on unless 0, false, no or off",
        "read_only",
    ),
    EnvSetting("ACTX_MAX_JOBS", "1", "how many app jobs run at once; later ones queue",
               "max_jobs"),
    EnvSetting("ACTX_UPLOAD_MB", "20", "largest dataset upload in the app, in MiB (2^20 bytes)",
               "upload_mb"),
    EnvSetting("ACTX_QUEUE_HOURS", "24",
               "a queued job whose worker never started expires after this many hours"),
    EnvSetting("ACTX_MODEL_CACHE", "~/.cache/activation-explorer/models",
               "where the embedded models are converted to, once"),
    EnvSetting("ACTX_STORE_CACHE", "~/.cache/activation-explorer/stores",
               "local copies of stores on object storage (s3://...): mirrors and staging"),
    EnvSetting("ACTX_STEER_IDLE_S", "300",
               "seconds the steering worker keeps its model loaded after its last request",
               "steer_idle_s"),
)  # fmt: skip
BY_NAME = {s.name: s for s in ENV_SETTINGS}


def secrets_files() -> list[Path]:
    """Where secrets.toml may be, in Streamlit's order, without duplicates."""
    where = (os.path.expanduser("~"), os.getcwd())
    if where not in _SECRETS_FILES:
        _SECRETS_FILES[where] = _secrets_files()
    return list(_SECRETS_FILES[where])


_SECRETS_FILES: dict[tuple[str, str], list[Path]] = {}  # (home, working folder) -> the files


def _secrets_files() -> list[Path]:
    candidates = [
        Path.home() / ".streamlit" / "secrets.toml",
        Path.cwd() / ".streamlit" / "secrets.toml",
        APP_ROOT / ".streamlit" / "secrets.toml",
    ]
    unique: list[Path] = []
    for path in candidates:
        if path not in unique:
            unique.append(path)
    return unique


_warned: set[tuple[str, str]] = set()


def _warn_once(path: Path, why: str) -> None:
    key = (str(path), why)
    if key not in _warned:
        _warned.add(key)
        log.warning("secrets file %s cannot be used (%s): read-only mode is on", path, why)


def _file_state(path: Path) -> tuple | None:
    """What changes when a file is written, replaced or removed; None if there is none."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:  # unreadable: read_secrets reports it (fails closed)
        return ("error", exc.errno)
    return (info.st_mode, info.st_size, info.st_mtime_ns, info.st_ino, info.st_dev)


_last_read: tuple[tuple, tuple[dict[str, object], bool]] | None = None


def read_secrets() -> tuple[dict[str, object], bool]:
    """(merged top-level values of every secrets file, whether any file exists but is broken).

    Read again only when a file appears, changes or goes (a stat per candidate): the app asks
    for settings and the read-only mode many times per page view.
    """
    global _last_read
    paths = secrets_files()
    state = tuple((str(path), _file_state(path)) for path in paths)
    last = _last_read
    if last is not None and last[0] == state:
        return dict(last[1][0]), last[1][1]
    merged, broken = _read_secrets(paths)
    _last_read = (state, (merged, broken))
    return dict(merged), broken


def _read_secrets(paths: list[Path]) -> tuple[dict[str, object], bool]:
    merged: dict[str, object] = {}
    broken = False
    for path in paths:
        try:
            if not path.exists():
                continue
            if path.stat().st_size > MAX_SECRETS_BYTES:
                raise ValueError(f"larger than {MAX_SECRETS_BYTES} bytes")
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:  # TOMLDecodeError is a ValueError
            _warn_once(path, f"{type(exc).__name__}: {exc}")
            broken = True
            continue
        merged.update(data)
    return merged, broken


def _lookup(spec: EnvSetting, secrets: dict[str, object]) -> object | None:
    if spec.name in os.environ:
        return os.environ[spec.name]
    for key in (spec.name, spec.secrets_key):
        if key and key in secrets:
            return secrets[key]
    return None


Secrets = tuple[dict[str, object], bool]  # what read_secrets returns


def setting(name: str, secrets: Secrets | None = None) -> str:
    """The value of one `ACTX_*` setting: environment, else secrets.toml, else its default.
    secrets: `read_secrets()` as read a moment ago (the app reads it once per view); None: now."""
    spec = BY_NAME[name]
    value = _lookup(spec, (secrets or read_secrets())[0])
    if value is None:
        return spec.default
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def is_off(value: object) -> bool:
    """Only an explicit off is off: `False`, `0`, or the text 0, false, no, off."""
    if isinstance(value, bool):
        return not value
    return str(value).strip().lower() in OFF_VALUES


def read_only(secrets: Secrets | None = None) -> bool:
    """Hosted mode. On when any source says so, when a value is not an explicit off, and when
    a secrets file exists but cannot be read: fails closed. secrets: as for `setting`."""
    spec = BY_NAME["ACTX_READ_ONLY"]
    secrets, broken = secrets or read_secrets()
    if broken:
        return True
    if spec.name in os.environ and not is_off(os.environ[spec.name]):
        return True
    return any(key in secrets and not is_off(secrets[key]) for key in (spec.name, spec.secrets_key))


def positive_number(name: str, kind: type = int) -> int | float:
    """A setting that must be a number > 0; ValueError naming the setting and value otherwise."""
    raw = setting(name)
    try:
        value = kind(raw)
    except ValueError:
        raise ValueError(f"setting {name}={raw[:40]!r} is not a number") from None
    if not value > 0 or value != value or value == float("inf"):
        raise ValueError(f"setting {name}={raw[:40]!r} must be a number > 0")
    return value


def upload_limit_bytes() -> int:
    """ACTX_UPLOAD_MB in bytes (MiB: 2^20)."""
    return int(positive_number("ACTX_UPLOAD_MB", float) * 2**20)


def model_cache_dir() -> Path:
    return Path(setting("ACTX_MODEL_CACHE")).expanduser()
