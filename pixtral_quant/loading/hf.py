"""Hugging Face-format Pixtral: config.json (model_type llava, Pixtral vision tower) and model.safetensors
or shards listed in model.safetensors.index.json, tensors in the checkpoint or the runtime spelling."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from ..errors import InputError
from . import names
from .files import TensorInfo, read_json

CONFIG = "config.json"
SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"
PIXTRAL_ONLY = "pixtral-quant reads Pixtral models (LlavaForConditionalGeneration with a Pixtral vision tower)"


def read_config(directory: Path, tensors: Mapping[str, TensorInfo] | None = None):
    """config.json → LlavaConfig; InputError unless it is a llava config with a Pixtral vision tower.
    `tensors` (unused here) keeps the signature shared with native.read_config."""
    from transformers import LlavaConfig

    path = directory / CONFIG
    raw = read_json(path)
    if raw.get("model_type") != "llava":
        raise InputError(f"model_type is {raw.get('model_type')!r}, not 'llava'", where=path, fix=PIXTRAL_ONLY)
    # LlavaConfig silently defaults a vision_config without model_type to CLIP: check the raw file.
    vision_type = (raw.get("vision_config") or {}).get("model_type", "clip_vision_model (the llava default)")
    if vision_type != "pixtral":
        raise InputError(f"the vision tower is {vision_type}, not Pixtral: only Pixtral vision towers are supported",
                         where=path, fix=PIXTRAL_ONLY + "; LLaVA-1.5/CLIP models are out of scope")
    try:
        return LlavaConfig.from_dict(raw)
    except (TypeError, ValueError, KeyError) as exc:
        raise InputError(f"transformers cannot build a config from it ({exc})", where=path,
                         fix="replace it with the original config.json of the model") from None


def weight_files(directory: Path) -> tuple[Path, ...]:
    """The safetensors files holding the weights, in index order; () for a config-only directory."""
    index = directory / INDEX
    if index.is_file():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise InputError("the index has no weight_map", where=index, fix="re-download the index file")
        files = tuple(directory / name for name in dict.fromkeys(weight_map.values()))
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise InputError(f"shards listed in the index are missing: {', '.join(missing)}", where=index,
                             fix="download the missing shards into this directory")
        return files
    if (directory / SINGLE).is_file():
        return (directory / SINGLE,)
    if any(directory.glob("*.bin")) or any(directory.glob("*.pt")):
        raise InputError("only PyTorch pickle weights (*.bin / *.pt) are here", where=directory,
                         fix="use the model's .safetensors files (transformers' save_pretrained writes them)")
    return ()


def runtime_name(name: str) -> tuple[str, str] | None:
    """On-disk name → (runtime name, 'checkpoint' | 'runtime'); None for a name Pixtral does not have."""
    return names.hf_to_runtime(name)


def convert(name: str, tensor: torch.Tensor, config) -> torch.Tensor:
    """HF tensors are already in the runtime layout: returned as they are."""
    return tensor
