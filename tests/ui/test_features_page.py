"""Features page (issue 12), AppTest on the tiny SAE store (tests/conftest.py `tiny_sae_store`):
top features per label pinned in the URL, one feature (labels, promoted tokens, firing tokens),
one record, the JSON export; hostile URL values, damaged and planted files, read-only mode, and
training another SAE from the page as a job."""

from __future__ import annotations

import json
import shutil

import pytest

from store import open_store
from tests.ui.apptest import charts, colour_maps, messages, open_page, page_text, shown
from ui import charts as ui_charts
from ui.features_compute import highlighted

PAGE = "pages/features.py"
KEYS = ("layer", "feature_run", "scope", "order", "top", "labels", "feature", "sample")


@pytest.fixture
def sae_env(tiny_sae_store, monkeypatch):
    monkeypatch.setenv("ACTX_STORE", str(tiny_sae_store["root"]))
    monkeypatch.delenv("ACTX_READ_ONLY", raising=False)
    return tiny_sae_store


@pytest.fixture
def sae_copy(tiny_sae_store, tmp_path, monkeypatch):
    root = tmp_path / "store"
    shutil.copytree(tiny_sae_store["root"], root)
    monkeypatch.setenv("ACTX_STORE", str(root))
    monkeypatch.delenv("ACTX_READ_ONLY", raising=False)
    return root


def test_first_draw_pins_the_view_and_shows_every_part(sae_env):
    at = open_page(PAGE, {"feature_run": "feat-all", "scope": "response"})
    query = dict(at.query_params)
    assert set(KEYS) <= set(query) and query["feature_run"] == "feat-all"
    assert query["scope"] == "response" and query["layer"] == "2"
    store = open_store(sae_env["root"])
    summary = store.features.label_features("feat-all", scope="response", top=10)
    labels = sorted(summary["label"].unique())
    drawn = charts(at)
    for label in labels:  # one chart per label, its features in the store's order
        expected = summary[summary["label"] == label]["feature"].astype(str).tolist()
        assert drawn[label]["feature"].tolist() == expected
    feature = int(query["feature"])
    assert feature == int(summary["feature"].iloc[0])  # the first label's top feature
    by_label = drawn[f"Feature {feature}: how often it fires, per label"]
    assert by_label["frequency"].gt(0).any()
    colours = ui_charts.label_colours(labels).mapping()
    for _title, field, mapping in colour_maps(at):
        assert field == "label" and all(colours[k] == v for k, v in mapping.items())
    promoted = store.saes.promoted_tokens("sae-tiny", feature)
    tables = [t.value for t in at.dataframe]
    assert any(t["token"].tolist() == promoted["token"].map(repr).tolist() for t in tables)
    best, tokens = store.features.feature_samples("feat-all", feature, scope="response", n=8)
    shaded = [m.value for m in at.markdown if m.value.startswith("<div")]
    assert len(shaded) == len(best) > 0
    first = tokens[tokens["sample_idx"] == best["sample_idx"].iloc[0]]
    unshaded = shaded[0].count("rgba(255,127,14,0.00)")  # the firing tokens are shaded
    assert unshaded == (first["activation"] / best["peak"].iloc[0] < 0.005).sum() < len(first)
    assert shaded[0].count("<span title") == len(first)
    positions = store.features.sample_positions("feat-all", int(query["sample"]))
    assert any(len(t) == len(positions) and "top features (id: activation)" in t for t in tables)


def test_highlighted_tokens_are_text_and_shaded_by_activation():
    import pandas as pd

    tokens = pd.DataFrame({"token_idx": [0, 1, 2], "token": ["<script>x</script>", "$1$", "\n"],
                           "activation": [0.0, 2.0, 1.0]})  # fmt: skip
    text = highlighted(tokens, peak=2.0, answer_start=2)
    assert "<script>" not in text and "&lt;script&gt;" in text and "&#36;1&#36;" in text
    assert "rgba(255,127,14,1.00)" in text and "rgba(255,127,14,0.50)" in text and "↵" in text
    assert "\n" not in text  # one HTML block: Markdown reads nothing inside it


