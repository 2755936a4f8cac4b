"""Activation Explorer: the Streamlit entry point (`streamlit run app.py`).

Sets up the store once (sidebar) and the navigation; each page in pages/ reads it through
`ui.context`. This process never imports torch: runs are made by `python -m extraction`.
Read-only mode (`settings.env.read_only()`, fail-closed) drops the store box and the New run
page, and every page runs inside `run_page`, so a visitor never sees a traceback.
"""

from pathlib import Path

import streamlit as st

from ui import links
from ui.context import (
    CREATE_KEY,
    default_store_path,
    hide_error_details,
    page,
    plain,
    read_only,
    run_page,
)

hide_error_details()
st.set_page_config(page_title="Activation Explorer", layout="wide")
locked = read_only()

with st.sidebar:
    if locked:  # hosted: a visitor must not point the app at another folder, nor see its path
        st.caption(f"Read-only store: {plain(Path(default_store_path()).name)}")
    else:
        st.session_state["store_path"] = st.text_input(
            "Store directory", value=default_store_path(), key="store_box",
            help="A folder of runs (ACTX_STORE).",
        )  # fmt: skip
        st.checkbox(
            "Create it if missing", key=CREATE_KEY,
            help="Make a new, empty store at this path. Without it a folder that does not exist "
            "is refused, so a typo does not silently start an empty store.",
        )  # fmt: skip

PAGES = [
    page("pages/runs.py", title="Runs", icon=":material/table_rows:", default=True),
    page("pages/directions.py", title="Directions", icon=":material/north_east:"),
    page("pages/cross_model.py", title="Cross-model", icon=":material/compare_arrows:"),
    page("pages/pairs.py", title="Pairs", icon=":material/difference:"),
    page("pages/propositions.py", title="Propositions", icon=":material/forum:"),
    page("pages/features.py", title="Features", icon=":material/scatter_plot:"),
    page("pages/query.py", title="Query", icon=":material/database:"),
    page("pages/vectors.py", title="Vectors", icon=":material/trending_flat:"),
    # In read-only mode the page shows the command instead: it starts no worker there.
    page("pages/steering.py", title="Steering", icon=":material/tune:"),
]
if not locked:  # read-only: not in the navigation, and the page refuses by itself too
    PAGES.append(page("pages/new_run.py", title="New run", icon=":material/play_circle:"))
shown = st.navigation(PAGES)
run_page(lambda: links.run_pinned(shown.run))  # the view's settings go into the URL (ui.links)
