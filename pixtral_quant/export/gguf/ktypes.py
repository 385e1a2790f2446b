"""Which GGML type llama.cpp's quantizer gives each tensor of our text GGUF, predicted without running it.

Hand-ported (no library exposes it to Python) from llama.cpp's src/llama-quant.cpp at commit 0c1e57098 (the copy
vendored by llama-cpp-python 0.3.36): llama_ftype_get_default_type, tensor_allows_quantization,
tensor_get_category, llama_tensor_get_type_impl, tensor_type_fallback and tensor_requires_imatrix, for arch
`llama` without experts (n_expert = 0, not Falcon), default quantize params (no output / token-embedding type
overrides, no --pure, no tensor-type patterns), and the tensor names writer.py writes. Every file type of
ftypes.FILE_TYPES is covered. tests/test_gguf_quantize.py checks the port against llama.cpp itself.

Counters: llama.cpp numbers attn_v / ffn_down / ffn_gate / ffn_up tensors in the order it visits them, which is
by layer (llama_model_loader's weight_name_comparer), one each per layer: the counter is the layer index.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ...errors import require
from . import dtypes, ftypes

# llama_ftype_get_default_type: file type → the GGML type most tensors get
DEFAULT_TYPE: dict[str, str] = {
    "f32": "F32", "f16": "F16", "bf16": "BF16", "q4_0": "Q4_0", "q4_1": "Q4_1", "q5_0": "Q5_0", "q5_1": "Q5_1",
    "q8_0": "Q8_0", "q2_k": "Q2_K", "q2_k_s": "Q2_K", "q3_k_s": "Q3_K", "q3_k_m": "Q3_K", "q3_k_l": "Q3_K",
    "q4_k_s": "Q4_K", "q4_k_m": "Q4_K", "q5_k_s": "Q5_K", "q5_k_m": "Q5_K", "q6_k": "Q6_K",
    "iq2_xxs": "IQ2_XXS", "iq2_xs": "IQ2_XS", "iq2_s": "IQ2_XS", "iq2_m": "IQ2_S", "iq3_xxs": "IQ3_XXS",
    "iq3_xs": "IQ3_S", "iq3_s": "IQ3_S", "iq3_m": "IQ3_S", "iq1_s": "IQ1_S", "iq1_m": "IQ1_M",
    "iq4_nl": "IQ4_NL", "iq4_xs": "IQ4_XS",
}
UNQUANTIZED = frozenset({"F32", "F16", "BF16"})  # ggml_is_quantized false: no per-tensor rules, no fallback
# tensor_type_fallback: a type whose block does not divide a row → this one (then F16 if that does not fit)
FALLBACK: dict[str, str] = {
    **dict.fromkeys(("IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ4_XS"), "IQ4_NL"),
    "Q2_K": "Q4_0", "Q3_K": "Q4_0", "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0",
}
LAST_RESORT = "F16"
# tensor_requires_imatrix: target types llama.cpp refuses to write without one (Q2_K only in a q2_k_s file)
IMATRIX_TYPES = frozenset({"IQ3_XXS", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ1_M", "IQ1_S"})

TOKEN_EMBD, OUTPUT = "token_embd.weight", "output.weight"
# tensor_get_category, first match wins (substring of the name)
CATEGORIES = (("attn_qkv.weight", "attn_v"), ("attn_kv_b.weight", "attn_v"), ("attn_v.weight", "attn_v"),
              ("attn_k.weight", "attn_k"), ("attn_q.weight", "attn_q"), ("attn_output.weight", "attn_output"),
              ("ffn_up", "ffn_up"), ("ffn_gate", "ffn_gate"), ("ffn_down", "ffn_down"))
# tensor_allows_quantization: substrings that keep a tensor's type (the ones a llama-arch text file can have)
NOT_QUANTIZED = ("_norm.weight", "ffn_gate_inp.weight", "altup", "laurel", "per_layer_model_proj",
                 "ssm_conv1d", "attn_rel_b.weight", "position_embd", "rope_freqs")
LAYER = re.compile(r"^blk\.(\d+)\.")

# file types of llama_tensor_get_type_impl's "very low bit IQ" branch, and sub-groups its rules name
IQ_LOW = frozenset({"iq2_xxs", "iq2_xs", "iq1_s", "iq2_s", "iq2_m", "iq1_m"})
IQ2_SM = frozenset({"iq2_s", "iq2_m"})
IQ_OUTPUT_Q5K = frozenset({"iq2_xxs", "iq2_xs", "iq3_xxs", "iq1_s", "iq2_s", "iq2_m", "iq1_m"})


@dataclass(frozen=True)
class Ctx:
    """What the rules read: file type, layer index i of n_layer, n_head / n_head_kv, has an imatrix, and the
    model-size class (LLM_TYPE_70B: arch llama with 80 layers and grouped-query attention)."""

    ftype: str
    i: int
    n_layer: int
    n_gqa: int
    has_imatrix: bool
    is_70b: bool


def use_more_bits(i: int, n: int) -> bool:
    """llama.cpp's use_more_bits: the first and last eighth of layers and every third one between."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


