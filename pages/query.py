"""Query page: SQL over the store's runs, samples and summaries, in the spirit of datasette.

One SELECT over the views `runs`, `samples`, `label_means`, `site_norms` and `vectors`, run
through the confined `Store.query` (ui.query: views only, the picked run bound as `$run`, rows
and values capped, a time limit), in read-only mode too. The query, the run and the row cap live
in the URL, so a link reopens the same result; the rows download as CSV.
"""

import streamlit as st

from store import StoreError
from ui import controls, links
from ui.context import current_view, plain, public_text
from ui.query import (
    DEFAULT_SQL,
    EXAMPLES,
    MAX_SQL_CHARS,
    MAX_VALUES,
    QUERY_TIMEOUT_S,
    ROW_CAPS,
    csv_bytes,
    run_query,
    view_columns,
)

st.title("Query")
view = current_view()
if not view.run_ids:
    controls.stop_empty_store(view)

with st.expander("Views and examples"):
    try:
        st.dataframe(view_columns(view), hide_index=True)
    except StoreError as exc:
        controls.show_problem(exc)
    for title, example in EXAMPLES.items():
        st.markdown(f"**{title}**")
        st.code(example, language="sql")
    st.caption(
        "`label_means` and `site_norms` come from the runs' summaries; `vectors` holds every "
        f"vector, so a result stops at {MAX_VALUES:,} values (a vector counts its width). "
        "`l2(v)` is a vector's L2 norm."
    )

columns = st.columns([2, 1])
newest_first = [m.run_id for m in view.store.runs()]
run_id = controls.pick_one(columns[0], "Run (bound as $run)", newest_first, key="run", what="run")
max_rows = controls.pick_count(columns[1], "Rows at most", ROW_CAPS, value=ROW_CAPS[1], key="rows")
sql = links.pinned_text(
    st.text_area, "SQL (one SELECT; Ctrl+Enter runs it)", key="sql", default=DEFAULT_SQL,
    max_chars=MAX_SQL_CHARS, what="query", height=160,
)  # fmt: skip
if not sql.strip():
    st.info("Write a SELECT over the views above.")
    links.stop()

try:
    result = run_query(view, sql, run_id, max_rows)
except StoreError as exc:
    st.error(plain(public_text(exc)))
    links.stop()

frame = result.frame
if result.truncated:
    st.warning(
        f"Showing the first {len(frame):,} rows: the query has more (at most {max_rows:,} rows "
        f"and {MAX_VALUES:,} values come back). Narrow it, or raise the row cap."
    )
for damaged in result.skipped_runs:
    st.caption(plain(public_text(f"Left out of the views: {damaged.folder} ({damaged.reason})")))
st.dataframe(frame, hide_index=True)
st.caption(f"{len(frame):,} rows, {len(frame.columns)} columns; queries stop after "
           f"{QUERY_TIMEOUT_S:g} s.")  # fmt: skip
st.download_button("Download CSV", csv_bytes(frame), file_name="query.csv", mime="text/csv")
