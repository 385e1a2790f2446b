"""Static checks that `convert`'s checkpoints have the layout vLLM's Llava / Pixtral-HF loader reads.

vLLM is not installed here (and cannot be), so nothing below loads a checkpoint in vLLM. Instead, the few rules
vLLM applies to a checkpoint's names and quantization_config are copied from its source as small functions and
dicts (each cites the vLLM file and function it copies), and the tiny model's rtn-int4 (GPTQ v1), bnb-nf4 and
bnb-int8 checkpoints are checked against them. docs/vllm.md has the table these tests pin.
"""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors import safe_open

from pixtral_quant.convert import convert
from pixtral_quant.recipes import load_recipe

# --- rules copied from vLLM's source ------------------------------------------------------------------------

# vllm/model_executor/models/llava.py, LlavaForConditionalGeneration.hf_to_vllm_mapper
# (WeightsMapper(orig_to_new_prefix=...)); applied by load_weights to every checkpoint name, and by
# model_loader/utils.py configure_quant_config -> quant_config.apply_vllm_mapper to modules_in_block_to_quantize.
LLAVA_PREFIX_MAP = {
    "model.language_model.": "language_model.model.",
    "model.vision_tower.": "vision_tower.",
    "model.multi_modal_projector.": "multi_modal_projector.",
    "lm_head.": "language_model.lm_head.",
}
# vllm/model_executor/models/llava.py, LlavaForConditionalGeneration.packed_modules_mapping
PACKED = {"qkv_proj": ["q_proj", "k_proj", "v_proj"], "gate_up_proj": ["gate_proj", "up_proj"]}


def vllm_name(name: str) -> str:
    """WeightsMapper._map_name with prefixes only (vllm/model_executor/models/utils.py)."""
    for prefix, new in LLAVA_PREFIX_MAP.items():
        if name.startswith(prefix):
            name = name.replace(prefix, new, 1)
    return name


def is_layer_gptq_quantized(prefix: str, quantized_layers: list[str]) -> bool:
    """vllm/model_executor/layers/quantization/utils/gptq_utils.py is_layer_gptq_quantized: a fused layer's
    shard names are built from packed_modules_mapping and each is tested as `layer in prefix` (substring)."""
    if not quantized_layers:
        quantized_layers = ["self_attn.qkv_proj", "self_attn.o_proj"]
    proj = prefix.split(".")[-1]
    if proj in PACKED:
        shards = [any(q in prefix.replace(proj, s) for q in quantized_layers) for s in PACKED[proj]]
        if len(set(shards)) != 1:
            raise ValueError(f"some but not all shards of {prefix} are quantized")  # vLLM raises too
        return shards[0]
    return any(q in prefix for q in quantized_layers)


def is_layer_skipped_bnb(prefix: str, skip: list[str]) -> bool:
    """vllm/model_executor/layers/quantization/bitsandbytes.py is_layer_skipped_bnb."""
    components = prefix.split(".")
    prefixes = {".".join(components[: i + 1]) for i in range(len(components))}
    return any(m in components for m in skip) or bool(set(skip) & prefixes)


def is_4bit_aux_name(name: str) -> bool:
    """vllm/model_executor/model_loader/bitsandbytes_loader.py BitsAndBytesModelLoader._is_4bit_weight_name."""
    suffix = name.split(".")[-1]
    return any(q in suffix for q in ("absmax", "quant_map", "nested_absmax", "nested_quant_map", "bitsandbytes"))


def is_8bit_aux_name(name: str) -> bool:
    """vllm/model_executor/model_loader/bitsandbytes_loader.py BitsAndBytesModelLoader._is_8bit_weight_name."""
    return any(name.lower().endswith(s) for s in (".scb", ".weight_format"))


# vllm/model_executor/layers/quantization/gptq_marlin.py GPTQMarlinConfig.TYPE_MAP and
# utils/marlin_utils.py MARLIN_SUPPORTED_GROUP_SIZES: what is_gptq_marlin_compatible accepts.
MARLIN_BITS_SYM = {(4, True), (8, True)}
MARLIN_GROUP_SIZES = {-1, 32, 64, 128}

