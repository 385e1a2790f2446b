"""Mistral-native Pixtral: params.json with a vision_encoder, consolidated.safetensors or
consolidated-0000N-of-0000M.safetensors shards, tensors in Mistral's names with interleaved q/k rows."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import torch

from ..errors import InputError
from . import names
from .files import TensorInfo, read_json
from .params import params_to_config

PARAMS = "params.json"
SINGLE = "consolidated.safetensors"
SHARD = re.compile(r"^consolidated-(\d+)-of-(\d+)\.safetensors$")
ADAPTER_BIASES = ("vision_language_adapter.w_in.bias", "vision_language_adapter.w_out.bias")


def read_config(directory: Path, tensors: Mapping[str, TensorInfo] | None = None):
    """params.json → LlavaConfig. With weights present, the projector bias follows the presence of the
    adapter biases (as transformers' converter does) and the dtype is the weights' most common float dtype."""
    path = directory / PARAMS
    params = read_json(path)
    dtype = _weights_dtype(tensors) if tensors else "bfloat16"  # Mistral ships bf16
    config = params_to_config(params, where=str(path), dtype=dtype)
    if tensors:
        config.multimodal_projector_bias = any(name in tensors for name in ADAPTER_BIASES)
    return config


def _weights_dtype(tensors: Mapping[str, TensorInfo]) -> str:
    floats = Counter(t.dtype for t in tensors.values() if t.dtype.startswith(("bfloat", "float")))
    return floats.most_common(1)[0][0] if floats else "bfloat16"


def weight_files(directory: Path) -> tuple[Path, ...]:
    """consolidated.safetensors, or every consolidated-0000N-of-0000M shard (all M must be there); () if none."""
    if (directory / SINGLE).is_file():
        return (directory / SINGLE,)
    shards = sorted((int(m.group(1)), int(m.group(2)), p) for p in directory.glob("consolidated-*.safetensors")
                    if (m := SHARD.match(p.name)))
    if not shards:
        return ()
    total = shards[0][1]
    have = {n for n, of, _ in shards if of == total}
    if have != set(range(1, total + 1)) or any(of != total for _, of, _ in shards):
        missing = sorted(set(range(1, total + 1)) - have)
        raise InputError(f"the consolidated shards are incomplete (of {total}: missing {missing or 'none'}, "
                         f"or shards of different sets are mixed)", where=directory,
                         fix="download every consolidated-0000N-of-0000M.safetensors of one set")
    return tuple(p for _, _, p in shards)


def runtime_name(name: str) -> tuple[str, str] | None:
    """Native name → (runtime name, 'native'); None for a name Pixtral does not have."""
    mapped = names.native_to_runtime(name, None, None)
    return (mapped[0], "native") if mapped else None


def convert(name: str, tensor: torch.Tensor, config) -> torch.Tensor:
    """Native tensor → HF layout (q/k rows from interleaved pairs to rotate-half); shape and dtype kept."""
    return names.native_to_runtime(name, tensor, config)[1]
