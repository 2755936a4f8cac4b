"""settings.env: the ACTX_* table is the only list of settings, and read-only fails closed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from settings import env
from settings.env import ENV_SETTINGS, read_only, setting

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def clean_env(tmp_path, monkeypatch):
    """No ACTX_* variable, and secrets only where the test writes them (HOME and cwd)."""
    for spec in ENV_SETTINGS:
        monkeypatch.delenv(spec.name, raising=False)
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(env, "APP_ROOT", tmp_path / "app")
    return {"home": home, "cwd": cwd}


def _secrets(folder: Path, text: str) -> Path:
    path = folder / ".streamlit" / "secrets.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_off_by_default(clean_env):
    assert read_only() is False
    assert setting("ACTX_STORE") == "store_data"


@pytest.mark.parametrize("value", ["1", "true", "yes", "on", "", " ", "enabled", "TRUE", "2"])
def test_any_env_value_but_an_explicit_off_is_on(clean_env, monkeypatch, value):
    monkeypatch.setenv("ACTX_READ_ONLY", value)
    assert read_only() is True


@pytest.mark.parametrize("value", ["0", "false", "no", "off", " OFF ", "False"])
def test_explicit_off(clean_env, monkeypatch, value):
    monkeypatch.setenv("ACTX_READ_ONLY", value)
    assert read_only() is False


@pytest.mark.parametrize(
    "text",
    ["read_only = true", 'ACTX_READ_ONLY = "1"', 'read_only = "enabled"', "read_only = 1",
     'ACTX_READ_ONLY = ""'],
)  # fmt: skip
def test_secrets_turn_it_on(clean_env, text):
    _secrets(clean_env["cwd"], text)
    assert read_only() is True


def test_env_off_does_not_override_secrets_on(clean_env, monkeypatch):
    _secrets(clean_env["home"], "read_only = true")
    for value in ("0", ""):
        monkeypatch.setenv("ACTX_READ_ONLY", value)
        assert read_only() is True


def test_secrets_off_is_off(clean_env):
    _secrets(clean_env["cwd"], "read_only = false\nACTX_MAX_JOBS = 3")
    assert read_only() is False
    assert setting("ACTX_MAX_JOBS") == "3"


@pytest.mark.parametrize(
    "text",
    ["read_only = false\nread_only = false", "read_only = ", "[[[", b"\xff\xfe".decode("latin-1")],
)
def test_a_broken_secrets_file_is_read_only(clean_env, text, caplog):
    path = _secrets(clean_env["cwd"], text)
    with caplog.at_level("WARNING"):
        assert read_only() is True
        assert read_only() is True
    messages = [r.getMessage() for r in caplog.records if str(path) in r.getMessage()]
    assert len(messages) <= 1  # one line for the operator per broken file, not one per call
    assert setting("ACTX_STORE") == "store_data"  # other settings fall back to their defaults


def test_unreadable_secrets_is_read_only(clean_env):
    path = _secrets(clean_env["cwd"], "read_only = false")
    path.unlink()
    path.mkdir()  # exists, cannot be read as a file
    assert read_only() is True


def test_secrets_in_the_app_folder_count(clean_env, tmp_path):
    _secrets(tmp_path / "app", "read_only = true")
    assert read_only() is True


def test_positive_numbers_name_the_setting(clean_env, monkeypatch):
    assert env.upload_limit_bytes() == 20 * 2**20
    for bad in ("x", "0", "-1", "nan", "inf"):
        monkeypatch.setenv("ACTX_UPLOAD_MB", bad)
        with pytest.raises(ValueError, match="ACTX_UPLOAD_MB"):
            env.upload_limit_bytes()


def test_model_cache_expands_home(clean_env, monkeypatch):
    assert env.model_cache_dir() == clean_env["home"] / ".cache/activation-explorer/models"
    monkeypatch.setenv("ACTX_MODEL_CACHE", "~/m")
    assert env.model_cache_dir() == clean_env["home"] / "m"


def test_readme_lists_exactly_the_settings_table():
    readme = (ROOT / "README.md").read_text()
    rows = dict(re.findall(r"^\| `(ACTX_[A-Z_]+)` \| `([^`]*)` \|", readme, re.MULTILINE))
    assert rows == {s.name: s.default for s in ENV_SETTINGS}
    mentioned = set(re.findall(r"\bACTX_[A-Z_]+\b", readme))
    assert mentioned == set(rows)


def test_code_reads_no_setting_outside_the_table():
    names = {s.name for s in ENV_SETTINGS}
    used = set()
    for folder in ("analysis", "extraction", "jobs", "pages", "settings", "store", "ui"):
        for path in (ROOT / folder).rglob("*.py"):
            used |= set(re.findall(r"\bACTX_[A-Z_]+\b(?!\.)", path.read_text()))
    used |= set(re.findall(r"\bACTX_[A-Z_]+\b", (ROOT / "app.py").read_text()))
    assert used <= names, f"settings used but not in ENV_SETTINGS: {sorted(used - names)}"
