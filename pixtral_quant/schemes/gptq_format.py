"""The GPTQ v1 checkpoint entry shared by rtn-* and gptq-*: `quantization_config` for config.json.

Read by transformers 5 (through optimum's GPTQQuantizer, kernels from GPTQModel; tests/test_convert.py loads the
output with plain `LlavaForConditionalGeneration.from_pretrained`) and vLLM (gptq / gptq_marlin). Not by
`GPTQModel.load`: GPTQModel 7.6 has no model definition for model_type llava (a strict xfail in
tests/test_convert.py turns red the day one loads it). What each reader needs, checked in their sources:
- transformers/optimum: quant_method, bits, group_size, desc_act, sym, checkpoint_format; only Linears under
  `block_name_to_quantize` are replaced (without it optimum guesses the first matching block pattern), and
  `modules_in_block_to_quantize` (list of lists, matched with endswith) narrows them.
- vLLM: bits, group_size, desc_act, sym, lm_head; it flattens `modules_in_block_to_quantize` and matches its
  entries as substrings of its own module names (language_model.model.layers.N.self_attn.qkv_proj ...), so
  entries spelled 'self_attn.q_proj' / 'mlp.gate_proj' never match the vision tower (attention.*,
  feed_forward.*) or the projector, which stay unquantized.
"""

from __future__ import annotations

from ..loading.names import LAYERS

BLOCK = LAYERS.rstrip(".")  # transformers 5 runtime name of the decoder block list
LM_HEAD = "lm_head"


def gptq_quantization_config(bits: int, group_size: int, sym: bool, desc_act: bool, plan, extra: dict) -> dict:
    """The config.json `quantization_config` of a GPTQ v1 checkpoint for the Linears `plan` quantizes.

    With a quantized lm_head, block_name_to_quantize is "" (optimum's prefix match then covers every Linear)
    and "lm_head" joins modules_in_block_to_quantize; optimum keeps only names ending with an entry, and the
    decoder entries ('self_attn.q_proj', 'mlp.down_proj' ...) end no vision-tower or projector name
    ('attention.q_proj', 'feed_forward.down_proj', 'linear_1'), so those stay bf16 (tests/test_convert.py)."""
    names = [t.name for t in plan.quantized()]
    head = LM_HEAD in names
    modules = sorted({n.split(".layers.", 1)[1].split(".", 1)[1] for n in names if n != LM_HEAD})
    return {
        "quant_method": "gptq",
        "checkpoint_format": "gptq",
        "bits": bits,
        "group_size": group_size,
        "sym": sym,
        "desc_act": desc_act,
        "lm_head": head,
        "block_name_to_quantize": "" if head else BLOCK,
        "modules_in_block_to_quantize": [modules + [LM_HEAD] if head else modules],
        "true_sequential": True,
        **extra,
    }