# --- the module tree vLLM builds for LlavaForConditionalGeneration with a Pixtral vision config ------------
# Linear prefixes (LinearBase modules, fused names) from llava.py (multi_modal_projector.linear_1/2,
# vision_tower = PixtralHFVisionModel), pixtral.py (PixtralHFTransformerBlock: attention.qkv_proj/o_proj,
# feed_forward.gate_up_proj/down_proj) and llama.py (MistralForCausalLM: model.layers.N.self_attn.qkv_proj/
# o_proj, mlp.gate_up_proj/down_proj; lm_head is a ParallelLMHead, not a LinearBase).
DECODER_LINEARS = ("self_attn.qkv_proj", "self_attn.o_proj", "mlp.gate_up_proj", "mlp.down_proj")
VISION_LINEARS = ("attention.qkv_proj", "attention.o_proj", "feed_forward.gate_up_proj", "feed_forward.down_proj")


def linear_prefixes(cfg: dict) -> dict[str, list[str]]:
    n_text, n_vision = cfg["text_config"]["num_hidden_layers"], cfg["vision_config"]["num_hidden_layers"]
    return {
        "decoder": [f"language_model.model.layers.{i}.{m}" for i in range(n_text) for m in DECODER_LINEARS],
        "vision": [f"vision_tower.transformer.layers.{i}.{m}" for i in range(n_vision) for m in VISION_LINEARS],
        "projector": ["multi_modal_projector.linear_1", "multi_modal_projector.linear_2"],
    }


def shard_names(prefix: str) -> list[str]:
    """A vLLM (fused) Linear prefix → the unfused module names the checkpoint spells (stacked_params_mapping)."""
    proj = prefix.split(".")[-1]
    return [prefix.replace(proj, s) for s in PACKED[proj]] if proj in PACKED else [prefix]


# Parameter names (after the Llava mapper) that vLLM's loaders accept: LlamaModel.load_weights /
# PixtralHFVisionModel.load_weights map q/k/v and gate/up onto the fused params, everything else by name.
SUFFIX = {
    "gptq": r"qweight|qzeros|scales|g_idx",
    "nf4": r"weight(\.(absmax|quant_map|nested_absmax|nested_quant_map|quant_state\.bitsandbytes__nf4))?",
    "int8": r"weight|SCB|weight_format",
}


def accepted(kind: str) -> re.Pattern:
    lin = rf"(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)\.({SUFFIX[kind]})"
    return re.compile(
        r"language_model\.lm_head\.weight"
        r"|language_model\.model\.(embed_tokens\.weight|norm\.weight"
        rf"|layers\.\d+\.(input_layernorm\.weight|post_attention_layernorm\.weight|{lin}))"
        r"|vision_tower\.(patch_conv\.weight|ln_pre\.weight|transformer\.layers\.\d+\.(attention_norm\.weight"
        r"|ffn_norm\.weight|attention\.[qkvo]_proj\.weight|feed_forward\.(gate|up|down)_proj\.weight))"
        r"|multi_modal_projector\.linear_[12]\.(weight|bias)"
    )


# --- the checkpoints ---------------------------------------------------------------------------------------


def _convert(tiny_model_dir, tmp_path_factory, recipe: str):
    out = tmp_path_factory.mktemp(recipe) / "out"
    convert(tiny_model_dir, load_recipe(recipe), out)
    cfg = json.loads((out / "config.json").read_text())
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        names = f.keys()
        tensors = {k: f.get_tensor(k) for k in names}
    assert not (out / "model.safetensors.index.json").exists()  # one shard: the reads above see every tensor
    return cfg, tensors


@pytest.fixture(scope="module")
def rtn4(tiny_model_dir, tmp_path_factory):
    return _convert(tiny_model_dir, tmp_path_factory, "tiny-rtn-int4")


@pytest.fixture(scope="module")
def nf4(tiny_model_dir, tmp_path_factory):
    pytest.importorskip("bitsandbytes", reason="bitsandbytes is in the 'bnb' extra (installed by dev)")
    return _convert(tiny_model_dir, tmp_path_factory, "tiny-bnb-nf4")


@pytest.fixture(scope="module")
def int8(tiny_model_dir, tmp_path_factory):
    pytest.importorskip("bitsandbytes", reason="bitsandbytes is in the 'bnb' extra (installed by dev)")
    return _convert(tiny_model_dir, tmp_path_factory, "tiny-bnb-int8")


@pytest.fixture(scope="module")
def source_shapes(tiny_model_dir):
    """Checkpoint name of each source Linear weight → (out_features, in_features)."""
    with safe_open(str(tiny_model_dir / "model.safetensors"), "pt") as f:
        names = f.keys()
        return {k: tuple(f.get_slice(k).get_shape()) for k in names}


