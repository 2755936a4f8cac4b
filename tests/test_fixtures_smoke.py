from store import open_store


def test_tiny_store_has_four_committed_runs(tiny_store):
    store = open_store(tiny_store["root"])
    names = sorted(m.name for m in store.runs())
    assert names == ["emo-gemma3", "emo-gpt2", "emo-llama", "pairs-llama"]
