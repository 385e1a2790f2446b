"""Mistral-native params.json <-> transformers LlavaConfig, both directions from the same key tables.

params.json (Pixtral-12B-2409)::

    {"dim": 5120, "n_layers": 40, "head_dim": 128, "hidden_dim": 14336, "n_heads": 32, "n_kv_heads": 8,
     "rope_theta": 1e9, "norm_eps": 1e-5, "vocab_size": 131072,
     "vision_encoder": {"hidden_size": 1024, "num_channels": 3, "image_size": 1024, "patch_size": 16,
                        "rope_theta": 1e4, "intermediate_size": 4096, "num_hidden_layers": 24,
                        "num_attention_heads": 16, "image_token_id": 10,
                        "image_break_token_id": 12, "image_end_token_id": 13, "adapter_bias": true}}

What params.json does not say is fixed by the Pixtral architecture (SiLU everywhere, GELU projector, last
vision layer, no sliding window, untied lm_head) and written explicitly into the LlavaConfig.
"""

from __future__ import annotations

from ..errors import InputError

# (params.json key, MistralConfig attribute); rope_theta is handled apart (transformers 5 nests it).
TEXT_KEYS: tuple[tuple[str, str], ...] = (
    ("dim", "hidden_size"),
    ("n_layers", "num_hidden_layers"),
    ("head_dim", "head_dim"),
    ("hidden_dim", "intermediate_size"),
    ("n_heads", "num_attention_heads"),
    ("n_kv_heads", "num_key_value_heads"),
    ("norm_eps", "rms_norm_eps"),
    ("vocab_size", "vocab_size"),
)
# vision_encoder keys spelled the same in params.json and PixtralVisionConfig.
VISION_KEYS: tuple[str, ...] = ("hidden_size", "num_channels", "image_size", "patch_size", "intermediate_size",
                                "num_hidden_layers", "num_attention_heads")
# Optional keys: (params.json key, where, LlavaConfig attribute, default when absent).
OPTIONAL_KEYS: tuple[tuple[str, str, str, object], ...] = (
    ("max_seq_len", "text", "max_position_embeddings", 131072),
    ("adapter_bias", "vision", "multimodal_projector_bias", True),
    ("image_break_token_id", "vision", "image_break_token_id", None),
    ("image_end_token_id", "vision", "image_end_token_id", None),
)
# vision_encoder settings that mean a Mistral 3 patch-merger model, not Pixtral.
NOT_PIXTRAL: dict[str, object] = {"spatial_merge_size": 1, "add_pre_mm_projector_layer_norm": False}

# Fixed by the Pixtral architecture; params.json does not carry them.
TEXT_FIXED = {"hidden_act": "silu", "sliding_window": None, "tie_word_embeddings": False,
              "bos_token_id": 1, "eos_token_id": 2}
LLAVA_FIXED = {"projector_hidden_act": "gelu", "vision_feature_layer": -1,
               "vision_feature_select_strategy": "full", "tie_word_embeddings": False}


def _take(section: dict, key: str, where: str):
    if key not in section:
        raise InputError(f"params.json lacks the key {key!r}", where=where,
                         fix="use the params.json that came with the model (Pixtral needs the full set)")
    return section[key]


def params_to_config(params: dict, where: str = "params.json", dtype: str = "bfloat16"):
    """params.json dict → LlavaConfig. Raises InputError for a missing key or a non-Pixtral vision encoder."""
    from transformers import LlavaConfig, MistralConfig, PixtralVisionConfig

    vision_raw = params.get("vision_encoder")
    if not isinstance(vision_raw, dict):
        raise InputError("params.json has no vision_encoder: this is a text-only Mistral model", where=where,
                         fix="pixtral-quant reads Pixtral models; pass a Pixtral-12B or Pixtral Large directory")
    _reject_non_pixtral(vision_raw, where)
    sections = {"text": params, "vision": vision_raw}
    optional = {attr: sections[sec].get(key, default) for key, sec, attr, default in OPTIONAL_KEYS}
    text = MistralConfig(**{attr: _take(params, key, where) for key, attr in TEXT_KEYS},
                         rope_theta=float(_take(params, "rope_theta", where)),
                         max_position_embeddings=optional.pop("max_position_embeddings"), **TEXT_FIXED)
    vision_kw = {key: _take(vision_raw, key, where) for key in VISION_KEYS}
    vision = PixtralVisionConfig(**vision_kw, rope_theta=float(_take(vision_raw, "rope_theta", where)),
                                 head_dim=vision_kw["hidden_size"] // vision_kw["num_attention_heads"],
                                 hidden_act="silu")
    config = LlavaConfig(vision_config=vision, text_config=text,
                         image_token_index=_take(vision_raw, "image_token_id", where),
                         dtype=dtype, **LLAVA_FIXED, **optional)
    config.architectures = ["LlavaForConditionalGeneration"]
    return config


def _reject_non_pixtral(vision_raw: dict, where: str) -> None:
    for key, pixtral_value in NOT_PIXTRAL.items():
        if vision_raw.get(key, pixtral_value) != pixtral_value:
            raise InputError(f"vision_encoder.{key} = {vision_raw[key]!r}: a Mistral 3 (patch-merger) vision "
                             "encoder, not Pixtral", where=where,
                             fix="pixtral-quant reads Pixtral-12B and Pixtral Large only")


def rope_theta(sub_config) -> float:
    """rope_theta of a text or vision config (transformers 5 keeps it in rope_parameters)."""
    params = getattr(sub_config, "rope_parameters", None) or {}
    return float(params.get("rope_theta", getattr(sub_config, "rope_theta", 0.0)))


def config_to_params(config, image_ids: dict[str, int] | None = None) -> dict:
    """LlavaConfig → params.json dict. image_ids: {'image_break_token_id': .., 'image_end_token_id': ..},
    taken from the config when it carries them (read from a native model) and from `image_ids` otherwise.
    max_position_embeddings is not written: real Pixtral params.json files do not carry it (it is read back
    as `max_seq_len` when present, default 131072)."""
    text, vision = config.text_config, config.vision_config
    params = {key: getattr(text, attr) for key, attr in TEXT_KEYS}
    params["rope_theta"] = rope_theta(text)
    venc = {key: getattr(vision, key) for key in VISION_KEYS}
    venc["rope_theta"] = rope_theta(vision)
    venc["image_token_id"] = config.image_token_index
    venc["adapter_bias"] = bool(getattr(config, "multimodal_projector_bias", True))
    for key in ("image_break_token_id", "image_end_token_id"):
        value = getattr(config, key, None)
        value = value if value is not None else (image_ids or {}).get(key)
        if value is not None:
            venc[key] = value
    params["vision_encoder"] = venc
    return params