CHECKPOINTS = [("rtn4", "gptq"), ("nf4", "nf4"), ("int8", "int8")]


# --- names -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fixture", "kind"), CHECKPOINTS)
def test_every_tensor_lands_in_vllms_llava_tree(fixture, kind, request):
    cfg, tensors = request.getfixturevalue(fixture)
    assert cfg["architectures"] == ["LlavaForConditionalGeneration"]  # vLLM's registry key for this loader
    assert cfg["vision_config"]["model_type"] == "pixtral"  # → init_vision_tower_for_llava builds PixtralHF
    assert cfg["text_config"]["model_type"] == "mistral"  # → MistralForCausalLM (llama.py layout)
    pattern = accepted(kind)
    stray = sorted(k for k in tensors if not pattern.fullmatch(vllm_name(k)))
    assert stray == []
    # every Linear of the tree vLLM builds finds its tensors (the loader errors on an uninitialized parameter)
    mapped = {vllm_name(k) for k in tensors}
    head = {"gptq": "qweight", "nf4": "weight", "int8": "weight"}[kind]
    for group, prefixes in linear_prefixes(cfg).items():
        for prefix in prefixes:
            leaf = head if group == "decoder" else "weight"
            assert all(f"{s}.{leaf}" in mapped for s in shard_names(prefix)), prefix
    assert "language_model.lm_head.weight" in mapped and not cfg["text_config"]["tie_word_embeddings"]
    # vision layers past vision_feature_layer would be silently dropped by PixtralHFVisionModel.load_weights
    n_vision = cfg["vision_config"]["num_hidden_layers"]
    assert cfg["vision_feature_layer"] == -1
    assert max(int(k.split(".")[3]) for k in mapped if k.startswith("vision_tower.transformer.")) == n_vision - 1


# --- GPTQ v1 (rtn-int4; gptq-int4/-int8 write the same config through schemes/gptq_format.py) --------------


def test_gptq_quantization_config_has_what_vllm_from_config_reads(rtn4):
    cfg, _ = rtn4
    qc = cfg["quantization_config"]
    # GPTQConfig.from_config / GPTQMarlinConfig.from_config: get_from_keys (required) for these
    assert qc["quant_method"] == "gptq"
    assert type(qc["bits"]) is int and qc["bits"] in (4, 8)
    assert type(qc["group_size"]) is int and qc["group_size"] == 128
    assert type(qc["desc_act"]) is bool and qc["desc_act"] is False
    assert type(qc["sym"]) is bool and qc["sym"] is True  # required by GPTQMarlinConfig.from_config
    # get_from_keys_or (optional) keys
    assert qc["lm_head"] is False  # ParallelLMHead stays unquantized
    assert qc["checkpoint_format"] == "gptq"  # not "gptq_v2": GPTQLinearMethod.use_v2_format stays False
    assert not qc.get("dynamic")  # no per-module overrides / negative matches
    # is_gptq_marlin_compatible → vLLM picks gptq_marlin (bf16 activations allowed) on CUDA
    assert (qc["bits"], qc["sym"]) in MARLIN_BITS_SYM and qc["group_size"] in MARLIN_GROUP_SIZES
    # config.json is where get_quant_config looks first (hf_config.quantization_config)
    assert cfg["dtype"] == "bfloat16"


def test_gptq_modules_in_block_select_exactly_the_decoder_under_vllms_substring_rule(rtn4):
    cfg, tensors = rtn4
    raw = cfg["quantization_config"]["modules_in_block_to_quantize"]
    assert isinstance(raw, list) and all(isinstance(x, list) for x in raw)  # list[list[str]], as GPTQModel writes
    flat = [m for group in raw for m in group]  # GPTQConfig.maybe_update_config flattens list[list[str]]
    flat = [vllm_name(m) for m in flat]  # then configure_quant_config → apply_vllm_mapper → apply_list
    assert sorted(flat) == ["mlp.down_proj", "mlp.gate_proj", "mlp.up_proj", "self_attn.k_proj",
                            "self_attn.o_proj", "self_attn.q_proj", "self_attn.v_proj"]
    prefixes = linear_prefixes(cfg)
    decision = {p: is_layer_gptq_quantized(p, flat) for ps in prefixes.values() for p in ps}
    assert all(decision[p] for p in prefixes["decoder"])
    assert not any(decision[p] for p in prefixes["vision"] + prefixes["projector"])
    # vLLM's decision agrees with what the checkpoint holds, Linear by Linear
    for prefix, quantized in decision.items():
        for shard in shard_names(prefix):
            assert (f"{shard}.qweight" in tensors) == quantized, shard
            assert (f"{shard}.weight" in tensors) == (not quantized), shard
            if not quantized:
                assert tensors[f"{shard}.weight"].dtype == torch.bfloat16


