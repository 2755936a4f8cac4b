"""Activation Explorer: the Streamlit entry point (`streamlit run app.py`).

Sets up the store once (sidebar) and the navigation; each page in pages/ reads it through
`ui.context`. This process never imports torch: runs are made by `python -m extraction`.
"""

import streamlit as st

from ui.context import default_store_path

st.set_page_config(page_title="Activation Explorer", layout="wide")

with st.sidebar:
    st.session_state["store_path"] = st.text_input(
        "Store directory", value=default_store_path(), help="A folder of runs (ACTX_STORE)."
    )

PAGES = [
    st.Page("pages/runs.py", title="Runs", icon=":material/table_rows:", default=True),
]
navigation = st.navigation(PAGES)
navigation.run()
