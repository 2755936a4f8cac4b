"""Streamlit glue shared by app.py and the pages: the cached store and cached store reads.

Imports nothing heavy: no torch, no transformers (the app process must stay light and a hosted
copy installs without them). Every cached function takes all its inputs as arguments.
"""
