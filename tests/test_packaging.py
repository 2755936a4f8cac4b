"""The project as an installed package: importable and runnable from any working directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # each test starts interpreters


def test_a_users_folder_named_like_a_package_does_not_shadow_it(tmp_path):
    # A store folder called `store` (or `jobs`) next to where the user types the command is
    # common; it must not be imported as an empty namespace package instead of ours.
    for name in ("store", "jobs", "settings", "extraction"):
        (tmp_path / name).mkdir()
    done = subprocess.run(
        [sys.executable, "-c",
         "import store, jobs, settings, extraction; print(store.__file__, jobs.__file__)"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(ROOT / "store/__init__.py"), str(ROOT / "jobs/__init__.py")]


def test_console_entry_points_run_from_another_folder(tmp_path):
    bin_dir = Path(sys.executable).parent
    done = subprocess.run(
        [str(bin_dir / "actx-extraction"), "models"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "smollm2-135m" in done.stdout and "gemma3-270m" in done.stdout
    store = subprocess.run(
        [str(bin_dir / "actx-store"), "snapshot", "--store", str(tmp_path / "nope"),
         "--runs", "all", "--out", str(tmp_path / "out")],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert store.returncode == 2 and store.stderr.startswith("error: ")
