"""Byte-exact sizes of the GGUF files convert writes, from the config and the tokenizer alone (no weights):
the text model (written by writer.py, or written at F16 and then quantized by llama.cpp) and the mmproj.

A GGUF file is: header + key/values + tensor infos, padded to the alignment (32: GGUFWriter's data_alignment,
no general.alignment key is written), then each tensor's data padded to the alignment. The first part is measured
by writing it with the `gguf` package itself (the same key/values and tensor infos writer.py declares, into a
temporary file: a few MB for a tekken tokenizer); the data part is arithmetic on the tensor types.
llama.cpp's quantizer (src/llama-quant.cpp, 0c1e57098) copies the input's key/values, re-sets
general.file_type and general.quantization_version as uint32 (the same bytes: writer.py writes both as uint32),
keeps every tensor (re-ordered, same infos) with llama.cpp's types (`ktypes`), and pads like GGUFWriter (GGML_PAD
32 after each tensor): so its file is the F16 file's metadata + its own padded tensor bytes.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from ...errors import UsageError, require
from ...loading.arch import expected_shapes
from . import dtypes, ftypes, ktypes, metadata, names, writer

# The type writer.py writes a text model at before llama.cpp quantizes it (export.py): BF16 holds a bf16 source
# exactly. llama.cpp's choices do not depend on it (every 2-D text tensor is quantizable; 1-D ones are F32).
SOURCE = "bf16"
ALIGNMENT = 32  # GGUF_DEFAULT_ALIGNMENT: GGUFWriter's, and llama.cpp's quantizer's (no general.alignment key)


@dataclass(frozen=True)
class GgufSizes:
    """File sizes in bytes, and per tensor: GGUF name → (GGML type name, data bytes without the padding)."""

    text_bytes: int
    mmproj_bytes: int
    text_tensors: dict[str, tuple[str, int]]
    mmproj_tensors: dict[str, tuple[str, int]]


@dataclass(frozen=True)
class Skeleton:
    """What the sizes of one model's GGUF files depend on, measured once: the metadata bytes of each file (header,
    key/values, tensor infos, padded; the same for every type: general.file_type and each tensor's type are
    uint32 fields), the (GGUF name, PyTorch shape) of its tensors, and the text model's layer and head counts."""

    text_meta: int
    mmproj_meta: int
    text_shapes: tuple[tuple[str, tuple[int, ...]], ...]
    mmproj_shapes: tuple[tuple[str, tuple[int, ...]], ...]
    n_layer: int
    n_head: int
    n_head_kv: int

    def text_tensors(self, text_type: str, has_imatrix: bool = False) -> dict[str, tuple[str, int]]:
        """GGUF name → (type, bytes) of the text GGUF at `text_type`: writer.py's types for ftypes.PYTHON_TYPES,
        llama.cpp's (ktypes, quantizing writer.py's F16 file) otherwise."""
        key = check_text_type(text_type)
        if key in ftypes.PYTHON_TYPES:
            types = {n: dtypes.tensor_type(n, s, key) for n, s in self.text_shapes}
        else:
            types = ktypes.tensor_types(self.text_shapes, key, self.n_layer, self.n_head, self.n_head_kv,
                                        has_imatrix, SOURCE)
        return {n: (types[n].name, dtypes.nbytes(s, types[n])) for n, s in self.text_shapes}

    def mmproj_tensors(self, mmproj_type: str) -> dict[str, tuple[str, int]]:
        """GGUF name → (type, bytes) of the mmproj writer.py writes at `mmproj_type` (f32 | f16 | bf16 | q8_0)."""
        key = dtypes.check_output_type(mmproj_type)
        return {n: (qt.name, dtypes.nbytes(s, qt)) for n, s in self.mmproj_shapes
                for qt in [dtypes.tensor_type(n, s, key)]}

    def sizes(self, text_type: str = "f16", mmproj_type: str = "f16", has_imatrix: bool = False) -> GgufSizes:
        text, mmproj = self.text_tensors(text_type, has_imatrix), self.mmproj_tensors(mmproj_type)
        return GgufSizes(_file(self.text_meta, text), _file(self.mmproj_meta, mmproj), text, mmproj)


