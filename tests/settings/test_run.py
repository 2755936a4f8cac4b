"""settings.run: the one layer grammar, run ids, and RunSettings with its command-line form."""

from __future__ import annotations

import argparse
from dataclasses import fields
from datetime import UTC, datetime

import pytest

from extraction.__main__ import build_parser
from settings.run import (
    RUN_OPTIONS,
    RunSettings,
    add_run_arguments,
    describe_layers,
    new_run_id,
    parse_layer_spec,
    resolve_layers,
    settings_from_args,
    validate_run_id,
)


def test_layer_grammar():
    assert parse_layer_spec("all") is None
    assert parse_layer_spec("0, 2-3") == (0, 2, 3)
    assert parse_layer_spec("-1,0") == (-1, 0)
    assert resolve_layers("all", 4) == (0, 1, 2, 3)
    assert resolve_layers("-1,0,0", 4) == (0, 3)
    assert resolve_layers("10-12", 30) == (10, 11, 12)
    assert resolve_layers((-2, 1), 4) == (1, 2)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("20-10", "bad layer range '20-10'"),
        ("1,x", "bad layer 'x'"),
        ("", "bad layer ''"),
        ("0-99999", "beyond 4096"),
        ("0-999999999", "bad layer '0-999999999'"),
        ("1," * 300, "too long"),
        ("inf", "bad layer 'inf'"),
        ("-3--1", "bad layer '-3--1'"),
    ],
)
def test_bad_layer_specs_name_the_value(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_layer_spec(spec)


def test_layers_out_of_range():
    with pytest.raises(ValueError, match=r"layer 4 out of range 0..3"):
        resolve_layers("1,4", 4)
    with pytest.raises(ValueError, match=r"layer -5 out of range"):
        resolve_layers("-5", 4)


def test_describe_layers_shows_gaps():
    assert describe_layers((0, 17)) == "0, 17"
    assert describe_layers((0, 1, 2, 3, 5, 17)) == "0..3, 5, 17"
    assert describe_layers(()) == "none"


def test_run_ids():
    when = datetime(2026, 12, 1, 9, 30, 0, tzinfo=UTC)
    run_id = new_run_id("emotions/smollm2 135m", now=when)
    assert run_id.startswith("emotions-smollm2-135m-20261201-093000-")
    assert new_run_id("../..", now=when).startswith("run-")
    assert len(new_run_id("x" * 500)) <= 128
    for bad in ("../escape", "", "a b", ".hidden", "x" * 129, None, 5):
        with pytest.raises(ValueError, match="is not valid"):
            validate_run_id(bad)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("model", "", "model '' is empty"),
        ("model", "x\n", "control characters"),
        ("dataset", "d" * 600, "too long"),
        ("hooks", ("resid_mid",), "unknown hook 'resid_mid'"),
        ("hooks", (), "hooks must not be empty"),
        ("hooks", "resid_post", "must be a list"),
        ("hooks", ("resid_post", "resid_post"), "name one twice"),
        ("positions", ("first",), "unknown position 'first'"),
        ("layers", "20-10", "bad layer range"),
        ("layers", 5, "must be text"),
        ("dtype", "int8", "unknown dtype 'int8'"),
        ("backend", "jax", "unknown backend 'jax'"),
        ("tl_processing", "fold", "unknown TransformerLens processing 'fold'"),
        ("batch_size", 0, "batch size 0"),
        ("batch_size", "16", "batch size '16'"),
        ("batch_size", True, "batch size True"),
        ("batch_size", 10**30, "must be a whole number"),
        ("max_length", 1, "max length 1"),
        ("include_first_token", "yes", "must be true or false"),
        ("name", "../escape", "run id '../escape' is not valid"),
        ("device", "gpu", "unknown device 'gpu'"),
        ("compute_dtype", "float8", "unknown compute dtype 'float8'"),
        ("generate", -1, "generate -1 must be a whole number"),
        ("generate", "3", "generate '3' must be a whole number"),
        ("positions", ("answer_mean",), "position 'answer_mean' needs --generate N"),
        ("max_new_tokens", 5, "--max-new-tokens 5 needs --generate N"),
        ("temperature", 0.7, "--temperature 0.7 needs --generate N"),
        ("temperature", float("nan"), "temperature nan must be a number"),
        ("temperature", float("inf"), "temperature inf must be a number"),
        ("seed", -1, "seed -1 must be a whole number"),
        ("answer_states", "middle", "unknown answer states 'middle'"),
    ],
)
def test_run_settings_validate_every_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        RunSettings(**{"model": "m", "dataset": "d", field: value})


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"backend": "transformer_lens"}, "--generate needs --backend hf"),
        ({"positions": ("last", "all")}, "position 'all' cannot be combined with --generate"),
        ({"max_new_tokens": 2}, "max new tokens 2 is too few to pool 3 answer states"),
        ({"max_new_tokens": 3, "answer_states": "own"}, "use at least 4"),
    ],
)
def test_generation_settings_go_together(values, message):
    with pytest.raises(ValueError, match=message):
        RunSettings(model="m", dataset="d", generate=3, **values)


def test_generate_asks_for_the_answer_position():
    settings = RunSettings(model="m", dataset="d", generate=3)
    assert settings.positions == ("last", "mean", "answer_mean")
    assert RunSettings.from_dict(settings.to_dict()) == settings


def test_from_dict_is_strict():
    good = RunSettings(model="smollm2-135m", dataset="emotions", layers="-1", name="x")
    assert RunSettings.from_dict(good.to_dict()) == good
    with pytest.raises(ValueError, match="unknown run setting 'command'"):
        RunSettings.from_dict({**good.to_dict(), "command": ["rm", "-rf", "/"]})
    with pytest.raises(ValueError, match="incomplete"):
        RunSettings.from_dict({"model": "m"})
    for not_an_object in (None, [], "x", 5):
        with pytest.raises(ValueError, match="not an object"):
            RunSettings.from_dict(not_an_object)


def test_every_field_has_exactly_one_option():
    assert sorted(o.field for o in RUN_OPTIONS) == sorted(f.name for f in fields(RunSettings))


@pytest.mark.parametrize(
    "settings",
    [
        RunSettings(model="smollm2-135m", dataset="emotions"),
        RunSettings(
            model="org/name", dataset="/data/x y.jsonl", hooks=("resid_pre", "mlp_out"),
            layers="-2,-1", positions=("all",), dtype="float32", backend="transformer_lens",
            tl_processing="default", batch_size=3, max_length=64, include_first_token=True,
            chat_template=True, name="my-run", device="cpu", compute_dtype="bfloat16",
        ),
        RunSettings(
            model="smollm2-135m", dataset="propositions", generate=4, max_new_tokens=9,
            temperature=0.7, seed=12, answer_states="own", positions=("answer_mean",),
        ),
    ],
)  # fmt: skip
def test_argv_round_trips_through_the_real_cli_parser(settings):
    argv = ["run", *settings.argv(), "--store=/tmp/s"]
    args = build_parser().parse_args(argv)
    assert settings_from_args(args) == settings


def test_cli_defaults_are_the_settings_defaults():
    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    args = parser.parse_args(["--model", "m", "--dataset", "d"])
    assert settings_from_args(args) == RunSettings(model="m", dataset="d")
    assert RunSettings(model="m", dataset="d").argv() == ("--model=m", "--dataset=d")
