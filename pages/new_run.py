"""New run page: start an extraction from the browser; watch, read and cancel the jobs.

Widgets only. The widgets build a `settings.run.RunSettings` (validated where it is made), and
`jobs.launch` starts it as a separate process (this process never imports torch); it survives
reloads and closed browsers. The jobs list is a fragment that reruns itself every few seconds,
with unreadable job records listed apart. The settings are bound to the URL, so a link (the
Pairs page makes one, via ui.jobs.prefill_query) opens the page filled in. Before Launch the
page previews the dataset (samples, labels with counts) and the run's size; a finished job links
to its run in the analysis pages it fits (ui.jobs). Every error is shown as one line of text.
In read-only mode (`settings.env.read_only()`) the page is not in the navigation, and refuses
here too when opened directly; the job layer refuses as well.
"""

import streamlit as st

from extraction.datasets import DatasetError, builtin_datasets
from jobs import JobError, cancel, launch, list_jobs, list_uploads, save_upload
from settings.env import read_only
from settings.run import HOOKS, LAYERS_HELP, MAX_BATCH_SIZE, POSITIONS, STORAGE_DTYPES, RunSettings
from ui.context import current_view, plain
from ui.controls import BIND
from ui.jobs import (
    DATASET_KINDS,
    MODEL_KINDS,
    check_upload,
    describe_broken,
    embedded_models,
    job_card,
    max_running,
    show_preview,
    store_runs,
    upload_label,
    upload_limit_bytes,
)

REFRESH_SECONDS = 2.0
SHOWN_JOBS = 15

st.title("New run")
if read_only():
    st.error("This app is read-only: runs cannot be started, uploaded or cancelled here.")
    st.stop()

view = current_view()  # an error and a stop if the store is refused
if view.on_object_storage:  # jobs and uploads live in a local store's folder (jobs.paths)
    st.info(
        "This store is on object storage: start runs into it from the command line, "
        "`python -m extraction run ... --store <the store's URI>`, and they show up here."
    )
    st.stop()
root = view.store.root
try:
    limit = upload_limit_bytes()
    slots = max_running()
except ValueError as exc:
    st.error(plain(exc))
    st.stop()

left, right = st.columns(2)
with left:
    model_kind = st.radio("Model", MODEL_KINDS, horizontal=True, key="model_kind", bind=BIND)
    if model_kind == MODEL_KINDS[0]:
        model = st.selectbox("Embedded model", embedded_models(), key="model_embedded", bind=BIND)
    else:
        model = st.text_input(
            "Model id or folder",
            key="model_other",
            bind=BIND,
            placeholder="org/name or /path/to/model",
            help="A Hugging Face id needs its weights in the local cache (no hub access here).",
        ).strip()

with right:
    dataset_kind = st.radio(
        "Dataset", DATASET_KINDS, horizontal=True, key="dataset_kind", bind=BIND
    )
    dataset = None
    if dataset_kind == DATASET_KINDS[0]:
        choices = {name: name for name in builtin_datasets()}
        choices.update({upload_label(p): str(p) for p in list_uploads(root)})
        picked = st.selectbox("Dataset", list(choices), key="dataset_pick", bind=BIND)
        dataset = choices.get(picked)
    else:
        upload = st.file_uploader(
            "JSONL or CSV: text and label columns; optional id, pair_id, side, category",
            type=["jsonl", "csv"],
            max_upload_size=max(1, limit // 2**20),
            key="dataset_upload",
        )
        if upload is not None:
            data = upload.getvalue()
            try:
                check_upload(upload.name, data, limit)
                path = save_upload(root, upload.name, data, read_only=read_only(), max_bytes=limit)
            except (DatasetError, JobError) as exc:
                st.error(plain(f"Not usable: {exc}"))
            else:
                dataset = str(path)
                st.success("Checked and saved: what it holds is shown below.")

hooks_col, positions_col, layers_col = st.columns(3)
hooks = hooks_col.multiselect("Hooks", HOOKS, default=["resid_post"], key="hooks", bind=BIND)
positions = positions_col.multiselect(
    "Positions", POSITIONS, default=["last", "mean"], key="positions", bind=BIND
)
layers = layers_col.text_input("Layers", value="all", key="layers", bind=BIND, help=LAYERS_HELP)
dtype_col, name_col, batch_col = st.columns(3)
dtype = dtype_col.radio("Stored as", STORAGE_DTYPES, horizontal=True, key="dtype", bind=BIND)
name = name_col.text_input("Name (optional)", key="name", help="letters, digits, . _ -").strip()
batch_size = batch_col.number_input(
    "Batch size", min_value=1, max_value=MAX_BATCH_SIZE, value=16, key="batch_size"
)


show_preview(dataset, model, hooks, positions, layers, dtype, store_runs())


def _launch(fields: dict) -> None:
    # A callback, with the values shown when Launch was clicked: it runs before the script, so
    # neither a rerun nor the jobs fragment can drop the click, and the outcome stays on screen.
    try:
        settings = RunSettings(**fields)
        job, created = launch(root, settings, read_only=read_only(), max_running=slots)
    except (ValueError, JobError) as exc:
        st.session_state["launch_message"] = ("error", plain(exc))
    else:
        if created and job.state == "failed":
            text = f"Job `{job.job_id}` could not start: {plain(job.error)}"
            st.session_state["launch_message"] = ("error", text)
        elif created:
            text = f"Started job `{job.job_id}` (run `{job.run_id}`)."
            st.session_state["launch_message"] = ("success", text)
        else:
            text = f"The same settings are already {job.state} as job `{job.job_id}`."
            st.session_state["launch_message"] = ("info", text)


fields = dict(
    model=model,
    dataset=dataset,
    hooks=tuple(hooks),
    layers=layers,
    positions=tuple(positions),
    dtype=dtype,
    name=name or None,
    batch_size=int(batch_size),
)
st.button(
    "Launch",
    type="primary",
    key="launch",
    disabled=not (model and dataset),
    on_click=_launch,
    args=(fields,),
)
if outcome := st.session_state.get("launch_message"):
    kind, text = outcome
    {"error": st.error, "success": st.success, "info": st.info}[kind](text)


def _cancel(job_id: str) -> None:
    try:
        job = cancel(root, job_id, read_only=read_only())
        st.session_state["job_message"] = f"Job `{job_id}` {job.state}."
    except JobError as exc:
        st.session_state["job_message"] = plain(f"Cannot cancel {job_id}: {exc}")


@st.fragment(run_every=REFRESH_SECONDS)
def jobs_panel() -> None:
    st.subheader("Jobs")
    try:
        listing = list_jobs(root)
    except JobError as exc:
        st.error(plain(exc))
        return
    st.caption(f"At most {slots} running at once; later launches queue. Updated every 2 s.")
    if message := st.session_state.pop("job_message", None):
        st.info(message)
    statuses = listing.statuses
    if not statuses:
        st.caption("No jobs yet.")
    runs = store_runs()
    for status in statuses[:SHOWN_JOBS]:
        job_card(status, on_cancel=_cancel, runs=runs)
    if len(statuses) > SHOWN_JOBS:
        st.caption(f"{len(statuses) - SHOWN_JOBS} older jobs not shown.")
    if listing.broken:
        with st.expander(f"Unreadable job records ({len(listing.broken)}), skipped"):
            st.text("\n".join(describe_broken(b) for b in listing.broken))


jobs_panel()