def check_text_type(text_type: str) -> str:
    """The lower-cased llama.cpp file type name; UsageError listing the valid ones otherwise."""
    key = text_type.lower()
    if key not in ftypes.FILE_TYPES:
        raise UsageError(f"unknown GGUF type {text_type!r}", where="scheme", fix=f"use one of: {ftypes.valid_types()}")
    return key


def shapes_only(config, tokenizer_path: str | Path):
    """A stand-in for a loading.Checkpoint that writer.plan_tensors and its tokenizer checks accept: the runtime
    tensor shapes of `config` (loading.arch.expected_shapes, meta device) and the Mistral tokenizer file."""
    tensors = {n: SimpleNamespace(shape=s) for n, s in expected_shapes(config).items()}
    return SimpleNamespace(config=config, tensors=tensors, tokenizer=Path(tokenizer_path), tokenizer_kind="mistral",
                           path=Path(tokenizer_path).parent)


def metadata_bytes(arch: str, kv: dict, plan: list) -> int:
    """Header + key/values + tensor infos of a GGUF file, padded to its alignment: written by GGUFWriter exactly
    as writer._write writes them, and measured."""
    gguf = require("gguf", "gguf")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "skeleton.gguf"
        w = gguf.GGUFWriter(path, arch)
        writer.write_metadata(w, kv, plan)
        w.close()
        if w.data_alignment != ALIGNMENT:
            raise AssertionError(f"GGUFWriter aligns to {w.data_alignment}, size.py assumes {ALIGNMENT}")
        return _pad(path.stat().st_size)


def _pad(n: int) -> int:
    return -(-n // ALIGNMENT) * ALIGNMENT


def _file(meta: int, tensors: dict[str, tuple[str, int]]) -> int:
    """Padded metadata + every tensor's data padded to the alignment (GGUFWriter and llama.cpp both pad after
    each tensor, the last one included)."""
    return meta + sum(_pad(b) for _, b in tensors.values())


def skeleton(ckpt) -> Skeleton:
    """Measure a model's GGUF metadata. ckpt: a loading.Checkpoint or `shapes_only(config, tokenizer_path)`;
    InputError when the tokenizer does not match the model (as writer.write_text_gguf)."""
    gguf = require("gguf", "gguf")
    config, text = ckpt.config, ckpt.config.text_config
    kv = metadata.text_metadata(config, SOURCE)
    kv.update(writer.tokenizer_values(ckpt))
    text_plan = writer.plan_tensors(ckpt, names.TEXT, SOURCE)
    mmproj_plan = writer.plan_tensors(ckpt, names.MMPROJ, SOURCE)
    mmproj_arch = gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.MMPROJ]
    return Skeleton(metadata_bytes(metadata.TEXT_ARCH, kv, text_plan),
                    metadata_bytes(mmproj_arch, metadata.mmproj_metadata(config, SOURCE), mmproj_plan),
                    tuple((p.name, p.shape) for p in text_plan), tuple((p.name, p.shape) for p in mmproj_plan),
                    text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads)


def gguf_sizes(config, tokenizer_path: str | Path, text_type: str = "f16", mmproj_type: str = "f16",
               has_imatrix: bool = False) -> GgufSizes:
    """Sizes of the text GGUF (any ftypes.FILE_TYPES type) and the mmproj (f32 | f16 | bf16 | q8_0) of the model
    `config` (a LlavaConfig) with the Mistral tokenizer file `tokenizer_path` (its token list is stored).
    has_imatrix: whether llama.cpp quantizes with an importance matrix (changes a few types, e.g. iq3_xxs).
    For several types, measure once with `skeleton(shapes_only(config, tokenizer_path))` and call .sizes()."""
    return skeleton(shapes_only(config, tokenizer_path)).sizes(text_type, mmproj_type, has_imatrix)