Rule = Callable[[Ctx], "str | None"]  # → the GGML type name, or None to keep the current one


def _when(test: Callable[[Ctx], bool], then: str) -> Rule:
    return lambda c: then if test(c) else None


def _gqa4(then: str) -> Rule:
    return _when(lambda c: c.n_gqa >= 4, then)


_more_bits_q6 = _when(lambda c: use_more_bits(c.i, c.n_layer), "Q6_K")


def _first_eighth(c: Ctx) -> bool:
    return c.i < c.n_layer // 8



# llama_tensor_get_type_impl, one table per tensor category: file type → rule. Each file type appears in at most
# one branch of llama.cpp's else-if chain per category, so a table keyed by it is the same decision.
ATTN_V: dict[str, Rule] = {
    "q2_k": lambda c: "Q4_K" if c.n_gqa >= 4 else "Q3_K",
    "q2_k_s": _gqa4("Q4_K"),
    "iq3_xxs": lambda c: "Q4_K" if c.n_gqa >= 4 else ("IQ3_XXS" if c.has_imatrix else "IQ3_S"),
    "iq3_xs": _gqa4("Q4_K"), "iq3_s": _gqa4("Q4_K"),
    "iq3_m": lambda c: "Q4_K",
    "q3_k_m": lambda c: "Q5_K" if c.i < 2 else "Q4_K",
    "q3_k_l": lambda c: "Q5_K",
    "iq4_nl": _gqa4("Q5_K"), "iq4_xs": _gqa4("Q5_K"),
    "q4_k_m": _more_bits_q6, "q5_k_m": _more_bits_q6,
    "q4_k_s": _when(lambda c: c.i < 4, "Q5_K"),
}
ATTN_QK: dict[str, Rule] = {"iq3_xs": lambda c: "IQ3_XXS", "iq3_xxs": lambda c: "IQ2_S"}
FFN_DOWN: dict[str, Rule] = {
    "q2_k": lambda c: "Q3_K",
    "q2_k_s": _when(_first_eighth, "Q4_K"),
    "iq3_xxs": lambda c: None if c.has_imatrix else ("Q4_K" if _first_eighth(c) else "Q3_K"),
    "q3_k_m": lambda c: "Q5_K" if c.i < c.n_layer // 16 else "Q4_K",  # not Falcon: always Q4_K after
    "iq3_m": _when(_first_eighth, "Q4_K"),
    "q3_k_l": lambda c: "Q5_K",
    "q4_k_m": _more_bits_q6,
    "iq4_nl": _when(lambda c: _first_eighth(c) and not c.has_imatrix, "Q5_K"),
    "iq4_xs": _when(lambda c: _first_eighth(c) and not c.has_imatrix, "Q5_K"),
    "q5_k_m": _more_bits_q6,
    "q4_k_s": _when(_first_eighth, "Q5_K"),
    "q4_0": _when(lambda c: c.has_imatrix and _first_eighth(c), "Q4_1"),
    "q5_0": _when(lambda c: c.has_imatrix and _first_eighth(c), "Q5_1"),
}
ATTN_OUTPUT: dict[str, Rule] = {"q2_k": lambda c: "Q3_K", "iq3_xxs": lambda c: "IQ3_S",
                                "q3_k_m": lambda c: "Q4_K", "q3_k_l": lambda c: "Q5_K", "iq3_m": lambda c: "Q4_K"}
