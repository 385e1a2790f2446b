"""Stored bytes of one Linear in each checkpoint format: pure arithmetic on (in_features, out_features).

Formats (what convert writes, see schemes/ and docs/notes-formats.md):
- dense:    weight [out, in] in the model dtype (+ bias [out])
- gptq:     GPTQ v1 — qweight int32 [in·bits/32, out], qzeros int32 [groups, out·bits/32], scales float16
            [groups, out], g_idx int32 [in] (+ bias float16 [out]); groups = in / group_size (1 for -1)
- ct-pack:  compressed-tensors pack-quantized, symmetric (export/compressed.py) — weight_packed int32
            [out, ceil(in / (32 // bits))], weight_scale in the model dtype [out, groups], weight_shape int64 [2]
            (+ bias in the model dtype)
- bnb-int8: weight int8 [out, in], SCB float32 [out], weight_format uint8 [] (+ bias)
- bnb-nf4:  weight uint8 [ceil(out·in/2), 1], absmax (uint8 [blocks] with double quant, else float32),
            quant_map float32 [16], with double quant nested_absmax float32 [ceil(blocks/256)] and
            nested_quant_map float32 [256], quant_state.bitsandbytes__nf4 uint8 [len(JSON)] (+ bias)
The same tensors are what a loaded model keeps on the device, so runtime bytes equal stored bytes.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass

from ..config import parse_setting

DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "int32": 4, "int8": 1, "uint8": 1, "int64": 8,
               "bool": 1}
NF4_NESTED_BLOCK = 256  # bitsandbytes quantizes the absmaxes in blocks of 256 (double quant)
NF4_OFFSET = 0.06372483819723129  # a typical nested_offset (any float >= 0 packs to the same length)
# bitsandbytes packs the quant_state's non-tensor fields with json.dumps, whose float (nested_offset, the mean of
# the absmaxes) takes the shortest repr: its length varies with the value, so a checkpoint's size could only be
# bounded from the shapes (1-3 bytes per Linear either way at 12B). bnb-nf4 writes the same double in a
# fixed-width exponent form instead: 17 significant digits, so float() reads back the very double bitsandbytes
# computed (its unpack_tensor_to_dict is json.loads); a float32 mean >= 0 always has a 2-digit exponent.
NF4_OFFSET_FORMAT = ".16e"


@dataclass(frozen=True)
class Stored:
    """One stored tensor of a Linear: suffix after the module name ('qweight', 'weight.absmax' ...)."""

    suffix: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * DTYPE_BYTES[self.dtype]


@dataclass(frozen=True)
class Format:
    """How one Linear is stored. kind: a key of FORMAT_TENSORS; bits/group_size for gptq and ct-pack; blocksize,
    double_quant and compute_dtype for bnb-nf4; dtype: the dtype of dense weights, bnb biases and ct-pack scales
    and biases."""

    kind: str
    bits: int = 16
    group_size: int = 128
    blocksize: int = 64
    double_quant: bool = True
    compute_dtype: str = "bfloat16"
    dtype: str = "bfloat16"

    @property
    def label(self) -> str:
        labels = {"dense": self.dtype, "gptq": f"gptq int{self.bits} g{self.group_size}",
                  "ct-pack": f"ct int{self.bits} g{self.group_size}", "bnb-int8": "bnb int8",
                  "bnb-nf4": f"bnb nf4 b{self.blocksize}" + (" dq" if self.double_quant else "")}
        return labels[self.kind]


def _bias(fmt: Format, out_f: int, dtype: str) -> list[Stored]:
    return [Stored("bias", dtype, (out_f,))]


def dense_tensors(fmt: Format, in_f: int, out_f: int, bias: bool) -> list[Stored]:
    """weight [out, in] in fmt.dtype (+ bias)."""
    return [Stored("weight", fmt.dtype, (out_f, in_f))] + (_bias(fmt, out_f, fmt.dtype) if bias else [])


def gptq_tensors(fmt: Format, in_f: int, out_f: int, bias: bool) -> list[Stored]:
    """GPTQ v1: qweight, qzeros, scales, g_idx (+ float16 bias). ValueError for a group size not dividing in."""
    if fmt.group_size != -1 and in_f % fmt.group_size:
        raise ValueError(f"group size {fmt.group_size} does not divide in_features {in_f}")
    groups = 1 if fmt.group_size == -1 else in_f // fmt.group_size
    per_word = 32 // fmt.bits
    out = [Stored("qweight", "int32", (in_f // per_word, out_f)),
           Stored("qzeros", "int32", (groups, out_f // per_word)),
           Stored("scales", "float16", (groups, out_f)),
           Stored("g_idx", "int32", (in_f,))]
    return out + (_bias(fmt, out_f, "float16") if bias else [])


def ct_pack_tensors(fmt: Format, in_f: int, out_f: int, bias: bool) -> list[Stored]:
    """compressed-tensors pack-quantized (symmetric: no zero point): weight_packed int32
    [out, ceil(in / (32 // bits))] (pack_to_int32: 32 // bits values a word, the last word padded), weight_scale
    fmt.dtype [out, groups], weight_shape int64 [2] (+ bias in fmt.dtype). ValueError for a group size not
    dividing in."""
    if fmt.group_size != -1 and in_f % fmt.group_size:
        raise ValueError(f"group size {fmt.group_size} does not divide in_features {in_f}")
    groups = 1 if fmt.group_size == -1 else in_f // fmt.group_size
    out = [Stored("weight_packed", "int32", (out_f, -(-in_f // (32 // fmt.bits)))),
           Stored("weight_scale", fmt.dtype, (out_f, groups)),
           Stored("weight_shape", "int64", (2,))]
    return out + (_bias(fmt, out_f, fmt.dtype) if bias else [])


def bnb_int8_tensors(fmt: Format, in_f: int, out_f: int, bias: bool) -> list[Stored]:
    """LLM.int8: weight int8 [out, in], SCB float32 [out], weight_format uint8 [] (+ bias as stored)."""
    out = [Stored("weight", "int8", (out_f, in_f)), Stored("SCB", "float32", (out_f,)),
           Stored("weight_format", "uint8", ())]
    return out + (_bias(fmt, out_f, fmt.dtype) if bias else [])


def packed_state_json(state: dict) -> str:
    """json.dumps(state) as bitsandbytes' pack_dict_to_tensor writes it, but a nested_offset (float >= 0) in
    the fixed-width NF4_OFFSET_FORMAT: the JSON's length then depends on the other fields alone."""
    if "nested_offset" not in state:
        return json.dumps(state)
    text = json.dumps({**state, "nested_offset": None})
    return text.replace('"nested_offset": null', f'"nested_offset": {state["nested_offset"]:{NF4_OFFSET_FORMAT}}')


def nf4_state_json(fmt: Format, in_f: int, out_f: int) -> str:
    """The quant_state JSON bnb-nf4 packs (QuantState.as_dict(packed=True), packed_state_json); its length is
    the tensor's."""
    state = {"quant_type": "nf4", "blocksize": fmt.blocksize, "dtype": fmt.compute_dtype, "shape": [out_f, in_f]}
    if fmt.double_quant:
        state.update({"nested_blocksize": NF4_NESTED_BLOCK, "nested_dtype": "float32", "nested_offset": NF4_OFFSET})
    return packed_state_json(state)


def nf4_tensors(fmt: Format, in_f: int, out_f: int, bias: bool) -> list[Stored]:
    """NF4: packed weight, absmax, quant_map (+ nested absmax and map with double quant), quant_state (+ bias)."""
    n = out_f * in_f
    blocks = -(-n // fmt.blocksize)
    out = [Stored("weight", "uint8", ((n + 1) // 2, 1)),
           Stored("weight.absmax", "uint8" if fmt.double_quant else "float32", (blocks,)),
           Stored("weight.quant_map", "float32", (16,))]
    if fmt.double_quant:
        out += [Stored("weight.nested_absmax", "float32", (-(-blocks // NF4_NESTED_BLOCK),)),
                Stored("weight.nested_quant_map", "float32", (256,))]
    state = len(nf4_state_json(fmt, in_f, out_f).encode())
    out.append(Stored("weight.quant_state.bitsandbytes__nf4", "uint8", (state,)))
    return out + (_bias(fmt, out_f, fmt.dtype) if bias else [])


FORMAT_TENSORS: dict[str, Callable[[Format, int, int, bool], list[Stored]]] = {
    "dense": dense_tensors, "gptq": gptq_tensors, "ct-pack": ct_pack_tensors, "bnb-int8": bnb_int8_tensors,
    "bnb-nf4": nf4_tensors}


def linear_tensors(fmt: Format, in_f: int, out_f: int, bias: bool = False) -> list[Stored]:
    """Every tensor one Linear (in_f → out_f) stores in `fmt`."""
    return FORMAT_TENSORS[fmt.kind](fmt, in_f, out_f, bias)


def linear_bytes(fmt: Format, in_f: int, out_f: int, bias: bool = False) -> int:
    """Stored bytes of one Linear in `fmt`."""
    return sum(t.nbytes for t in linear_tensors(fmt, in_f, out_f, bias))


# Fields of a scheme config that say how its own format stores a Linear (a Format's defaults otherwise).
FORMAT_FIELDS = ("blocksize", "double_quant", "compute_dtype")


def format_for(scheme, precision: str | None = None, dtype: str = "bfloat16") -> Format:
    """Format of a Linear quantized by `scheme` (a config.py scheme config, its facts storage / bits /
    target_formats). precision None: the scheme's own (decoder Linears); 'int4' / 'int8': an optional target
    (lm_head, vision tower, projector). ValueError for a scheme without one storage format (gptq-mixed: per
    Linear, memory/inventory.py; GGUF: memory/llamacpp.py)."""
    if scheme.storage is None:
        raise ValueError(f"scheme {scheme.name} has no single storage format")
    kind, bits = (scheme.storage, scheme.bits) if precision is None else scheme.target_formats[precision]
    opts = {f.name: getattr(scheme, f.name) for f in dataclasses.fields(scheme)
            if f.name == "group_size" or kind == scheme.storage and f.name in FORMAT_FIELDS}
    return Format(kind, bits=bits, dtype=dtype, **opts)


def dense(dtype: str = "bfloat16") -> Format:
    """A Linear kept in `dtype`."""
    return Format("dense", dtype=dtype)


def setting_format(label: str, dtype: str) -> Format:
    """The storage Format of a gptq-mixed setting label (config.parse_setting: 'int4-g128' → ct-pack int4 g128;
    'bf16': dense)."""
    setting = parse_setting(label)
    return dense(dtype) if setting is None else Format("ct-pack", bits=setting[0], group_size=setting[1], dtype=dtype)


def setting_fits(label: str, in_features: int) -> bool:
    """Whether a Linear of `in_features` inputs can take the setting (its group size divides them; -1 and bf16
    always can)."""
    setting = parse_setting(label)
    return setting is None or setting[1] == -1 or in_features % setting[1] == 0


def setting_bytes(label: str, lin, dtype: str) -> int:
    """Stored bytes of Linear `lin` (memory.inventory.LinearShape) at a setting."""
    return linear_bytes(setting_format(label, dtype), lin.in_features, lin.out_features, lin.bias)
