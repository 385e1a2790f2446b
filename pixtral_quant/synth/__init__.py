"""Synthetic Pixtral checkpoints: random weights at the real shapes of a config, written shard by shard with one
tensor in memory at a time, in Hugging Face or Mistral-native format. For scale and memory tests, never for
accuracy.

    from pixtral_quant.synth import synthesize
    synthesize("pixtral-12b", "/data/synth-12b")                   # 12B at full size, HF format
    synthesize("pixtral-large", "/data/large-4", layers=4)         # 4 of 88 decoder layers at full width
    synthesize("tiny", "/tmp/t", fmt="native", outliers=Outliers(4))
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import InputError, UsageError
from ..loading import names
from ..loading.arch import expected_shapes
from ..loading.write import DEFAULT_SHARD_BYTES, SHARD_NAMES
from .weights import Outliers, make_tensor
from .writer import Spec, plan_shards, write_file

__all__ = ["Outliers", "SynthResult", "synthesize"]

# Runtime name → on-disk name per format (native q/k rows are random either way: no permutation needed).
DISK_NAMES = {"hf": names.runtime_to_checkpoint,
              "native": lambda n: names.hf_to_native_name(names.runtime_to_checkpoint(n))[0]}
# Vocabulary size → the real tokenizer mistral-common ships for it (12B: tekken, Large: v7m1).
TOKENIZER_BY_VOCAB = {131072: "tekken", 32768: "v7m1"}
TOKENIZER_FILE = {"tekken": "tekken.json", "v7m1": "tokenizer.model.v7m1"}  # the names models ship them under


@dataclass
class SynthResult:
    """What synthesize wrote: directory, format, weight files, tensor bytes, parameters, layers, seconds."""

    out: Path
    format: str
    files: list[str]
    tensor_bytes: int
    params: int
    layers: int
    seconds: float
    config: object = field(repr=False, default=None)


def with_depth(config, layers: int | None, dtype: str = "bfloat16"):
    """A copy of the LlavaConfig with `layers` decoder layers (None: as it is), `dtype`, no quantization_config."""
    config = copy.deepcopy(config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    if layers is not None:
        if layers < 1:
            raise UsageError(f"{layers}: a model needs at least one decoder layer", where="--layers",
                             fix="pass a positive number of layers")
        config.text_config.num_hidden_layers = layers
    config.dtype = getattr(torch, dtype)
    return config


def ordered_specs(config, dtype: str, fmt: str) -> list[tuple[str, Spec]]:
    """(runtime name, on-disk Spec) of every tensor: non-decoder tensors, then layer by layer (as real
    checkpoints are laid out, so reading one layer touches one region)."""
    def key(name: str):
        if name.startswith(names.LAYERS):
            return 1, int(name[len(names.LAYERS):].split(".", 1)[0]), name
        return 0, 0, name

    shapes = expected_shapes(config)
    return [(n, Spec(DISK_NAMES[fmt](n), dtype, shapes[n])) for n in sorted(shapes, key=key)]


def tokenizer_for(config, source_tokenizer: Path | None) -> tuple[Path, str]:
    """(file, name to copy it as): the source's tokenizer, else the bundled real tokenizer matching the
    vocabulary (v7m1 otherwise) under the name models ship it as."""
    from ..loading.tokenizer import bundled_tokenizer_path

    if source_tokenizer is not None:
        return source_tokenizer, source_tokenizer.name
    kind = TOKENIZER_BY_VOCAB.get(config.text_config.vocab_size, "v7m1")
    return bundled_tokenizer_path(kind), TOKENIZER_FILE[kind]


def _check_out(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        raise InputError("the output directory is not empty", where=out, fix="pass a new or empty directory")
    out.mkdir(parents=True, exist_ok=True)


def synthesize(config_src, out, *, layers: int | None = None, fmt: str = "hf", seed: int = 0,
               outliers: Outliers | None = None, max_shard_bytes: int | None = DEFAULT_SHARD_BYTES,
               device: str = "cpu", dtype: str = "bfloat16") -> SynthResult:
    """Write a random-weight checkpoint of the model `config_src` describes (a shipped name, directory or
    config file) into `out` (new or empty). device: where tensors are drawn ('cuda' is much faster for
    full-size models; values then differ from the CPU's)."""
    from ..memory.report import open_model

    if fmt not in DISK_NAMES:
        raise UsageError(f"unknown format {fmt!r}", where="--format", fix=f"use one of {', '.join(DISK_NAMES)}")
    start = time.perf_counter()
    out = Path(out)
    src = open_model(config_src)
    config = with_depth(src.config, layers, dtype)
    _check_out(out)
    specs = ordered_specs(config, dtype, fmt)
    runtime_of = {spec.name: rt for rt, spec in specs}
    torch_dtype = getattr(torch, dtype)
    shards = plan_shards([s for _, s in specs], max_shard_bytes)
    single, pattern = SHARD_NAMES[fmt]
    files = [single] if len(shards) == 1 else [pattern.format(i + 1, len(shards)) for i in range(len(shards))]
    for file, part in zip(files, shards):
        write_file(out / file, part, lambda s: make_tensor(runtime_of[s.name], s.shape, torch_dtype, seed, device,
                                                           outliers))
    tok, tok_name = tokenizer_for(config, src.tokenizer)
    shutil.copy(tok, out / tok_name)
    _write_side_files(out, fmt, config, out / tok_name, dict(zip(files, shards)))
    total = sum(s.nbytes for _, s in specs)
    params = sum(torch.Size(s.shape).numel() for _, s in specs)
    return SynthResult(out, fmt, files, total, params, config.text_config.num_hidden_layers,
                       time.perf_counter() - start, config)


def _write_side_files(out: Path, fmt: str, config, tok: Path, shards: dict[str, list[Spec]]) -> None:
    """config.json (+ index when sharded) or params.json (image token ids from the tokenizer `tok`)."""
    from ..loading.params import config_to_params
    from ..loading.tokenizer import image_token_ids

    if fmt == "native":
        params = config_to_params(config, image_token_ids(tok))
        (out / "params.json").write_text(json.dumps(params, indent=2) + "\n")
        return
    config.save_pretrained(out)
    if len(shards) > 1:
        weight_map = {s.name: file for file, specs in shards.items() for s in specs}
        total = sum(s.nbytes for specs in shards.values() for s in specs)
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
