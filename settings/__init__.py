"""Settings shared by every layer, with no dependency beyond the standard library.

`settings.run`: the vocabulary and options of an extraction run (hooks, positions, dtypes, the
layer grammar, run ids, `RunSettings` and its command line). `settings.env`: the `ACTX_*`
settings table and the fail-closed read-only switch. Nothing here imports torch, streamlit or
duckdb, so the store, the job registry, the app and a hosted copy all share one truth.
"""
