"""Fixtures of the AppTest suites: a store in ACTX_STORE, secrets kept out, config restored."""

from __future__ import annotations

import pytest
from streamlit import config

from settings import env


@pytest.fixture(autouse=True, scope="session")
def _scan_components_once():
    """Each AppTest scans every installed package's metadata for Streamlit components: 0.15 s
    of CPU per AppTest here, 13 s over the quick subset's 87. The packages cannot change during
    a test session, so the first scan's answer stands for all (a fresh list each time)."""
    from streamlit.components.v2 import manifest_scanner

    real = manifest_scanner.scan_component_manifests
    found: list = []

    def scan_once(max_workers: int | None = None) -> list:
        if not found:
            found.append(real(max_workers))
        return list(found[0])

    manifest_scanner.scan_component_manifests = scan_once
    yield
    manifest_scanner.scan_component_manifests = real


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
