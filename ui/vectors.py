"""Cached results behind the Vectors and Steering pages: vector sets read and compared.

Every cached function takes the rerun's `StoreView` and a set id; a committed set never changes,
so results are cached per set. `figures` is the per-layer table of a set, `method_cosines` its
cosine per layer with the other sets of the same run and hook (other methods), `dom_cosines` its
cosine with the Directions page's difference-of-means of the same run (the second style's mean
minus the first's, from `ui.compute.layer_stats`, the Directions page's own computation),
`set_words` the tokens each layer's vector promotes and suppresses (ui.readout), and
`set_files` the `.pt` and GGUF files (store.control_files) for the download buttons.
"""

from __future__ import annotations

import functools
import shlex

import pandas as pd
import streamlit as st

from analysis import cosine, directions_from_means
from jobs import JobError, cancel, launch, list_jobs
from jobs.steering import SteerOutcome, poll, submit
from settings.run import LAYERS_HELP, describe_layers
from settings.vectors import METHOD_HELP, METHODS, VECTOR_HOOKS, SteerSettings, VectorSettings
from store import RunManifest, StoreError
from store.control_files import gguf_bytes, layer_arrays, pt_bytes
from store.readouts import MissingReadout
from store.vectorsets import VectorSetManifest
from ui import charts, links
from ui.compute import Unsuitable, layer_stats
from ui.context import StoreView, plain, public_text, read_only
from ui.jobs import job_card
from ui.readout import direction_words, words_table


def vector_sets(view: StoreView) -> tuple[list[VectorSetManifest], list]:
    """(healthy sets newest first, damaged sets with reasons); files checked (sets are small)."""
    store = view.store
    return store.vector_sets(check_files=True), store.damaged_vector_sets(check_files=True)


def set_label(m: VectorSetManifest) -> str:
    return (
        f"{m.name} · {m.method} · {m.hook} · {public_text(m.model)} "
        f"({m.first_label} → {m.second_label})"
    )


@st.cache_data(show_spinner=False, max_entries=64)
def figures(view: StoreView, set_id: str) -> pd.DataFrame:
    """One row per layer: explained variance, sign agreement, raw and typical norms."""
    vs = view.store.vector_set(set_id)
    return pd.DataFrame(
        {
            "layer": list(vs.layers),
            "explained_variance": vs.explained_variance,
            "sign_agreement": vs.sign_agreement,
            "raw_norm": vs.raw_norm,
            "typical_norm": vs.typical_norm,
            "raw_norm_rel": vs.raw_norm / vs.typical_norm,
            "n_layers": vs.manifest.n_layers,
        }
    )


def method_cosines(view: StoreView, set_id: str, sets: list[VectorSetManifest]) -> pd.DataFrame:
    """Cosine per shared layer with every other healthy set of the same run and hook."""
    this = next(m for m in sets if m.set_id == set_id)
    others = tuple(m.set_id for m in sets if m.set_id != set_id and
                   (m.run_id, m.hook) == (this.run_id, this.hook))  # fmt: skip
    return _cosines_with(view, set_id, others)


@st.cache_data(show_spinner=False, max_entries=64)
def _cosines_with(view: StoreView, set_id: str, others: tuple[str, ...]) -> pd.DataFrame:
    store = view.store
    this = store.vector_set(set_id)
    rows = []
    for other_id in others:
        try:
            other = store.vector_set(other_id)
        except StoreError:
            continue  # a damaged set is listed on the page, not compared
        theirs = other.by_layer()
        for layer, vector in this.by_layer().items():
            if layer in theirs:
                rows.append({"layer": layer, "with": f"{other.manifest.method} ({other_id})",
                             "cosine": cosine(vector, theirs[layer])})  # fmt: skip
    return pd.DataFrame(rows, columns=["layer", "with", "cosine"])


@st.cache_data(show_spinner="Reading the run's states for the difference of means...",
               max_entries=32)  # fmt: skip
