"""The file types llama.cpp's quantizer can write (`llama_ftype` of include/llama.h, llama.cpp 0c1e57098, as
llama-cpp-python 0.3.36 binds it), by the names llama-quantize and the GGUF ecosystem use, lower-cased.

A plain table with no imports, so the recipe parser can check a `gguf-<type>` scheme name without llama.cpp
installed; tests/test_gguf_quantize.py checks it against llama_cpp's LLAMA_FTYPE_MOSTLY_* constants. Types removed
from llama.cpp (Q4_0_4_4 ...) and the MoE / ternary ones that need special tensors are left out.
"""

from __future__ import annotations

FILE_TYPES: dict[str, int] = {
    "f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q8_0": 7, "q5_0": 8, "q5_1": 9,
    "q2_k": 10, "q3_k_s": 11, "q3_k_m": 12, "q3_k_l": 13, "q4_k_s": 14, "q4_k_m": 15, "q5_k_s": 16,
    "q5_k_m": 17, "q6_k": 18, "iq2_xxs": 19, "iq2_xs": 20, "q2_k_s": 21, "iq3_xs": 22, "iq3_xxs": 23,
    "iq1_s": 24, "iq4_nl": 25, "iq3_s": 26, "iq3_m": 27, "iq2_s": 28, "iq2_m": 29, "iq4_xs": 30, "iq1_m": 31,
    "bf16": 32,
}
# Types llama.cpp's quantizer refuses to write without an importance matrix ("this quantization requires an
# imatrix!", src/llama-quant.cpp): their default type or the type some of their tensors get needs one.
NEED_IMATRIX = frozenset({"iq2_xxs", "iq2_xs", "iq2_s", "iq2_m", "iq1_s", "iq1_m", "iq3_xxs", "iq3_xs", "q2_k_s"})
# Types the `gguf` package writes itself (no llama.cpp needed): the unquantized ones and Q8_0.
PYTHON_TYPES = frozenset({"f32", "f16", "bf16", "q8_0"})
MMPROJ_TYPES = ("f16", "q8_0")  # what llama.cpp's converter offers for an mmproj (--outtype)


def valid_types() -> str:
    """The type names, comma-separated, for error messages."""
    return ", ".join(FILE_TYPES)
