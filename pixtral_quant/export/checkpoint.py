"""The checkpoint files: safetensors shards (+ index) in the Hugging Face checkpoint spelling
(`language_model.model.layers.N...`, what save_pretrained writes, what transformers 5 and every vLLM version's
Llava loader read), config.json with `quantization_config`, the tokenizer/processor files and
generation_config.json copied from the source — the Hugging Face processor and tokenizer files generated from
the Mistral tokenizer when the source has none (export.processor), so AutoProcessor and vLLM can load it."""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import torch

from ..loading import names
from ..loading.tokenizer import find_tokenizer
from ..loading.write import write_shards
from .processor import missing_groups, write_processor_files

# Files copied from the source directory when present (tokenizers, processor, chat template).
SIDE_FILES = ("tekken.json", "tokenizer.model.v7m1", "tokenizer.model.v7", "tokenizer.model.v3", "tokenizer.json",
              "tokenizer_config.json", "special_tokens_map.json", "preprocessor_config.json",
              "processor_config.json", "chat_template.json", "chat_template.jinja", "generation_config.json")
INDEX = "model.safetensors.index.json"


def checkpoint_name(runtime_name: str) -> str:
    """Runtime tensor name (any suffix: weight, qweight, SCB, weight.absmax ...) → checkpoint spelling."""
    converted = names.runtime_to_checkpoint(runtime_name)
    if converted is None:
        raise ValueError(f"{runtime_name} is not a Pixtral tensor name")
    return converted


def write_tensors(items: Iterator[tuple[str, torch.Tensor]], out: Path, max_shard_bytes: int) -> dict[str, str]:
    """(runtime name, tensor) pairs → shards in `out` (+ index when several); returns name → file."""
    total = [0]

    def renamed():
        for name, tensor in items:
            total[0] += tensor.numel() * tensor.element_size()
            yield checkpoint_name(name), tensor

    weight_map = write_shards(renamed(), out, "hf", max_shard_bytes)
    if len(set(weight_map.values())) > 1:
        index = {"metadata": {"total_size": total[0]}, "weight_map": dict(sorted(weight_map.items()))}
        (out / INDEX).write_text(json.dumps(index, indent=2) + "\n")
    return weight_map


def write_config(config, quantization_config: dict, out: Path) -> None:
    """config.json: the source config, dtype bfloat16 (the unquantized tensors), quantization_config."""
    config = copy.deepcopy(config)
    config.dtype = torch.bfloat16
    config.quantization_config = quantization_config
    config.save_pretrained(out)


def copy_side_files(source: Path, out: Path, config) -> list[str]:
    """Copy tokenizer/processor/generation files; generate the Hugging Face tokenizer/processor files the
    source lacks from its Mistral tokenizer, and a generation_config.json when the source has none.
    Returns the names written into `out`."""
    copied = []
    for name in SIDE_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, out / name)
            copied.append(name)
    found = find_tokenizer(source)
    if found is not None and found[0] == "mistral":
        written = write_processor_files(out, config, found[1], missing_groups(source))
        copied += [name for name in written if name not in copied]  # a stray copied chat template is replaced
    if "generation_config.json" not in copied:
        from transformers import GenerationConfig

        text = config.text_config
        GenerationConfig(bos_token_id=text.bos_token_id, eos_token_id=text.eos_token_id).save_pretrained(out)
        copied.append("generation_config.json")
    return copied
