"""Tensor names of a Pixtral checkpoint in its three spellings, and the q/k RoPE permutation.

Spellings:
- native: Mistral's consolidated.safetensors (`layers.0.attention.wq.weight`, `vision_encoder.*`, ...)
- checkpoint: the Hugging Face files (`language_model.model.layers.0.self_attn.q_proj.weight`, ...)
- runtime: transformers 5's module names (`model.language_model.layers.0.self_attn.q_proj.weight`, ...)

`NAME_TABLE` (native <-> checkpoint) and `LAYOUT_TABLE` (checkpoint <-> runtime) are the only places these
names are spelled out; both directions are read from the same rows, and `check_tables()` (run at import)
proves each row is matched by exactly one name and each name by exactly one row, both ways.

Native q/k weights keep rotary pairs interleaved (rows 2i, 2i+1 of a head rotate together); Hugging Face
uses rotate-half (rows i, i + head_dim/2). Source: transformers' convert_pixtral_weights_to_hf.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

LAYER = "{i}"  # placeholder for a layer index in the tables below
LAYERS = "model.language_model.layers."  # runtime prefix of every decoder layer (`LAYERS + "3.mlp..."`)

# (native name, HF checkpoint name, rope kind). The rope kind says which head count the q/k permutation uses.
NAME_TABLE: tuple[tuple[str, str, str | None], ...] = (
    ("tok_embeddings.weight", "language_model.model.embed_tokens.weight", None),
    ("norm.weight", "language_model.model.norm.weight", None),
    ("output.weight", "language_model.lm_head.weight", None),
    ("layers.{i}.attention_norm.weight", "language_model.model.layers.{i}.input_layernorm.weight", None),
    ("layers.{i}.ffn_norm.weight", "language_model.model.layers.{i}.post_attention_layernorm.weight", None),
    ("layers.{i}.attention.wq.weight", "language_model.model.layers.{i}.self_attn.q_proj.weight", "text_q"),
    ("layers.{i}.attention.wk.weight", "language_model.model.layers.{i}.self_attn.k_proj.weight", "text_k"),
    ("layers.{i}.attention.wv.weight", "language_model.model.layers.{i}.self_attn.v_proj.weight", None),
    ("layers.{i}.attention.wo.weight", "language_model.model.layers.{i}.self_attn.o_proj.weight", None),
    ("layers.{i}.feed_forward.w1.weight", "language_model.model.layers.{i}.mlp.gate_proj.weight", None),
    ("layers.{i}.feed_forward.w2.weight", "language_model.model.layers.{i}.mlp.down_proj.weight", None),
    ("layers.{i}.feed_forward.w3.weight", "language_model.model.layers.{i}.mlp.up_proj.weight", None),
    ("vision_encoder.patch_conv.weight", "vision_tower.patch_conv.weight", None),
    ("vision_encoder.ln_pre.weight", "vision_tower.ln_pre.weight", None),
    ("vision_encoder.transformer.layers.{i}.attention_norm.weight",
     "vision_tower.transformer.layers.{i}.attention_norm.weight", None),
    ("vision_encoder.transformer.layers.{i}.ffn_norm.weight",
     "vision_tower.transformer.layers.{i}.ffn_norm.weight", None),
    ("vision_encoder.transformer.layers.{i}.attention.wq.weight",
     "vision_tower.transformer.layers.{i}.attention.q_proj.weight", "vision_q"),
    ("vision_encoder.transformer.layers.{i}.attention.wk.weight",
     "vision_tower.transformer.layers.{i}.attention.k_proj.weight", "vision_k"),
    ("vision_encoder.transformer.layers.{i}.attention.wv.weight",
     "vision_tower.transformer.layers.{i}.attention.v_proj.weight", None),
    ("vision_encoder.transformer.layers.{i}.attention.wo.weight",
     "vision_tower.transformer.layers.{i}.attention.o_proj.weight", None),
    ("vision_encoder.transformer.layers.{i}.feed_forward.w1.weight",
     "vision_tower.transformer.layers.{i}.feed_forward.gate_proj.weight", None),
    ("vision_encoder.transformer.layers.{i}.feed_forward.w2.weight",
     "vision_tower.transformer.layers.{i}.feed_forward.down_proj.weight", None),
    ("vision_encoder.transformer.layers.{i}.feed_forward.w3.weight",
     "vision_tower.transformer.layers.{i}.feed_forward.up_proj.weight", None),
    ("vision_language_adapter.w_in.weight", "multi_modal_projector.linear_1.weight", None),
    ("vision_language_adapter.w_in.bias", "multi_modal_projector.linear_1.bias", None),
    ("vision_language_adapter.w_out.weight", "multi_modal_projector.linear_2.weight", None),
    ("vision_language_adapter.w_out.bias", "multi_modal_projector.linear_2.bias", None),
)

# (HF checkpoint prefix, runtime prefix): the renames transformers' conversion_mapping applies to "llava"
# on load and reverses on save (save_pretrained writes the checkpoint spelling).
LAYOUT_TABLE: tuple[tuple[str, str], ...] = (
    ("language_model.lm_head.", "lm_head."),
    ("language_model.model.", "model.language_model."),
    ("vision_tower.", "model.vision_tower."),
    ("multi_modal_projector.", "model.multi_modal_projector."),
)

# Which attention-head count each rope kind permutes with (text k has fewer heads under GQA).
ROPE_HEADS: dict[str, Callable[[object], int]] = {
    "text_q": lambda cfg: cfg.text_config.num_attention_heads,
    "text_k": lambda cfg: cfg.text_config.num_key_value_heads,
    "vision_q": lambda cfg: cfg.vision_config.num_attention_heads,
    "vision_k": lambda cfg: cfg.vision_config.num_attention_heads,
}


@dataclass(frozen=True)
class _Rule:
    pattern: re.Pattern
    target: str  # with LAYER where the index goes
    rope: str | None


def _compile(name: str) -> re.Pattern:
    return re.compile("^" + re.escape(name).replace(re.escape(LAYER), r"(\d+)") + "$")


def _rules(table, src: int, dst: int) -> tuple[_Rule, ...]:
    return tuple(_Rule(_compile(row[src]), row[dst], row[2]) for row in table)


_NATIVE_TO_HF = _rules(NAME_TABLE, 0, 1)
_HF_TO_NATIVE = _rules(NAME_TABLE, 1, 0)


def _apply(rules: tuple[_Rule, ...], name: str) -> tuple[str, str | None] | None:
    for rule in rules:
        m = rule.pattern.match(name)
        if m:
            return rule.target.replace(LAYER, m.group(1)) if m.groups() else rule.target, rule.rope
    return None


def native_to_hf_name(name: str) -> tuple[str, str | None] | None:
    """Native name → (HF checkpoint name, rope kind or None); None when the name is not in the table."""
    return _apply(_NATIVE_TO_HF, name)


def hf_to_native_name(name: str) -> tuple[str, str | None] | None:
    """HF checkpoint name → (native name, rope kind or None); None when the name is not in the table."""
    return _apply(_HF_TO_NATIVE, name)


def checkpoint_to_runtime(name: str) -> str | None:
    """`language_model.model.x` → `model.language_model.x` etc.; None when no prefix of the table fits."""
    for ckpt, runtime in LAYOUT_TABLE:
        if name.startswith(ckpt):
            return runtime + name[len(ckpt):]
    return None


def runtime_to_checkpoint(name: str) -> str | None:
    """`model.language_model.x` → `language_model.model.x` etc.; None when no prefix of the table fits."""
    for ckpt, runtime in LAYOUT_TABLE:
        if name.startswith(runtime):
            return ckpt + name[len(runtime):]
    return None


def hf_to_runtime(name: str) -> tuple[str, str] | None:
    """A name in either HF layout → (runtime name, 'checkpoint' | 'runtime'); None when it is neither."""
    converted = checkpoint_to_runtime(name)
    if converted is not None:
        return converted, "checkpoint"
    if runtime_to_checkpoint(name) is not None:
        return name, "runtime"
    return None


def rope_native_to_hf(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Interleaved-pair rows → rotate-half rows, per head.

    w: [n_heads * head_dim, in] (any dtype) → same shape and dtype; row 2i + j of a head moves to j * head_dim/2 + i.
    """
    out, inp = w.shape
    _check_heads(out, n_heads)
    return w.reshape(n_heads, out // n_heads // 2, 2, inp).transpose(1, 2).reshape(out, inp)


def rope_hf_to_native(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Inverse of `rope_native_to_hf`: [n_heads * head_dim, in] rotate-half rows → interleaved pairs."""
    out, inp = w.shape
    _check_heads(out, n_heads)
    return w.reshape(n_heads, 2, out // n_heads // 2, inp).transpose(1, 2).reshape(out, inp)


def _check_heads(rows: int, n_heads: int) -> None:
    if rows % (2 * n_heads):
        raise ValueError(f"{rows} rows do not split into {n_heads} heads of an even head_dim")


def native_to_runtime(name: str, tensor: torch.Tensor | None, config) -> tuple[str, torch.Tensor | None] | None:
    """Native (name, tensor) → (runtime name, tensor in HF layout); tensor may be None (names only).
    None when the name is not a Pixtral tensor. config: the model's LlavaConfig (head counts)."""
    mapped = native_to_hf_name(name)
    if mapped is None:
        return None
    ckpt_name, rope = mapped
    if rope is not None and tensor is not None:
        tensor = rope_native_to_hf(tensor, ROPE_HEADS[rope](config))
    return checkpoint_to_runtime(ckpt_name), tensor


def runtime_to_native(name: str, tensor: torch.Tensor, config) -> tuple[str, torch.Tensor]:
    """Runtime (name, tensor) → (native name, tensor with interleaved q/k rows). KeyError for a name
    with no native spelling (e.g. a quantizer's extra tensor)."""
    ckpt_name = runtime_to_checkpoint(name)
    mapped = hf_to_native_name(ckpt_name) if ckpt_name is not None else None
    if mapped is None:
        raise KeyError(f"{name} has no Mistral-native name")
    native_name, rope = mapped
    if rope is not None:
        tensor = rope_hf_to_native(tensor, ROPE_HEADS[rope](config))
    return native_name, tensor


def check_tables(table=NAME_TABLE, layout=LAYOUT_TABLE, rope_heads=ROPE_HEADS) -> None:
    """Raise RuntimeError unless every row is one-to-one in both directions: each row's name (layer 7)
    matches that row alone and maps back to itself; no layout prefix shadows another."""
    forward, backward = _rules(table, 0, 1), _rules(table, 1, 0)
    for col, rules, back in ((0, forward, backward), (1, backward, forward)):
        for row in table:
            name = row[col].replace(LAYER, "7")
            hits = [r for r in rules if r.pattern.match(name)]
            if len(hits) != 1:
                raise RuntimeError(f"NAME_TABLE: {name!r} matches {len(hits)} rows")
            there, _ = _apply(rules, name)
            if (_apply(back, there) or (None,))[0] != name:
                raise RuntimeError(f"NAME_TABLE: {name!r} does not map back to itself")
    for col in (0, 1):
        prefixes = [row[col] for row in layout]
        if len(set(prefixes)) != len(prefixes) or any(a != b and b.startswith(a) for a in prefixes for b in prefixes):
            raise RuntimeError(f"LAYOUT_TABLE: repeated or overlapping prefixes in column {col}")
    if set(rope_heads) != {row[2] for row in table if row[2]}:
        raise RuntimeError("ROPE_HEADS and NAME_TABLE disagree on the rope kinds")


check_tables()