HOSTILE = {"inf": "inf", "huge": "9" * 40, "markdown": "[x](http://evil.example)",
           "dot dot": "../features", "empty": ""}  # fmt: skip


@pytest.mark.parametrize("value", list(HOSTILE))
def test_hostile_values_in_every_pinned_key(sae_env, value):
    at = open_page(PAGE, dict.fromkeys(KEYS, HOSTILE[value]))
    assert "cooking" in charts(at) or "travel" in charts(at) or value == "empty"
    text = messages(at)
    assert "evil.example)" not in text.replace("\\", "") or "\\[" in text
    assert all(len(w.value) < 2000 for w in at.warning)
    if value not in ("empty",):
        assert "does not have" in text  # the dropped value is named, the default shown


def test_a_gone_feature_run_in_a_link_is_named_and_the_default_shown(sae_env):
    at = open_page(PAGE, {"feature_run": "feat-gone", "layer": "2"})
    assert "feat-gone" in shown(messages(at)) and at.query_params["feature_run"] == "feat-last"


def test_damaged_feature_run_and_planted_files_lose_nothing_else(sae_copy):
    topk = sorted((sae_copy / "features" / "feat-all" / "topk").glob("*.parquet"))[0]
    topk.write_bytes(topk.read_bytes()[:100])  # cut short
    (sae_copy / "saes" / "sae-tiny" / "promoted_tokens.parquet").write_bytes(b"PAR1 planted")
    at = open_page(PAGE, {"feature_run": "feat-all"})
    text = page_text(at) + "\n".join(t.value for t in at.text)
    assert "feat-all: file topk/" in text and "is not Parquet" in text, text
    assert at.query_params["feature_run"] == "feat-last" and "cooking" in charts(at)
    assert "cannot read its promoted tokens" in shown(messages(at))


def test_export_is_the_dataset_with_every_records_features(sae_env):
    from ui.features_compute import export_json

    at = open_page(PAGE, {"feature_run": "feat-last"})
    assert len(at.get("download_button")) == 1
    document = json.loads(export_json(str(sae_env["root"]), "feat-last", "stamp"))
    assert document["sae_extraction_metadata"]["layer_2"]["top_k_features"] == 5
    first = document["records"][0]["sae_activations"]["layer_2"]
    assert (
        first["status"] == "ok"
        and 1 <= len(first["activations"]["last_token"]["top_k_features"]) <= 5
    )
    assert str(sae_env["root"]) not in json.dumps(document["sae_extraction_metadata"])


def test_read_only_has_no_training_form_and_no_server_path(sae_env, monkeypatch):
    monkeypatch.setenv("ACTX_READ_ONLY", "1")
    at = open_page(PAGE)
    text = page_text(at)
    assert "Train another SAE" not in text and not [b for b in at.button if b.key == "train"]
    assert str(sae_env["root"]) not in text and "cooking" in charts(at)


def test_training_another_sae_from_the_page_starts_a_job(sae_copy):
    from jobs import cancel, list_jobs

    at = open_page(PAGE)
    at.selectbox(key="d_sae").set_value(512).run()  # a change reruns the page, as a browser does
    at.button(key="train").click().run()
    statuses = list_jobs(sae_copy).statuses
    try:
        assert not at.exception and at.success, messages(at)
        assert "Started job" in shown(at.success[0].value)
        job = statuses[0].job
        assert job.kind == "train-sae" and job.settings.d_sae == 512
        assert job.settings.layer == int(at.selectbox(key="train_layer").value)
    finally:  # a real worker: stop it whatever the assertions said
        for status in statuses:
            cancel(sae_copy, status.job.job_id, read_only=False)
