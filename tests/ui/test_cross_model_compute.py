"""What the Cross-model page draws from `layer_similarity` (one `analysis.compare_layers` per run
pair) equals what it drew from each analysis function on its own: the CKA and Procrustes
heatmaps, the ring on each row's best cell (`with_best`), and the chance level there (the mean
of `cka_chance` / `procrustes_chance` over CHANCE_SHUFFLES shuffles)."""

from __future__ import annotations

import numpy as np

from analysis import cka_chance, cka_matrix, procrustes_chance, procrustes_cosine_matrix
from store import open_store
from tests.ui.apptest import run_id_named
from ui import compute
from ui.context import StoreView

SITE = ("resid_post", "last")


def test_drawn_heatmaps_and_chance_equal_the_functions_one_by_one(tiny_store):
    store = open_store(tiny_store["root"])
    view = StoreView(str(tiny_store["root"]), tuple(sorted(store.run_ids())))
    run_a, run_b = (run_id_named(tiny_store, name) for name in ("emo-llama", "emo-gemma3"))
    drawn = compute.cross_model_drawn(view, run_a, run_b, *SITE, "gratitude", "neutral")
    a, b = (compute.layer_stats(view, run, *SITE) for run in (run_a, run_b))
    ia, ib = compute._shared_rows(a, b)
    XA, XB = list(a.sub_X[:, ia]), list(b.sub_X[:, ib])
    assert drawn.n_shared == len(ia) >= 4
    expected = {
        "cka": (cka_matrix(XA, XB), cka_chance),
        "procrustes": (procrustes_cosine_matrix(XA, XB, rank=compute.PROCRUSTES_RANK),
                       procrustes_chance),
    }  # fmt: skip
    for name, (M, chance) in expected.items():
        frame = getattr(drawn, name)
        np.testing.assert_allclose(frame["value"].to_numpy(), M.ravel(), atol=1e-10)
        old_best = compute.with_best(frame.drop(columns=["best", "chance"]))
        assert frame["best"].tolist() == old_best["best"].tolist()
        rings = frame[frame["best"]]
        cells = [(a.layer_index(i), b.layer_index(j)) for i, j in
                 zip(rings["layer_a"], rings["layer_b"], strict=True)]  # fmt: skip
        kwargs = {"rank": compute.PROCRUSTES_RANK} if name == "procrustes" else {}
        levels = chance(XA, XB, cells, compute.CHANCE_SHUFFLES, **kwargs).mean(axis=1)
        np.testing.assert_allclose(rings["chance"].to_numpy(), levels, atol=1e-10)
        assert frame.loc[~frame["best"], "chance"].isna().all()