def dom_cosines(view: StoreView, set_id: str) -> pd.DataFrame:
    """Cosine per layer with the difference of means (second style minus first) of the run."""
    vs = view.store.vector_set(set_id)
    m = vs.manifest
    stats = layer_stats(view, m.run_id, m.hook, "last")
    if m.first_label not in stats.labels or m.second_label not in stats.labels:
        return pd.DataFrame(columns=["layer", "cosine"])
    dom = directions_from_means(stats.means, stats.labels, [m.second_label], m.first_label)
    rows = [
        {"layer": layer, "cosine": cosine(vs.vectors[i], dom[stats.layers.index(layer), 0])}
        for i, layer in enumerate(vs.layers)
        if layer in stats.layers
    ]
    return pd.DataFrame(rows, columns=["layer", "cosine"])


def set_words(view: StoreView, set_id: str, layers: list[int], top: int = 8) -> pd.DataFrame:
    """The promoted and suppressed tokens of the set's vector at each of `layers`."""
    vs = view.store.vector_set(set_id)
    index = [vs.layers.index(layer) for layer in layers if layer in vs.layers]
    if not index:
        return pd.DataFrame(columns=["direction", "promotes", "suppresses"])
    try:
        words = direction_words(view, vs.manifest.weights_sha256, vs.vectors[index], top)
    except MissingReadout:
        if view.on_object_storage:  # store.fs: readouts are kept in local stores only
            raise StoreError(
                f"No words: readouts ({vs.manifest.model}'s final norm and unembedding) are kept "
                "in local stores only, and this store is on object storage: a local snapshot "
                "(`python -m store snapshot`, then `python -m extraction readout` into it) "
                "shows them."
            ) from None
        raise StoreError(
            f"No words: this store has no readout of {vs.manifest.model}'s weights (its final "
            "norm and unembedding). `python -m extraction readout --model "
            f"{shlex.quote(vs.manifest.model)} --store {shlex.quote(view.shown())}` saves it."
        ) from None
    return words_table(words, [f"layer {vs.layers[i]}" for i in index])


@st.cache_data(show_spinner=False, max_entries=32)
def set_files(view: StoreView, set_id: str, scaled: bool) -> dict[str, bytes]:
    """{'pt': bytes, 'gguf': bytes} of a set; GGUF empty when llama.cpp can take no layer."""
    vs = view.store.vector_set(set_id)
    arrays = layer_arrays(vs, scaled)
    try:
        gguf = gguf_bytes(arrays, vs.manifest.hook, vs.manifest.architecture)
    except ValueError:
        gguf = b""
    return {"pt": pt_bytes(arrays), "gguf": gguf}


@st.cache_data(show_spinner=False, max_entries=16)
def paired_runs(view: StoreView) -> list[RunManifest]:
    """Runs a vector set can be made from: a residual hook, the last position, pairs a and b."""
    store = view.store
    found = []
    for m in store.runs():
        if "last" not in m.positions or not {"resid_post", "resid_pre"} & set(m.hooks):
            continue
        try:  # the one column needed, not every sample's text (100,000 samples: 1 s)
            samples = store.sample_columns(m.run_id, ["side"])
        except StoreError:
            continue
        if "side" in samples and set(samples["side"].dropna()) >= {"a", "b"}:
            found.append(m)
    return found


DOM = "difference of means (Directions)"
FIGURES = ("explained_variance", "sign_agreement")
WORD_LAYERS = 4  # layers read in words by default, spread over the set


def comparison_colours(compared: pd.DataFrame) -> charts.Styles:
    """One colour per compared set (sorted), the difference of means in near-black."""
    others = sorted(set(compared["with"]) - {DOM})
    return charts.colours_for(others + [DOM], {DOM: charts.OVERALL})


def default_word_layers(layers: tuple[int, ...]) -> list[int]:
    """A few layers spread from the first to the last of the set."""
    n = min(WORD_LAYERS, len(layers))
    picks = [layers[round(i * (len(layers) - 1) / max(n - 1, 1))] for i in range(n)]
    return list(dict.fromkeys(picks))


def open_targets(view: StoreView, m: VectorSetManifest) -> list[links.OpenIn]:
    """Steer with the set; open its run in Directions (while the store has the run)."""
    targets = [links.OpenIn("pages/steering.py", "Steering", {"set": m.set_id})]
    if m.run_id in view.run_ids:
        targets.append(links.OpenIn("pages/directions.py", "Directions", {"runs": [m.run_id]}))
    return targets