FFN_GATE_UP: dict[str, Rule] = {
    "iq3_xs": _when(lambda c: c.n_layer // 8 <= c.i < 7 * c.n_layer // 8, "IQ3_XXS")}
TOKEN_EMBD_RULES: dict[str, Rule] = {
    **dict.fromkeys(("iq2_xxs", "iq2_xs", "iq1_s", "iq1_m"), lambda c: "Q2_K"),
    **dict.fromkeys(("iq2_s", "iq2_m", "iq3_xxs"), lambda c: "IQ3_S"),
}
# the "very low bit IQ" branch, taken before the per-category tables for IQ_LOW file types
IQ_LOW_RULES: dict[str, Rule] = {
    "attn_v": lambda c: "Q4_K" if c.n_gqa >= 4 else ("IQ3_S" if c.ftype in IQ2_SM else "Q2_K"),
    "ffn_down": lambda c: ("IQ3_S" if c.ftype in IQ2_SM else "Q2_K") if _first_eighth(c) else None,
    "attn_output": lambda c: "IQ2_XXS" if c.ftype in ("iq1_s", "iq1_m") else "IQ3_S" if c.ftype in IQ2_SM else None,
}
BY_CATEGORY: dict[str, dict[str, Rule]] = {"attn_v": ATTN_V, "attn_k": ATTN_QK, "attn_q": ATTN_QK,
                                           "ffn_down": FFN_DOWN, "attn_output": ATTN_OUTPUT,
                                           "ffn_gate": FFN_GATE_UP, "ffn_up": FFN_GATE_UP}


def category(name: str) -> str:
    """tensor_get_category: 'output' | 'token_embd' | 'attn_v' | ... | 'other'."""
    if name == OUTPUT:
        return "output"
    if name == TOKEN_EMBD:
        return "token_embd"
    return next((cat for sub, cat in CATEGORIES if sub in name), "other")


def allows_quantization(name: str, shape: tuple[int, ...]) -> bool:
    """tensor_allows_quantization with default params: 2-D+ tensors named *weight, norms and a few kept."""
    return len(shape) >= 2 and name.endswith("weight") and not any(s in name for s in NOT_QUANTIZED)


def _block(type_name: str) -> int:
    gguf = require("gguf", "gguf")
    return gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[type_name]][0]


def _output_type(ctx: Ctx, default: str, ne0: int) -> str:
    """output.weight (and a tied token_embd): Q8_0 when the row does not split, Q5_K for the lowest IQ types,
    else Q6_K unless the file is Q8_0."""
    if ne0 % _block(default) != 0:
        return "Q8_0"
    if ctx.ftype in IQ_OUTPUT_Q5K:
        return "Q5_K"
    return default if default == "Q8_0" else "Q6_K"


def _mixed_type(ctx: Ctx, cat: str, default: str, ne0: int, tied: bool) -> str:
    """llama_tensor_get_type_impl for one tensor (before the shape fallback)."""
    if cat == "output" or (tied and cat == "token_embd"):
        return _output_type(ctx, default, ne0)
    if cat == "token_embd":
        rule = TOKEN_EMBD_RULES.get(ctx.ftype)
    elif ctx.ftype in IQ_LOW:
        rule = IQ_LOW_RULES.get(cat)
    else:
        rule = BY_CATEGORY.get(cat, {}).get(ctx.ftype)
    chosen = (rule(ctx) if rule is not None else None) or default
    if cat == "attn_v" and ctx.ftype not in IQ_LOW and ctx.is_70b and chosen in ("Q3_K", "Q4_K"):
        chosen = "Q5_K"  # 70B: attn_v is 8× smaller than attn_q, more bits cost little
    return chosen


def fallback(type_name: str, ne0: int) -> str:
    """tensor_type_fallback: a type whose block does not divide the row length ne0 → FALLBACK's (block-32)
    type, or F16 when that does not divide it either."""
    if ne0 % _block(type_name) == 0:
        return type_name
    chosen = FALLBACK.get(type_name, type_name)
    return chosen if ne0 % _block(chosen) == 0 else LAST_RESORT


def tensor_types(tensors: Sequence[tuple[str, tuple[int, ...]]], type_name: str, n_layer: int, n_head: int,
                 n_head_kv: int, has_imatrix: bool = False, source: str = "f16") -> dict:
    """GGUF name → gguf.GGMLQuantizationType llama.cpp writes when quantizing to file type `type_name`.
    tensors: (GGUF name, PyTorch shape [out, in]: ggml ne0 = in = shape[-1]) of a text GGUF that writer.py wrote
    at `source` (2-D tensors in that type, 1-D F32: dtypes.tensor_type); n_layer / n_head / n_head_kv: the
    text config's layers and attention heads."""
    gguf = require("gguf", "gguf")
    ftype = type_name.lower()
    default = DEFAULT_TYPE[ftype]
    tied = all(name != OUTPUT for name, _ in tensors)
    n_gqa = n_head // n_head_kv if n_head_kv else 0
    is_70b = n_layer == 80 and n_head != n_head_kv
    out = {}
    for name, shape in tensors:
        current = dtypes.tensor_type(name, shape, source).name
        chosen = current
        if allows_quantization(name, shape):
            chosen = default
            if default not in UNQUANTIZED:
                layer = LAYER.match(name)
                ctx = Ctx(ftype, int(layer.group(1)) if layer else 0, n_layer, n_gqa, has_imatrix, is_70b)
                chosen = fallback(_mixed_type(ctx, category(name), default, shape[-1], tied), shape[-1])
        out[name] = gguf.GGMLQuantizationType[chosen]
    return out


def requires_imatrix(types: dict, type_name: str) -> list[str]:
    """tensor_requires_imatrix over a `tensor_types` result: the tensors llama.cpp refuses to quantize without an
    importance matrix (token_embd and output never; Q2_K only in a q2_k_s file). Empty when none does."""
    q2_k_s = type_name.lower() == "q2_k_s"
    return [name for name, qt in types.items() if name not in (TOKEN_EMBD, OUTPUT)
            and (qt.name in IMATRIX_TYPES or (q2_k_s and qt.name == "Q2_K"))]


def checked_types() -> tuple[str, ...]:
    """The file types this port covers (all of ftypes.FILE_TYPES)."""
    return tuple(t for t in ftypes.FILE_TYPES if t in DEFAULT_TYPE)
