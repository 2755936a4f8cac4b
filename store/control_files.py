"""A vector set as files other tools read: PyTorch `.pt` and llama.cpp's control-vector GGUF.

Both are made in memory from a checked `VectorSet`, so the app serves them without torch:

* `.pt`: `{layer: tensor[d_model]}` (float32), keys in this project's layer numbering (block L,
  0-based; a `resid_post` vector is added to block L's output, a `resid_pre` one to its input),
  loadable with `torch.load(path, weights_only=True)`. It is PyTorch's zip format written here:
  `archive/data.pkl`, a fixed sequence of pickle opcodes that names only the three globals the
  weights-only loader allows (`torch._utils._rebuild_tensor_v2`, `torch.FloatStorage`,
  `collections.OrderedDict`), one raw little-endian float32 record per tensor, and the
  `version`/`byteorder` records. Nothing here reads a pickle.
* GGUF: llama.cpp's layout (`common_control_vector_load_one` in common/common.cpp): architecture
  `controlvector`, one 1-D float32 tensor `direction.N` per layer, `controlvector.model_hint`
  (the model type, as repeng writes it) and `controlvector.layer_count`. llama.cpp adds
  `direction.N` to the output of its block N (0-based, `build_cvec(cur, il)` at the end of each
  block) and refuses N = 0. So a `resid_post` vector of layer L is `direction.L`, a `resid_pre`
  vector of layer L (the output of block L-1) is `direction.(L-1)`, and a vector that would need
  N < 1 is left out (`llama_cpp_layers` says which). Written with the `gguf` package.

`scaled=True` multiplies each layer's unit vector by that layer's typical residual norm: then a
strength s (llama.cpp `--control-vector-scaled file s`, or `s * vector` in your own hook) means
what strength s means on the Steering page. Unit vectors otherwise.
"""

from __future__ import annotations

import io
import struct
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from store.vectorsets import VectorSet

GGUF_ARCH = "controlvector"


def layer_arrays(vector_set: VectorSet, scaled: bool = False) -> dict[int, np.ndarray]:
    """{layer: float32 [d]} of a set, unit or scaled to each layer's typical norm."""
    factors = vector_set.typical_norm if scaled else np.ones(len(vector_set.layers))
    return {
        layer: (vector_set.vectors[i].astype(np.float64) * factors[i]).astype(np.float32)
        for i, layer in enumerate(vector_set.layers)
    }


# -- .pt -----------------------------------------------------------------------------------------
def _unicode(text: str) -> bytes:
    data = text.encode("utf-8")
    return b"X" + struct.pack("<I", len(data)) + data  # BINUNICODE


def _int(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)  # BININT


def _data_pkl(sizes: Mapping[int, int]) -> bytes:
    """The pickle opcodes of a dict {key: float32 tensor of `size` elements, storage `key`}."""
    out = bytearray(b"\x80\x02}(")  # PROTO 2, EMPTY_DICT, MARK
    for key, size in sizes.items():
        out += _int(key)
        out += b"ctorch._utils\n_rebuild_tensor_v2\n("  # GLOBAL, MARK (its arguments)
        # persistent id ('storage', FloatStorage, key, 'cpu', numel) -> BINPERSID
        out += b"(" + _unicode("storage") + b"ctorch\nFloatStorage\n" + _unicode(str(key))
        out += _unicode("cpu") + _int(size) + b"tQ"
        out += _int(0) + b"(" + _int(size) + b"t(" + _int(1) + b"t"  # offset, size, stride
        out += b"\x89ccollections\nOrderedDict\n)R"  # requires_grad False, empty hooks
        out += b"tR"  # TUPLE of the arguments, REDUCE
    out += b"u."  # SETITEMS, STOP
    return bytes(out)


def pt_bytes(vectors: Mapping[int, np.ndarray]) -> bytes:
    """`torch.save({layer: tensor})`'s file, without torch. vectors: {int: [d] float32}."""
    if not vectors:
        raise ValueError("no vectors to write")
    arrays = {int(k): np.ascontiguousarray(v, dtype="<f4").reshape(-1) for k, v in vectors.items()}
    if any(k < 0 or k >= 2**31 for k in arrays):
        raise ValueError("layer keys must be whole numbers 0..2**31-1")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", _data_pkl({k: v.size for k, v in arrays.items()}))
        archive.writestr("archive/byteorder", "little")
        for key, array in arrays.items():
            archive.writestr(f"archive/data/{key}", array.tobytes())
        archive.writestr("archive/version", "3\n")
    return buffer.getvalue()


# -- GGUF ----------------------------------------------------------------------------------------
def llama_cpp_layers(hook: str, layers) -> dict[int, int]:
    """{our layer: llama.cpp's N} for the layers llama.cpp can take (N >= 1)."""
    shift = {"resid_post": 0, "resid_pre": -1}[hook]
    return {layer: layer + shift for layer in layers if layer + shift >= 1}


def gguf_bytes(vectors: Mapping[int, np.ndarray], hook: str, model_hint: str) -> bytes:
    """llama.cpp's control-vector GGUF of {our layer: [d]}; layers it cannot take are left out
    (ValueError if that leaves none)."""
    import gguf  # imported here: only a download or an export needs it

    numbering = llama_cpp_layers(hook, sorted(vectors))
    if not numbering:
        raise ValueError(
            f"none of layers {sorted(vectors)} of {hook} maps to a llama.cpp layer >= 1"
        )
    with tempfile.TemporaryDirectory(prefix="actx-gguf-") as folder:
        path = Path(folder) / "control.gguf"
        writer = gguf.GGUFWriter(str(path), GGUF_ARCH)
        writer.add_string(f"{GGUF_ARCH}.model_hint", model_hint or "unknown")
        writer.add_uint32(f"{GGUF_ARCH}.layer_count", len(numbering))
        for layer, n in numbering.items():
            writer.add_tensor(f"direction.{n}", np.ascontiguousarray(vectors[layer], np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        return path.read_bytes()


def vector_set_files(vector_set: VectorSet, scaled: bool = False) -> dict[str, bytes]:
    """{'pt': ..., 'gguf': ...}: both files of a set (GGUF needs the `gguf` package)."""
    arrays = layer_arrays(vector_set, scaled)
    manifest = vector_set.manifest
    return {
        "pt": pt_bytes(arrays),
        "gguf": gguf_bytes(arrays, manifest.hook, manifest.architecture),
    }