def comparisons(
    view: StoreView, set_id: str, sets: list[VectorSetManifest]
) -> tuple[pd.DataFrame, list[str]]:
    """(cosine per layer with the other methods' sets and with the difference of means, in one
    long frame: layer, with, cosine, n_layers; notes on what could not be compared)."""
    this = next(m for m in sets if m.set_id == set_id)
    frames, notes = [method_cosines(view, set_id, sets)], []
    if frames[0].empty:
        notes.append("No other method's set of this run and hook to compare with yet.")
    try:
        frames.append(dom_cosines(view, set_id).assign(**{"with": DOM}))
    except (Unsuitable, StoreError) as exc:
        notes.append(f"No difference of means: the set's run cannot be read ({exc}).")
    frame = pd.concat([f for f in frames if not f.empty] or [frames[0]], ignore_index=True)
    return frame.assign(n_layers=this.n_layers), notes


# -- computing a set as a job (writable mode only) -----------------------------------------------
def _launch(root: str, fields: dict) -> None:
    # A callback, as on New run: it runs before the script, so the outcome stays on screen.
    try:
        job, created = launch(root, VectorSettings(**fields), read_only=read_only())
    except (ValueError, JobError) as exc:
        st.session_state["vectors_message"] = ("error", plain(public_text(exc)))
        return
    if job.state == "failed":
        st.session_state["vectors_message"] = ("error", plain(f"Could not start: {job.error}"))
    elif created:
        text = f"Computing `{job.run_id}` (job `{job.job_id}`); it is listed here when done."
        st.session_state["vectors_message"] = ("success", text)
    else:
        st.session_state["vectors_message"] = ("info", f"Already {job.state}: `{job.job_id}`.")


def opened_run(view: StoreView) -> str | None:
    """The run a link opened the page with (`?vec_run=`, see `links.open_in`), when the store
    has it; anything else in that key is ignored (it only picks defaults)."""
    value = st.query_params.get("vec_run")
    return value if value in view.run_ids else None


def compute_form(view: StoreView, opened: str | None = None) -> None:
    """An expander to compute a vector set from a paired run as a job, and the recent jobs;
    `opened` (a run without a set yet) opens it with that run chosen."""
    runs = paired_runs(view)
    fresh = not view.store.vector_sets() or opened is not None
    with st.expander("Compute a vector set", expanded=fresh):
        if not runs:
            st.caption(
                "No paired run with last-token residual states yet: run a dataset with pair_id and "
                "side a/b columns (e.g. the built-in style_pairs) with position `last`."
            )
        else:
            titles = {m.run_id: f"{m.name} · {m.model} · {m.dataset_name}" for m in runs}
            left, middle, right = st.columns([3, 2, 2])
            ids = list(titles)
            run = left.selectbox("Paired run", ids, format_func=titles.get, key="vec_run",
                                 index=ids.index(opened) if opened in ids else 0)  # fmt: skip
            method = middle.selectbox("Method", METHODS, key="vec_method",
                                      format_func=lambda m: f"{m}: {METHOD_HELP[m]}")  # fmt: skip
            hook = right.selectbox("Hook", VECTOR_HOOKS, key="vec_hook")
            layers = left.text_input("Layers", value="all", key="vec_layers", help=LAYERS_HELP)
            name = middle.text_input("Name (optional)", key="vec_name").strip()
            fields = {"run": run, "method": method, "hook": hook, "layers": layers.strip(),
                      "name": name or None}  # fmt: skip
            st.button("Compute", type="primary", key="vec_compute", on_click=_launch,
                      args=(view.path, fields))  # fmt: skip
        if outcome := st.session_state.get("vectors_message"):
            kind, text = outcome
            {"error": st.error, "success": st.success, "info": st.info}[kind](text)
        _vector_jobs(view.path)


@st.fragment(run_every=2.0)
def _vector_jobs(root: str) -> None:
    try:
        statuses = [s for s in list_jobs(root).statuses if s.job.kind == "vectors"]
    except JobError as exc:
        st.error(plain(public_text(exc)))
        return
    for status in statuses[:3]:
        job_card(status, on_cancel=functools.partial(_cancel, root))


