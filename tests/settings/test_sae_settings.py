"""settings.sae: SAE settings records, their command lines, and the sae-lens hook names."""

from __future__ import annotations

import argparse

import pytest

from settings.sae import (
    SaeSettings,
    TrainSaeSettings,
    default_training_tokens,
    parse_tl_hook_name,
    tl_hook_name,
)


@pytest.mark.parametrize(
    "settings",
    [
        TrainSaeSettings(run="r", layer=-1),
        TrainSaeSettings(run="r", layer=3, hook="mlp_out", d_sae=64, k=8, training_tokens=10,
                         lr=1e-3, include_first_token=True, name="mine"),
        SaeSettings(model="m", dataset="d.json", sae="s"),
        SaeSettings(model="m", dataset="d", sae="gemma-scope-2-270m-pt-res",
                    sae_id="layer_12_width_16k_l0_medium", positions="all", top_k=5,
                    chat_template=True),
    ],
)  # fmt: skip
def test_argv_parses_back_to_the_same_settings(settings):
    parser = argparse.ArgumentParser()
    type(settings).add_arguments(parser)
    assert type(settings).from_args(parser.parse_args(list(settings.argv()))) == settings
    assert type(settings).from_dict(settings.to_dict()) == settings


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: TrainSaeSettings(run="r", layer=0, k=0), "k 0 must be"),
        (lambda: TrainSaeSettings(run="r", layer=0, d_sae=8, k=9), "k 9 must be"),
        (lambda: TrainSaeSettings(run="r", layer=0, lr=float("inf")), "learning rate inf"),
        (lambda: TrainSaeSettings(run="r", layer=0, lr=0), "learning rate 0"),
        (lambda: TrainSaeSettings(run="r", layer=10**6), "layer 1000000 must be"),
        (lambda: TrainSaeSettings(run="", layer=0), "run '' is empty"),
        (lambda: TrainSaeSettings(run="r", layer=0, name="../x"), "run id '../x' is not valid"),
        (lambda: SaeSettings(model="m", dataset="d", sae="s", positions="last"),
         "unknown positions 'last'"),
        (lambda: SaeSettings(model="m", dataset="d", sae="s", top_k=10**6), "top k 1000000"),
        (lambda: SaeSettings(model="m", dataset="d", sae="s", sae_id="x" * 400), "too long"),
        (lambda: TrainSaeSettings.from_dict({"run": "r", "layer": 1, "cmd": "rm"}),
         "unknown SAE training setting 'cmd'"),
        (lambda: SaeSettings.from_dict({"model": "m"}), "SAE settings incomplete"),
    ],
)  # fmt: skip
def test_bad_settings_name_the_value(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_hook_names_are_sae_lens_names():
    assert tl_hook_name("resid_post", 12) == "blocks.12.hook_resid_post"
    assert parse_tl_hook_name("blocks.12.hook_resid_post") == ("resid_post", 12)
    for bad in ("blocks.1.attn.hook_z", "blocks.1.hook_mlp_in", "hook_embed", None, "x" * 10**5):
        with pytest.raises(ValueError, match="is not a site this tool captures"):
            parse_tl_hook_name(bad)


def test_default_training_tokens_are_bounded():
    assert default_training_tokens(4_900) == 73_500
    assert default_training_tokens(10) == 50_000
    assert default_training_tokens(10**9) == 5_000_000
