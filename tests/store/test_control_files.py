"""A vector set as `.pt` (read back with torch.load(weights_only=True)) and as llama.cpp's
control-vector GGUF (read back with the gguf package): the same numbers, llama.cpp's numbering."""

from __future__ import annotations

import io

import gguf
import numpy as np
import pytest
import torch

from store import open_store
from store.control_files import gguf_bytes, layer_arrays, llama_cpp_layers, pt_bytes


@pytest.fixture(scope="module")
def vector_set(tiny_paired_store):
    return open_store(tiny_paired_store["root"]).vector_set(tiny_paired_store["set_id"])


@pytest.mark.parametrize("scaled", [False, True])
def test_pt_reads_back_equal_with_weights_only(vector_set, scaled):
    arrays = layer_arrays(vector_set, scaled)
    loaded = torch.load(io.BytesIO(pt_bytes(arrays)), weights_only=True)
    assert sorted(loaded) == list(vector_set.layers)
    for i, layer in enumerate(vector_set.layers):
        assert loaded[layer].dtype == torch.float32 and loaded[layer].shape == (32,)
        expected = vector_set.vectors[i] * (vector_set.typical_norm[i] if scaled else 1.0)
        np.testing.assert_allclose(loaded[layer].numpy(), expected, rtol=1e-6)


def test_gguf_reads_back_in_llama_cpp_layout(vector_set, tmp_path):
    arrays = layer_arrays(vector_set)
    path = tmp_path / "v.gguf"
    path.write_bytes(gguf_bytes(arrays, "resid_post", "llama"))
    reader = gguf.GGUFReader(path)
    assert reader.get_field("general.architecture").contents() == "controlvector"
    assert reader.get_field("controlvector.model_hint").contents() == "llama"
    # llama.cpp refuses direction.0 (it can only add to a block's output, from block 1 on)
    names = {t.name: t for t in reader.tensors}
    assert sorted(names) == ["direction.1", "direction.2", "direction.3"]
    assert reader.get_field("controlvector.layer_count").contents() == 3
    for layer in (1, 2, 3):
        tensor = names[f"direction.{layer}"]
        assert tensor.tensor_type == gguf.GGMLQuantizationType.F32
        np.testing.assert_array_equal(np.asarray(tensor.data), arrays[layer])


def test_llama_cpp_numbering_of_each_hook():
    assert llama_cpp_layers("resid_post", [0, 1, 5]) == {1: 1, 5: 5}
    # resid_pre[L] is the input of block L = the output of block L-1
    assert llama_cpp_layers("resid_pre", [0, 1, 5]) == {5: 4}
    with pytest.raises(ValueError, match="maps to a llama.cpp layer"):
        gguf_bytes({0: np.ones(4, np.float32)}, "resid_post", "llama")
    with pytest.raises(ValueError, match="no vectors"):
        pt_bytes({})
