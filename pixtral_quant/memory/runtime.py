"""What generation needs besides the weights, from the config alone: image tokens, KV cache per token and the
transient activations of one prefill (batch 1), in bytes.

Model of the prefill (transformers' Llava/Mistral/Pixtral code, SDPA attention: flash / memory-efficient
kernels, no [heads, T, T] score matrix; generate() asks for the last position's logits only):
- decoder layer, MLP phase: residual + normed input [T, H], then act(gate), up and their product [T, I] alive
  together before down_proj; attention phase: residual + normed [T, H], q and rotated q [T, heads·hd],
  rotated k [T, kv·hd], attention output [T, heads·hd]; the larger phase counts.
- vision tower (all images in one pass, P patches): pixel values, patch embeddings, the block-diagonal mask
  [P, P], residual + normed [P, Hv] and the MLP's three [P, Iv]; then the projector's [P, H] in and out and the
  merged input embeddings [T, H].
Quantized kernels add their own transients (KERNEL_TRANSIENT below).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from .storage import DTYPE_BYTES


@dataclass(frozen=True)
class ImageTokens:
    """One image after Pixtral's resize: patch rows × cols; tokens = patches + one [IMG_BREAK]/[IMG_END] per row."""

    rows: int
    cols: int

    @property
    def patches(self) -> int:
        return self.rows * self.cols

    @property
    def tokens(self) -> int:
        return self.rows * self.cols + self.rows


def image_tokens(vision_config, width: int, height: int) -> ImageTokens:
    """Pixtral's resize: longer side capped at image_size (aspect kept), each side up to a multiple of the patch.
    1024×1024 with patch 16 → 64 × 64 patches, 4160 tokens."""
    patch, limit = vision_config.patch_size, vision_config.image_size
    ratio = max(width / limit, height / limit, 1.0)
    w, h = int(width / ratio), int(height / ratio)
    return ImageTokens(math.ceil(h / patch), math.ceil(w / patch))


def kv_bytes_per_token(text_config, dtype: str = "bfloat16") -> int:
    """K and V of every decoder layer for one token: 2 · layers · kv_heads · head_dim · itemsize.
    Pixtral-12B: 2·40·8·128·2 = 163840 B (0.156 GiB per 1024 tokens); Large: 2·88·8·128·2 = 360448 B."""
    head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // text_config.num_attention_heads
    return 2 * text_config.num_hidden_layers * text_config.num_key_value_heads * head_dim * DTYPE_BYTES[dtype]


def _head_dim(cfg) -> int:
    return getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads


def decoder_prefill_bytes(text_config, tokens: int, dtype: str = "bfloat16") -> int:
    """Activation peak inside one decoder layer prefilling `tokens` tokens (bytes, the larger phase)."""
    c, b, t = text_config, DTYPE_BYTES[dtype], tokens
    hd = _head_dim(c)
    mlp = 2 * t * c.hidden_size + 3 * t * c.intermediate_size
    attn = 2 * t * c.hidden_size + 3 * t * c.num_attention_heads * hd + t * c.num_key_value_heads * hd
    return b * max(mlp, attn)


def vision_prefill_bytes(config, patches: int, pixels: int, text_tokens: int, dtype: str = "bfloat16") -> int:
    """Activation peak of the image pass: vision tower over `patches` patches (`pixels` input pixels, 3 channels),
    then the projector, with the [text_tokens, H] input embeddings they are merged into."""
    v, b, p = config.vision_config, DTYPE_BYTES[dtype], patches
    tower = 3 * pixels * 4 + p * p * b + b * (3 * p * v.hidden_size + 3 * p * v.intermediate_size)
    projector = b * (p * v.hidden_size + 2 * p * config.text_config.hidden_size)
    return max(tower, projector) + b * text_tokens * config.text_config.hidden_size


def _no_transient(in_f: int, out_f: int, tokens: int) -> int:
    return 0


# Format kind → extra bytes one quantized Linear call allocates for `tokens` inputs.
# gptq, ct-pack: Marlin/Machete-style fused kernels dequantize in registers (a small workspace only);
# bnb-int8: int8 copy of the input and an int32 accumulator [tokens, out];
# bnb-nf4: prefill dequantizes the whole weight to the compute dtype before the matmul.
KERNEL_TRANSIENT: dict[str, Callable[[int, int, int], int]] = {
    "dense": _no_transient,
    "gptq": _no_transient,
    "ct-pack": _no_transient,  # vLLM runs pack-quantized W4A16/W8A16 through the same Marlin/Machete kernels
    "bnb-int8": lambda in_f, out_f, t: t * in_f + 4 * t * out_f,
    "bnb-nf4": lambda in_f, out_f, t: 2 * in_f * out_f,
}


def kernel_transient(kind: str, shapes: list[tuple[int, int]], tokens: int) -> int:
    """The largest transient of a format's kernel over Linears of (in, out) `shapes` at `tokens` inputs."""
    return max((KERNEL_TRANSIENT[kind](i, o, tokens) for i, o in shapes), default=0)
