"""Fixtures for the documentation tests: a store made like the default one, and a working copy of
the repository per document, in which its blocks run in order, as a reader would type them.

* ``docs_store``: every default run of `python -m extraction defaults` (the same names, models,
  hooks, layers and positions, through the same `fill_defaults`), and the default SAE and its
  features (through the same `fill_sae_defaults`, with 128 features), on the real embedded
  models, over the first rows of each built-in dataset, so it is made in seconds.
* ``doc_workdir(doc)``: a copy of the repository's tracked files with `.venv` linked to this
  interpreter's environment, `store_data` a copy of ``docs_store``, and a git repository whose
  `origin` is a local bare repository (so `git push` works offline). One per document, shared by
  its blocks: a snapshot made by one block is there for the next.
* ``doc_env(workdir)``: the environment the blocks run with: `python` and `streamlit` from the
  environment, where `streamlit` is tests.support.serve (`streamlit run` serves, is checked in
  Chromium and stopped), no `ACTX_*` store or read-only setting from outside, no network.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from extraction.datasets import builtin_dir
from extraction.defaults import default_configs, fill_defaults
from extraction.models import EMBEDDED
from extraction.sae.defaults import SAE_DATASET, fill_sae_defaults
from store import open_store
from store.layout import readout_dir

REPO = Path(__file__).resolve().parents[2]
SUBSET_ROWS = {"emotions": 12, "minimal_pairs": 8, "propositions": 4}  # whole pairs, all labels
OTHER_ROWS = 8  # a dataset added later: its first rows (keep pairs whole: an even number)
SMALL_SAE = {"d_sae": 128, "k": 8, "training_tokens": 4096, "batch_size": 256}
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "docs test",
    "GIT_AUTHOR_EMAIL": "docs@example.invalid",
    "GIT_COMMITTER_NAME": "docs test",
    "GIT_COMMITTER_EMAIL": "docs@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
}


@pytest.fixture(scope="session")
def docs_store(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("docs-data")

    def subset(dataset: str) -> str:
        path = data / f"{dataset}.jsonl"  # same stem: same dataset name in the runs
        if not path.exists():
            lines = (builtin_dir() / path.name).read_text(encoding="utf-8").splitlines()
            path.write_text("\n".join(lines[: SUBSET_ROWS.get(dataset, OTHER_ROWS)]) + "\n")
        return str(path)

    configs = [replace(c, dataset=subset(c.dataset)) for c in default_configs(tuple(EMBEDDED))]
    root = tmp_path_factory.mktemp("docs-store") / "store_data"
    fill_defaults(root, configs, progress=False)
    # The default SAE and its features, under their default names, small: run.sh's `defaults`
    # step then finds them (training the full-size one took over a minute of the setup check).
    fill_sae_defaults(root, tuple(EMBEDDED), progress=False, dataset=subset(SAE_DATASET),
                      training=SMALL_SAE)  # fmt: skip
    # Each document copies this store: keep SmolLM2's readout (57 MB; the README reads its style
    # vector in words) and drop Gemma's (336 MB), which no block reads.
    for readout in open_store(root).readouts():
        if readout.model != "smollm2-135m":
            shutil.rmtree(readout_dir(root, readout.key))
    return root


def _git(*args: str, cwd: Path, env: dict[str, str]) -> None:
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True)


def _working_copy(folder: Path, store: Path, env: dict[str, str]) -> Path:
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, check=True, capture_output=True
    ).stdout.decode()
    work = folder / "repo"
    for name in filter(None, tracked.split("\0")):
        source = REPO / name
        if source.is_file():  # tracked but deleted in the working tree: a user would lack it too
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, work / name)
    _git("init", "-q", "--bare", str(folder / "origin.git"), cwd=folder, env=env)
    _git("init", "-q", "-b", "main", cwd=work, env=env)
    _git("add", "-A", cwd=work, env=env)
    _git("commit", "-q", "-m", "working copy", cwd=work, env=env)
    _git("remote", "add", "origin", str(folder / "origin.git"), cwd=work, env=env)
    # After the commit: what a user has but does not commit (.gitignore lists both).
    (work / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    shutil.copytree(store, work / "store_data")
    return work


@pytest.fixture(scope="session")
def doc_env(tmp_path_factory):
    shims = tmp_path_factory.mktemp("docs-shims")
    streamlit = shims / "streamlit"
    streamlit.write_text(
        # -P: this repository's tests package, not the working copy's (cwd is not on the path)
        f'#!/bin/sh\nPYTHONPATH="{REPO}" exec "{sys.executable}" -P -m tests.support.serve "$@"\n'
    )
    streamlit.chmod(0o755)
    git_config = shims / "gitconfig"
    git_config.write_text("")

    def make(workdir: Path) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("ACTX_STORE", "ACTX_READ_ONLY")}
        env.pop("PYTHONPATH", None)
        path = os.pathsep.join([str(shims), str(Path(sys.executable).parent), env["PATH"]])
        return {**env, **GIT_IDENTITY, "GIT_CONFIG_GLOBAL": str(git_config), "PATH": path,
                "HF_HUB_OFFLINE": "1", "PWD": str(workdir)}  # fmt: skip

    return make


@pytest.fixture(scope="session")
def doc_workdir(tmp_path_factory, docs_store, doc_env):
    made: dict[str, Path] = {}

    def for_doc(doc: str) -> Path:
        if doc not in made:
            folder = tmp_path_factory.mktemp("doc-" + doc.replace("/", "-").replace(".", "-"))
            made[doc] = _working_copy(folder, docs_store, doc_env(folder))
        return made[doc]

    return for_doc
