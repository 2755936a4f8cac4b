"""Store fixtures: a small synthetic store with one healthy run, and tools to damage copies of it.

Every damage test copies the healthy run folder and breaks the copy, so the healthy run next to
it shows that one damaged run is never fatal to the others in the same `Store` object.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.support.synthetic import label_rows, write_run

N_PER_LABEL = 4  # two labels: 8 samples per run


class Damage:
    """Copy and break run folders of one store (paths relative to `root / runs`)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def folder(self, name: str) -> Path:
        return self.root / "runs" / name

    def copy(self, target: str, source: str = "good", same_id: bool = False) -> Path:
        """A copy of `source` named `target`; its manifest names `target` unless `same_id`."""
        dst = self.folder(target)
        shutil.copytree(self.folder(source), dst)
        if not same_id:
            data = self.manifest(target)
            data["run_id"] = data["name"] = target
            self.write_manifest(target, data)
        return dst

    def manifest(self, name: str) -> dict:
        return json.loads((self.folder(name) / "manifest.json").read_text())

    def write_manifest(self, name: str, data: dict | bytes) -> None:
        raw = data if isinstance(data, bytes) else json.dumps(data).encode()
        (self.folder(name) / "manifest.json").write_bytes(raw)

    def edit_manifest(self, name: str, /, **changes) -> None:
        data = self.manifest(name)
        data.update(changes)
        self.write_manifest(name, data)

    def part(self, name: str, kind: str = "vectors") -> Path:
        return self.folder(name) / kind / "part-00000.parquet"


@pytest.fixture
def store_root(tmp_path) -> Path:
    """A store with one healthy run 'good' (d_model 8, layers 0..2, positions last/mean/all)."""
    root = tmp_path / "store"
    write_run(root, "good", label_rows(["a", "b"], N_PER_LABEL),
              positions=("last", "mean", "all"), seed=1)  # fmt: skip
    return root


@pytest.fixture
def damage(store_root) -> Damage:
    return Damage(store_root)