def _cancel(root: str, job_id: str) -> None:
    try:
        cancel(root, job_id, read_only=read_only())
    except JobError as exc:
        st.session_state["vectors_message"] = ("error", plain(f"Cannot cancel {job_id}: {exc}"))


# -- steering ------------------------------------------------------------------------------------
STRENGTHS = (-1.0, -0.5, -0.3, -0.2, -0.1, -0.05, 0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
TOKEN_COUNTS = (10, 20, 40, 80, 160)
DEFAULT_PROMPT = "Tell me about your weekend."
# Measured (bench/sweep_strength.py, SmolLM2's style vector at layers 6-13, four prompts): 0.05
# changes every answer within its first 8 tokens and keeps it fluent (+0.4 nats per token under
# the unsteered model, no repetition); 0.1 already drifts (+1.5 nats, "I'm a scavenger cat") and
# 0.2 is gibberish ("gahk-gahk-gahk"). Larger values are on the slider for seeing it break.
DEFAULT_STRENGTH = 0.05
STEER_DEPTH = (0.2, 0.45)  # default layers: this band of the model's depth (see the README)
_REQUEST = "steer_request"  # session key: (store path, request id, settings) of the last request


def default_steer_layers(m: VectorSetManifest) -> list[int]:
    """The set's layers within STEER_DEPTH of the model (its middle layer if none is)."""
    low, high = STEER_DEPTH
    band = [x for x in m.layers if low <= x / max(m.n_layers - 1, 1) < high]
    return band or [m.layers[len(m.layers) // 2]]


def steer_command(view: StoreView, settings: SteerSettings) -> str:
    """`python -m extraction steer ...` for these settings, the store named as a visitor may see."""
    options = " ".join(
        [f"--prompt {shlex.quote(settings.prompt)}", f"--vector-set {settings.vector_set}",
         f"--layers {settings.layers}", f"--strength {settings.strength:g}",
         f"--max-new-tokens {settings.max_new_tokens}"]
    )  # fmt: skip
    return f"python -m extraction steer --store {shlex.quote(view.shown())} {options}"


def ask(view: StoreView, settings: SteerSettings) -> None:
    """Queue a steering request (the worker answers it); its id goes into the session."""
    try:
        req_id = submit(view.path, settings, read_only=read_only())
    except (JobError, ValueError) as exc:
        st.session_state[_REQUEST] = None
        st.session_state["steer_message"] = plain(public_text(exc))
        return
    st.session_state[_REQUEST] = (view.path, req_id, settings)
    st.session_state.pop("steer_message", None)


def answers(view: StoreView) -> None:
    """The last request's three answers side by side; while it waits, reruns itself each second."""
    if message := st.session_state.get("steer_message"):
        st.error(message)
    request = st.session_state.get(_REQUEST)
    if not request or request[0] != view.path:
        return
    path, req_id, settings = request
    outcome = poll(path, req_id)
    st.fragment(run_every=None if outcome else 1.0)(_show)(outcome, settings)


def _show(outcome: SteerOutcome | None, settings: SteerSettings) -> None:
    if outcome is None:
        request = st.session_state.get(_REQUEST)
        outcome = poll(request[0], request[1]) if request else None
        if outcome is not None:
            st.rerun()  # done: the whole page draws the answers and stops polling
        st.info("Generating in the steering worker (the first request also loads the model)...")
        return
    if outcome.state == "failed":
        st.error(plain(public_text(f"The steering request failed: {outcome.error}")))
        return
    layers = describe_layers(outcome.layers)
    titles = {"baseline": "Baseline (nothing added)",
              "steered": f"Steered: {outcome.strength:g} at layers {layers}",
              "control": "Control: a random direction of the same norm"}  # fmt: skip
    for column, (variant, title) in zip(st.columns(3), titles.items(), strict=True):
        column.markdown(f"**{title}**")
        column.code(outcome.answers[variant] or "(empty)", language=None, wrap_lines=True)
    st.caption(plain(f"{settings.prompt[:80]!r}: answered in {outcome.seconds:.1f} s (greedy)."))
