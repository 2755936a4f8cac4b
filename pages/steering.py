"""Steering page: answer a prompt with a vector set added, next to the baseline and a control.

Prompt, vector set, layers and strength (in units of each layer's typical residual norm, so one
value means the same at every layer); the answers come back side by side: baseline (nothing
added), steered, and a random direction of the same norm at the same layers. Generation runs in
the steering worker (jobs.steering: a separate process that keeps the model loaded for the next
request), never in this process, which never imports torch. Read-only mode starts no worker: the
page says so and shows the `python -m extraction steer` command instead. The set, layers,
strength and length live in the URL; the prompt does not (it is free text).
"""

import streamlit as st

from settings.vectors import MAX_PROMPT_CHARS, SteerSettings
from store import StoreError
from ui import links, vectors
from ui.context import current_view, plain, public_text, read_only

st.title("Steering")
view = current_view()
try:
    sets = vectors.vector_sets(view)[0]
except StoreError as exc:
    st.error(plain(public_text(exc)))
    links.stop()
if not sets:
    st.info(
        f"The store {plain(view.name)} has no vector sets to steer with: compute one on the "
        "Vectors page (or with `python -m extraction vectors`)."
    )
    links.page_links([links.OpenIn("pages/vectors.py", "Vectors", {})])
    links.stop()

by_id = {m.set_id: m for m in sets}
top, middle = st.columns([3, 2]), st.columns([3, 1, 1])
set_id = links.pinned(
    top[0].selectbox, "Vector set", list(by_id), key="set", what="vector set",
    default=sets[0].set_id, format_func=lambda i: vectors.set_label(by_id[i]),
)  # fmt: skip
m = by_id[set_id]
layers = links.pinned(
    top[1].multiselect, "Layers", list(m.layers), key="steer_layers", what="layer", many=True,
    default=vectors.default_steer_layers(m),
    help="Where the vector is added (to each block's output at resid_post). Layers of a band "
    "add up: the default is a band a fifth to under half of the way through the model.",
)  # fmt: skip
strength = links.pinned(
    middle[1].select_slider, "Strength", vectors.STRENGTHS, key="strength", what="strength",
    default=vectors.DEFAULT_STRENGTH, help=f"Times each layer's typical residual norm; "
    f"positive steers toward {m.second_label!r}, negative toward {m.first_label!r}.",
)  # fmt: skip
tokens = links.pinned(
    middle[2].select_slider, "New tokens", vectors.TOKEN_COUNTS, key="tokens",
    what="number of new tokens", default=40,
)  # fmt: skip
prompt = middle[0].text_area("Prompt", vectors.DEFAULT_PROMPT, max_chars=MAX_PROMPT_CHARS,
                             key="prompt", height=90)  # fmt: skip
links.page_links([links.OpenIn("pages/vectors.py", "Vectors", {"set": set_id})])
if not layers:
    st.info("Pick at least one layer to add the vector at.")
    links.stop()
try:
    settings = SteerSettings(prompt=prompt, vector_set=set_id, strength=strength,
                             layers=",".join(map(str, layers)), max_new_tokens=tokens)  # fmt: skip
except ValueError as exc:
    st.warning(plain(exc))
    links.stop()

if read_only() or view.on_object_storage:
    why = "This app is read-only" if read_only() else "This store is on object storage"
    st.info(
        f"{why}: it starts no steering worker, so nothing is generated here. "
        "The same request from the command line:"
    )
    st.code(vectors.steer_command(view, settings), language="bash", wrap_lines=True)
    links.stop()
st.button("Generate", type="primary", key="generate", on_click=vectors.ask,
          args=(view, settings))  # fmt: skip
vectors.answers(view)
