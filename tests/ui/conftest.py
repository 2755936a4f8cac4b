"""Fixtures of the AppTest suites: a store in ACTX_STORE, secrets kept out, config restored."""

from __future__ import annotations

import pytest
from streamlit import config

from settings import env


@pytest.fixture(autouse=True)
def _restore_error_details():
    """Read-only runs set `client.showErrorDetails` for the whole process: undo it after."""
    before = config.get_option("client.showErrorDetails")
    yield
    config.set_option("client.showErrorDetails", before)


@pytest.fixture
def secrets_file(tmp_path, monkeypatch):
    """Where a test may write secrets.toml: every place settings.env looks is inside tmp_path
    (HOME, the working directory, the app folder), so no developer's secrets leak in."""
    home, work, app = tmp_path / "home", tmp_path / "work", tmp_path / "app-folder"
    for folder in (home, work, app):
        (folder / ".streamlit").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    monkeypatch.setattr(env, "APP_ROOT", app)
    monkeypatch.delenv("ACTX_READ_ONLY", raising=False)
    return work / ".streamlit" / "secrets.toml"


@pytest.fixture
def tiny_env(tiny_store, monkeypatch):
    monkeypatch.setenv("ACTX_STORE", str(tiny_store["root"]))
    monkeypatch.delenv("ACTX_READ_ONLY", raising=False)
    return tiny_store


@pytest.fixture
def synthetic_env(tmp_path, monkeypatch):
    root = tmp_path / "store"
    monkeypatch.setenv("ACTX_STORE", str(root))
    monkeypatch.delenv("ACTX_READ_ONLY", raising=False)
    return root
