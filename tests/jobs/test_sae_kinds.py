"""The SAE job kinds: `train-sae` from the app trains and commits an SAE through a real worker;
both kinds check their inputs against the store before anything starts, and refuse in
read-only mode."""

from __future__ import annotations

import shutil

import pytest

from jobs import JobError, ReadOnlyError, launch, list_jobs, read_job
from jobs.kinds import SAE_FEATURES, TRAIN_SAE, kind_of
from settings.sae import SaeSettings, TrainSaeSettings
from store import open_store
from tests.jobs.helpers import wait_for


@pytest.fixture
def sae_root(root, tiny_sae_store):
    shutil.copytree(tiny_sae_store["root"], root)
    return root


def test_training_an_sae_from_the_app_commits_it(sae_root):
    settings = TrainSaeSettings(run="pr-llama", layer=-3, d_sae=32, k=2, batch_size=64,
                                training_tokens=1_280)  # fmt: skip
    assert kind_of(settings) is TRAIN_SAE
    job, created = launch(sae_root, settings, read_only=False)
    assert created and job.run_id.startswith("sae-resid_post-L-3-")
    assert TRAIN_SAE.prepare(sae_root, settings).run == open_store(sae_root).runs()[0].run_id

    def finished():
        current = read_job(sae_root, job.job_id)
        return current if not current.active else None

    done = wait_for(finished, timeout=300, what="the SAE job")
    assert done.state == "done", (done.error, list_jobs(sae_root).statuses[0].log_tail)
    card = open_store(sae_root).saes.card(job.run_id)
    assert (card.layer, card.d_sae, card.k) == (1, 32, 2)
    status = list_jobs(sae_root).statuses[0]
    assert status.job.job_id == job.job_id and status.done == status.total == 20  # steps


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (TrainSaeSettings(run="no-such-run", layer=2), "cannot train an SAE on 'no-such-run'"),
        (TrainSaeSettings(run="pr-llama", layer=0), "has no layer 0"),
        (SaeSettings(model="m", dataset="prompt_responses", sae="/etc"),
         "SAE '/etc': SAE id '/etc' is not valid"),
        (SaeSettings(model="m", dataset="prompt_responses", sae="../saes/sae-tiny"),
         "is not valid"),
        (SaeSettings(model="m", dataset="/etc/passwd", sae="sae-tiny"), "/etc/passwd"),
        (SaeSettings(model="m", dataset="prompt_responses", sae="../x", sae_id="y"),
         "is not a release name"),
    ],
)  # fmt: skip
def test_inputs_are_checked_against_the_store_before_anything_starts(sae_root, settings, message):
    with pytest.raises(JobError, match=message):
        launch(sae_root, settings, read_only=False)
    assert list_jobs(sae_root).statuses == ()


def test_an_sae_of_the_store_is_named_by_its_exact_id(sae_root):
    settings = SaeSettings(model="m", dataset="prompt_responses", sae="sae-t")
    prepared = SAE_FEATURES.prepare(sae_root, settings)
    assert prepared.sae == "sae-tiny" and prepared.dataset.endswith("prompt_responses.jsonl")


def test_read_only_refuses_both_kinds(sae_root, monkeypatch):
    monkeypatch.setenv("ACTX_READ_ONLY", "1")
    kinds = (TrainSaeSettings(run="pr-llama", layer=2),
             SaeSettings(model="m", dataset="prompt_responses", sae="sae-tiny"))  # fmt: skip
    for settings in kinds:
        with pytest.raises(ReadOnlyError):
            launch(sae_root, settings, read_only=False)
    assert not (sae_root / "jobs").exists() or not any((sae_root / "jobs").iterdir())
