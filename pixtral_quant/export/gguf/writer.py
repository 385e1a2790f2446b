"""Write a Pixtral checkpoint as llama.cpp GGUF files: the text model and the mmproj (vision tower + projector).

    write_text_gguf(ckpt, "out/model-f16.gguf", "f16")
    write_mmproj_gguf(ckpt, "out/mmproj-f16.gguf", "f16")

Memory: GGUFWriter.add_tensor keeps every array until write_tensors_to_file (or spools them all into a temporary
file with use_temp_file=True: a second full copy on disk), i.e. the whole converted model in RAM (24 GB for a
12B in F16). So the files are written with GGUFWriter's lower-level calls instead: every tensor's info is declared
first from the safetensors headers (name, shape, GGML type, bytes: no data read), then header, key/values and
tensor infos are written, then the tensors one at a time (read_tensors → permute → encode → write_tensor_data).
Peak: one source tensor, its float32 copy and its encoded bytes (12B: the 131072 × 5120 embeddings, ≈ 5 GB).
The file is written as `<path>.partial` and renamed into place at the end: a failure leaves nothing half-written.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from ...errors import InputError, require
from ...loading.checkpoint import read_tensors
from ...loading.tokenizer import image_token_ids
from . import dtypes, metadata, names

EMBED = "model.language_model.embed_tokens.weight"  # runtime name of the text embeddings ([IMG_BREAK] row)


@dataclass(frozen=True)
class Planned:
    """One GGUF tensor: its name, the runtime tensor it is made from, how (source tensor → tensor as stored,
    PyTorch shape `shape`), and its GGML type."""

    name: str
    source: str
    transform: Callable[[torch.Tensor], torch.Tensor]
    shape: tuple[int, ...]
    qtype: object


def _natural(name: str) -> tuple:
    """Sort key: layer numbers compare as numbers (blk.2 before blk.10)."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name))


def plan_tensors(ckpt, file: str, output: str) -> list[Planned]:
    """Every tensor of one GGUF file (names.TEXT or names.MMPROJ), in name order, without reading data.
    InputError for a checkpoint tensor neither table knows (never skipped silently)."""
    maps = names.name_maps(ckpt.config)
    out = []
    for runtime, info in ckpt.tensors.items():
        mapped = names.gguf_name(runtime, maps)
        if mapped is None:
            raise InputError(f"tensor {runtime} has no llama.cpp GGUF name", where=ckpt.path,
                             fix="export an unquantized Pixtral checkpoint (GGUF types are chosen at export)")
        if mapped[0] == file:
            shape = tuple(info.shape)
            out.append(Planned(mapped[1], runtime, partial(_to_layout, runtime, config=ckpt.config), shape,
                               dtypes.tensor_type(mapped[1], shape, output)))
    if file == names.MMPROJ:
        out.append(_img_break(ckpt))
    return sorted(out, key=lambda p: _natural(p.name))


def _to_layout(runtime: str, tensor: torch.Tensor, config) -> torch.Tensor:
    return names.to_gguf_layout(runtime, tensor, config)


def _row(index: int, tensor: torch.Tensor) -> torch.Tensor:
    return tensor[index]


def _img_break(ckpt) -> Planned:
    """`v.token_embd.img_break`: the [IMG_BREAK] row of the text embeddings, F32 (clip.cpp requires it)."""
    ids = image_token_ids(ckpt.tokenizer) if ckpt.tokenizer is not None else None
    if ids is None:
        raise InputError("the mmproj needs the [IMG_BREAK] id from the Mistral tokenizer, and none is here",
                         where=ckpt.path, fix="copy the model's tekken.json or tokenizer.model.v7m1 next to it")
    hidden = ckpt.tensors[EMBED].shape[1]
    name = names.img_break_name()
    return Planned(name, EMBED, partial(_row, ids["image_break_token_id"]), (hidden,),
                   dtypes.tensor_type(name, (hidden,), "f32"))


def write_text_gguf(ckpt, path: str | Path, dtype: str = "f16") -> Path:
    """The decoder as a llama.cpp GGUF (arch `llama`, tokenizer and chat template included) at `path`.
    ckpt: an opened Checkpoint (HF or Mistral-native) with a Mistral tokenizer; dtype: f32 | f16 | bf16 | q8_0."""
    dtypes.check_output_type(dtype)
    kv = metadata.text_metadata(ckpt.config, dtype)
    kv.update(tokenizer_values(ckpt))
    return _write(ckpt, Path(path), metadata.TEXT_ARCH, kv, plan_tensors(ckpt, names.TEXT, dtype))


def write_mmproj_gguf(ckpt, path: str | Path, dtype: str = "f16") -> Path:
    """Vision tower + projector (+ the [IMG_BREAK] embedding) as a llama.cpp mmproj GGUF (arch `clip`)."""
    gguf = require("gguf", "gguf")
    dtypes.check_output_type(dtype)
    kv = metadata.mmproj_metadata(ckpt.config, dtype)
    arch = gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.MMPROJ]
    return _write(ckpt, Path(path), arch, kv, plan_tensors(ckpt, names.MMPROJ, dtype))


def tokenizer_values(ckpt) -> dict:
    """tokenizer.* keys; InputError when there is no Mistral tokenizer or its size differs from the embeddings
    (llama.cpp refuses a token list whose length is not the embedding rows)."""
    if ckpt.tokenizer is None or ckpt.tokenizer_kind != "mistral":
        raise InputError("the GGUF tokenizer is built from the Mistral tokenizer file, and none is here",
                         where=ckpt.path, fix="copy the model's tekken.json or tokenizer.model.v7m1 next to it")
    values = metadata.tokenizer_metadata(ckpt.tokenizer)
    n_tokens, n_vocab = metadata.vocab_size(values), ckpt.config.text_config.vocab_size
    if n_tokens != n_vocab:
        raise InputError(f"the tokenizer has {n_tokens} tokens but the model's vocab_size is {n_vocab}",
                         where=ckpt.tokenizer, fix="use the tokenizer file the model was trained with")
    return values


def write_metadata(writer, kv: dict, plan: list[Planned]) -> None:
    """Header, key/values and every tensor's info (no data) through a GGUFWriter: what writes a file here and
    what size.py measures, so the two cannot differ."""
    for key, value in kv.items():
        writer.add_key_value(key, value.value, value.type, value.sub_type)
    for p in plan:
        # raw_dtype gives the GGML type; a non-uint8 dtype keeps `shape` as the element shape
        writer.add_tensor_info(p.name, p.shape, np.float32, dtypes.nbytes(p.shape, p.qtype), raw_dtype=p.qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()


def _write(ckpt, path: Path, arch: str, kv: dict, plan: list[Planned]) -> Path:
    """Declare every tensor, write header + key/values + tensor infos, then stream the data (module docstring)."""
    gguf = require("gguf", "gguf")
    partial_path = path.with_name(path.name + ".partial")
    writer = gguf.GGUFWriter(partial_path, arch)
    try:
        write_metadata(writer, kv, plan)
        for p in plan:
            tensor = p.transform(read_tensors(ckpt, [p.source])[p.source])
            writer.write_tensor_data(dtypes.encode(tensor, p.qtype))
            del tensor
        writer.close()
        os.replace(partial_path, path)
    except BaseException:
        writer.close()
        partial_path.unlink(missing_ok=True)
        raise
    return path
