"""The default runs of `python -m extraction defaults` (what `bash run.sh` puts in a new store):
which they are and in what order. tests/docs builds a store of them on the embedded models."""

from __future__ import annotations

from extraction.defaults import default_configs


def test_default_runs_cover_both_models_and_keep_one_tokens_run():
    configs = default_configs(("smollm2-135m", "gemma3-270m"))
    assert [c.name for c in configs] == [
        "default-emotions-gemma3-270m",
        "default-minimal-pairs-gemma3-270m",
        "default-propositions-gemma3-270m",
        "default-style-pairs-smollm2-135m",  # what control vectors are made from
        "default-minimal-pairs-tokens-smollm2-135m",  # newest-first lists put SmolLM2 first
        "default-emotions-smollm2-135m",
        "default-minimal-pairs-smollm2-135m",
        "default-propositions-smollm2-135m",
    ]
    pooled = [c for c in configs if "tokens" not in c.name and "style" not in c.name]
    assert all(c.layers == "all" and c.hooks == ("resid_pre", "resid_post", "mlp_out")
               and c.positions == ("last", "mean") for c in pooled)  # fmt: skip
    (tokens,) = [c for c in configs if "tokens" in c.name]
    assert (tokens.model, tokens.dataset, tokens.hooks, tokens.positions) == (
        "smollm2-135m", "minimal_pairs", ("resid_post",), ("all",)
    )  # fmt: skip
    (style,) = [c for c in configs if "style" in c.name]
    assert (style.model, style.dataset, style.hooks, style.positions, style.layers) == (
        "smollm2-135m", "style_pairs", ("resid_post",), ("last",), "all"
    )  # fmt: skip
    # Each default name is a prefix of its own run ids only (snapshot takes prefixes).
    names = [c.name for c in configs]
    assert not [(a, b) for a in names for b in names if a != b and b.startswith(a + "-")]