def test_gptq_tensors_have_vllm_create_weights_shapes_and_v1_zeros(rtn4, source_shapes):
    cfg, tensors = rtn4
    qc = cfg["quantization_config"]
    bits, group = qc["bits"], qc["group_size"]
    pack = 32 // bits
    v1_zero = int.from_bytes(bytes([(2 ** (bits - 1) - 1) * (0x11 if bits == 4 else 1)] * 4), "little", signed=True)
    seen = 0
    for name in tensors:
        if not name.endswith(".qweight"):
            continue
        base = name[: -len(".qweight")]
        out_f, in_f = source_shapes[f"{base}.weight"]
        # GPTQLinearMethod.create_weights / GPTQMarlinLinearMethod.create_weights at TP=1
        assert tensors[name].dtype == torch.int32 and tuple(tensors[name].shape) == (in_f // pack, out_f)
        assert tensors[f"{base}.qzeros"].dtype == torch.int32
        assert tuple(tensors[f"{base}.qzeros"].shape) == (in_f // group, out_f // pack)
        assert tensors[f"{base}.scales"].dtype == torch.float16
        assert tuple(tensors[f"{base}.scales"].shape) == (in_f // group, out_f)
        g_idx = tensors[f"{base}.g_idx"]
        assert g_idx.dtype == torch.int32 and torch.equal(g_idx, torch.arange(in_f, dtype=torch.int32) // group)
        # GPTQ v1 symmetric: stored zero = 2^(bits-1) - 1 (vLLM's v1 kernels add 1; Marlin's uint4b8 bias is 8)
        assert torch.all(tensors[f"{base}.qzeros"] == v1_zero)
        seen += 1
    assert seen == cfg["text_config"]["num_hidden_layers"] * 7


# --- bitsandbytes ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fixture", "load_4", "load_8"), [("nf4", True, False), ("int8", False, True)])
def test_bnb_quantization_config_has_what_vllm_reads(fixture, load_4, load_8, request):
    cfg, _ = request.getfixturevalue(fixture)
    qc = cfg["quantization_config"]
    # BitsAndBytesModelLoader._verify_model_compatibility: pre-quantized iff quant_method == "bitsandbytes";
    # load_8bit = quant_config.get("load_in_8bit")
    assert qc["quant_method"] == "bitsandbytes"
    assert qc["load_in_4bit"] is load_4 and qc["load_in_8bit"] is load_8
    assert qc["bnb_4bit_quant_storage"] == "uint8"  # BitsAndBytesConfig.__init__ raises on anything else
    if load_4:
        assert qc["bnb_4bit_quant_type"] == "nf4" and qc["bnb_4bit_use_double_quant"] is True
    skip = qc["llm_int8_skip_modules"]
    assert isinstance(skip, list) and skip and all(isinstance(m, str) for m in skip)


@pytest.mark.parametrize(("fixture", "leaf"), [("nf4", "weight.quant_state.bitsandbytes__nf4"), ("int8", "SCB")])
def test_bnb_skip_modules_keep_exactly_vision_and_projector_in_bf16(fixture, leaf, request):
    cfg, tensors = request.getfixturevalue(fixture)
    skip = cfg["quantization_config"]["llm_int8_skip_modules"]
    prefixes = linear_prefixes(cfg)
    assert not any(is_layer_skipped_bnb(p, skip) for p in prefixes["decoder"])
    assert all(is_layer_skipped_bnb(p, skip) for p in prefixes["vision"] + prefixes["projector"])
    for group, ps in prefixes.items():
        for prefix in ps:
            for shard in shard_names(prefix):
                assert (f"{shard}.{leaf}" in tensors) == (group == "decoder"), shard
                if group != "decoder":
                    assert tensors[f"{shard}.weight"].dtype == torch.bfloat16
    assert tensors["language_model.lm_head.weight"].dtype == torch.bfloat16  # ParallelLMHead: no bnb method


def test_nf4_tensors_have_the_suffixes_vllms_4bit_loader_reads(nf4, source_shapes):
    cfg, tensors = nf4
    aux = ("absmax", "quant_map", "nested_absmax", "nested_quant_map", "quant_state.bitsandbytes__nf4")
    decoder = [s for p in linear_prefixes(cfg)["decoder"] for s in shard_names(p)]
    assert len(decoder) == cfg["text_config"]["num_hidden_layers"] * 7
    for shard in decoder:
        name = f"{shard}.weight"
        out_f, in_f = source_shapes[name]
        # create_qweight_for_4bit with bf16 params: (in*out // 2, 1) uint8
        assert tensors[name].dtype == torch.uint8 and tuple(tensors[name].shape) == (out_f * in_f // 2, 1)
        assert not is_4bit_aux_name(name)
        # _quantized_4bit_generator: the weight is pre-quantized iff "<name>.quant_state.bitsandbytes__nf4"
        # exists; _parse_quant_state gathers every key containing "<name>." into QuantState.from_dict
        assert f"{name}.quant_state.bitsandbytes__nf4" in tensors
        state_keys = sorted(k for k in tensors if name + "." in k)
        assert state_keys == sorted(f"{name}.{a}" for a in aux)
        assert all(is_4bit_aux_name(k) for k in state_keys)
        state = json.loads(bytes(tensors[f"{name}.quant_state.bitsandbytes__nf4"].tolist()))
        assert state["quant_type"] == "nf4" and state["shape"] == [out_f, in_f] and state["blocksize"] == 64
    assert not any(is_4bit_aux_name(k) for k in tensors if not k.startswith("language_model.model.layers."))


def test_int8_tensors_have_the_suffixes_vllms_8bit_loader_reads(int8, source_shapes):
    cfg, tensors = int8
    decoder = [s for p in linear_prefixes(cfg)["decoder"] for s in shard_names(p)]
    scb_targets = {k.lower().replace(".scb", ".weight") for k in tensors if k.lower().endswith(".scb")}
    # _quantized_8bit_generator keys the SCB by the *lower-cased* name and then looks the weight up by its own
    # name: the two only meet when the weight name is already lower case.
    assert scb_targets == {f"{s}.weight" for s in decoder}
    assert all(t in tensors for t in scb_targets)
    for shard in decoder:
        out_f, in_f = source_shapes[f"{shard}.weight"]
        weight = tensors[f"{shard}.weight"]
        assert weight.dtype == torch.int8 and tuple(weight.shape) == (out_f, in_f)
        assert tensors[f"{shard}.SCB"].dtype == torch.float32 and tuple(tensors[f"{shard}.SCB"].shape) == (out_f,)
        assert is_8bit_aux_name(f"{shard}.SCB") and is_8bit_aux_name(f"{shard}.weight_format")
        assert not is_8bit_aux_name(f"{shard}.weight")


def test_gptq_lm_head_is_what_vllm_quantizes_when_lm_head_is_true(tiny_model_dir, tmp_path):
    """targets.lm_head: int4 → `lm_head: true` (GPTQMarlinConfig.get_quant_method then gives the
    ParallelLMHead the GPTQ linear method) and an 'lm_head' entry that is a substring of vLLM's
    `language_model.lm_head` prefix only; block_name_to_quantize "" is read by transformers, not by vLLM."""
    from pixtral_quant.config import with_overrides

    out = tmp_path / "out"
    convert(tiny_model_dir, with_overrides(load_recipe("tiny-rtn-int4"), {"targets.lm_head": "int4"}), out)
    cfg = json.loads((out / "config.json").read_text())
    qc = cfg["quantization_config"]
    assert qc["lm_head"] is True
    flat = [vllm_name(m) for group in qc["modules_in_block_to_quantize"] for m in group]
    prefixes = linear_prefixes(cfg)
    assert is_layer_gptq_quantized("language_model.lm_head", flat)
    assert all(is_layer_gptq_quantized(p, flat) for p in prefixes["decoder"])
    assert not any(is_layer_gptq_quantized(p, flat) for p in prefixes["vision"] + prefixes["projector"])
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        names = set(f.keys())
    assert {f"language_model.lm_head.{s}" for s in ("qweight", "qzeros", "scales", "g_idx")} <= names
