"""GGUF output types and which type each tensor gets, as llama.cpp's converter decides it.

Rules (llama.cpp conversion/base.py ModelBase.prepare_tensors and MmprojModel.tensor_force_quant, checked at
commit 0c1e57098 through the notes in docs/notes-gguf.md), in order:
1. 1-D tensors (norms, biases, `v.token_embd.img_break`) and `*_norm.weight` stay F32;
2. `v.patch_embd.weight` (the 4-D patch convolution) is F16 in an F16 file and F32 otherwise;
3. a block type whose block does not divide a row (Q8_0: 32) falls back to F16, as the converter's QuantError does;
4. everything else gets the requested type.
Encoding is `gguf.quants.quantize` (the package's own F16/BF16/Q8_0 code; K-quants are llama.cpp's, not here).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ...errors import UsageError, require

# Output type name → (GGMLQuantizationType member, LlamaFileType member written as general.file_type).
OUTPUT_TYPES: dict[str, tuple[str, str]] = {
    "f32": ("F32", "ALL_F32"),
    "f16": ("F16", "MOSTLY_F16"),
    "bf16": ("BF16", "MOSTLY_BF16"),
    "q8_0": ("Q8_0", "MOSTLY_Q8_0"),
}
PATCH_EMBD = "v.patch_embd.weight"
FALLBACK = "F16"  # what the converter writes when a row does not split into blocks


def _gguf():
    return require("gguf", "gguf")


def check_output_type(name: str) -> str:
    """The output type name, lower-cased; UsageError listing the valid ones otherwise."""
    key = name.lower()
    if key not in OUTPUT_TYPES:
        raise UsageError(f"unknown GGUF output type {name!r}", where="dtype",
                         fix=f"use one of: {', '.join(OUTPUT_TYPES)} (K-quants come from llama.cpp's quantizer)")
    return key


def qtype(name: str):
    """GGMLQuantizationType of an output type name ('q8_0' → Q8_0)."""
    return _gguf().GGMLQuantizationType[OUTPUT_TYPES[check_output_type(name)][0]]


def file_type(name: str):
    """LlamaFileType written as general.file_type for an output type name ('f16' → MOSTLY_F16)."""
    return _gguf().LlamaFileType[OUTPUT_TYPES[check_output_type(name)][1]]


def tensor_type(gguf_name: str, shape: tuple[int, ...], output: str):
    """GGMLQuantizationType of one tensor (rules 1-4 of the module docstring). shape: the PyTorch shape."""
    gguf = _gguf()
    Q = gguf.GGMLQuantizationType
    if len(shape) <= 1 or gguf_name.endswith("_norm.weight"):
        return Q.F32
    if gguf_name == PATCH_EMBD:
        return Q.F16 if check_output_type(output) == "f16" else Q.F32
    wanted = qtype(output)
    block, _ = gguf.GGML_QUANT_SIZES[wanted]
    return wanted if shape[-1] % block == 0 else Q[FALLBACK]


def nbytes(shape: tuple[int, ...], qt) -> int:
    """Bytes of a tensor of PyTorch `shape` stored as GGML type `qt` (blocks along the last axis)."""
    block, type_size = _gguf().GGML_QUANT_SIZES[qt]
    return math.prod(shape) // block * type_size


def encode(tensor: torch.Tensor, qt) -> np.ndarray:
    """tensor (any float dtype, PyTorch shape) → the array GGUF stores: float32/float16 with the same shape, or
    uint8 bytes [..., row bytes] for BF16/Q8_0. Goes through float32 like llama.cpp's converter (bf16 → f32 is
    exact, so F16 equals a direct bf16 → f16 cast)."""
    return _gguf().quants.quantize(tensor.to(torch.float32).numpy(), qt)
