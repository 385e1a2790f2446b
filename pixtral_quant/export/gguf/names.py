"""Runtime tensor names → GGUF tensor names for llama.cpp, and the q/k row permutation it expects.

The GGUF names come from the `gguf` package's own tables (`get_tensor_name_map`), fed the names llama.cpp's
converter feeds them: the HF checkpoint spelling with `language_model.` stripped for the text model
(conversion/llama.py, LlamaModel.modify_tensors), and the HF checkpoint spelling as is for the vision tower and
projector (conversion/llava.py). Hand-written here, because no table holds them:
- which file a tensor goes to (`language_model.` → text, everything else → mmproj);
- the block count the mmproj table is built with: `mm.N` reuses the block index as the projector's linear index
  (multi_modal_projector.linear_{bid} → mm.{bid}), so `linear_2` maps only when the table has ≥ 3 blocks;
- `v.token_embd.img_break`, which has no source tensor: it is a row of the text embeddings (`IMG_BREAK_NAME`).

q/k rows: llama.cpp's RoPE rotates interleaved pairs (rows 2i, 2i+1 of a head), HF rotate-half (rows i, i + d/2).
llama.cpp's `LlamaModel.permute(w, n_head, n_head_kv)` (reshape(n, 2, d/2, in).swapaxes(1, 2)) is the same
operation as the project's HF → Mistral-native permutation (`loading.names.rope_hf_to_native`), with the same head
counts (text k: the KV heads; vision q and k: the attention heads), so that function and `ROPE_HEADS` are reused.
"""

from __future__ import annotations

import torch

from ...errors import require
from ...loading.names import ROPE_HEADS, hf_to_native_name, rope_hf_to_native, runtime_to_checkpoint

TEXT, MMPROJ = "text", "mmproj"
TEXT_PREFIX = "language_model."  # what llama.cpp's converter strips from the text model's names
MIN_MMPROJ_BLOCKS = 3  # so that multi_modal_projector.linear_2 → mm.2 is in the table
SUFFIXES = (".weight", ".bias")


def _gguf():
    return require("gguf", "gguf")


def img_break_name() -> str:
    """`v.token_embd.img_break`: llama.cpp's clip.cpp reads it without a .weight suffix (TN_TOK_IMG_BREAK)."""
    gguf = _gguf()
    return gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.V_TOK_EMBD_IMG_BREAK]


def name_maps(config) -> dict[str, object]:
    """{TEXT, MMPROJ} → gguf.TensorNameMap for this model's layer counts. config: the LlavaConfig."""
    gguf = _gguf()
    blocks = max(config.vision_config.num_hidden_layers, MIN_MMPROJ_BLOCKS)
    return {TEXT: gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.text_config.num_hidden_layers),
            MMPROJ: gguf.get_tensor_name_map(gguf.MODEL_ARCH.MMPROJ, blocks)}


def source_name(runtime_name: str) -> tuple[str, str] | None:
    """Runtime name → (file, the name llama.cpp's converter looks up); None for a name outside the layout."""
    ckpt = runtime_to_checkpoint(runtime_name)
    if ckpt is None:
        return None
    if ckpt.startswith(TEXT_PREFIX):
        return TEXT, ckpt[len(TEXT_PREFIX):]
    return MMPROJ, ckpt


def gguf_name(runtime_name: str, maps: dict[str, object]) -> tuple[str, str] | None:
    """Runtime name → (TEXT | MMPROJ, GGUF tensor name), e.g. `model.language_model.layers.3.self_attn.q_proj
    .weight` → ('text', 'blk.3.attn_q.weight'); None when neither table knows it. maps: `name_maps(config)`."""
    src = source_name(runtime_name)
    if src is None:
        return None
    file, name = src
    mapped = maps[file].get_name(name, try_suffixes=SUFFIXES)
    return (file, mapped) if mapped is not None else None


def rope_kind(runtime_name: str) -> str | None:
    """'text_q' | 'text_k' | 'vision_q' | 'vision_k' for a q/k projection weight, else None."""
    ckpt = runtime_to_checkpoint(runtime_name)
    mapped = hf_to_native_name(ckpt) if ckpt is not None else None
    return mapped[1] if mapped is not None else None


def llama_permute(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """HF rotate-half q/k rows → llama.cpp's interleaved pairs: [n_heads * head_dim, in] → same shape and dtype.
    llama.cpp's LlamaModel.permute; identical to the HF → Mistral-native permutation (tested against a copy of
    llama.cpp's formula in tests/test_gguf_export.py)."""
    return rope_hf_to_native(w, n_heads)


def to_gguf_layout(runtime_name: str, tensor: torch.Tensor, config) -> torch.Tensor:
    """The tensor as llama.cpp stores it: q/k projections permuted (`llama_permute`), everything else as is."""
    kind = rope_kind(runtime_name)
    return llama_permute(tensor, ROPE_HEADS[kind](config)) if kind is not None else tensor
