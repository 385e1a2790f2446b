"""Predicted peak host RSS of `convert`, term by term, from a config and a recipe — none of the terms grows with
the number of decoder layers (checked against measurements by scripts/rss_vs_depth.py).

Terms (bytes), following convert.py / capture.py / schemes:
- baseline:   the interpreter with torch, transformers' Pixtral modeling and the pipeline imported (≈ 0.76 GiB);
- outside:    every non-decoder tensor in the source dtype, read at once and emitted first;
- shard:      one decoder layer's output tensors, held until the layer goes to the resume journal
              (export/journal.py), twice (save_file serializes the file's bytes at once); the shards are then
              streamed from the journal one tensor at a time, so max_shard_gb does not count;
- layer:      one decoder layer as stored;
- transient:  the quantizer's temporaries on the largest decoder Linear (RTN: float32 weight, int32 codes, the
              int64 packing buffers ≈ the scheme's transient_bytes_per_param (config.py) per parameter, on at most
              schemes.rtn.ROW_BLOCK output rows at a time);
- outside_transient: the same on the largest planned non-decoder Linear a data-free scheme quantizes while the
              outside tensors are held (the lm_head of the int4/int8 recipes: 131072 × 5120 on Pixtral-12B). It was
              missing until the full-size run measured 19.8 GiB against 4.0 predicted (reports/full-size-cpu.md);
- GPTQ only:  GPTQModel's import (GPTQ_LIBRARY_BYTES), the shell while it loads (embeddings + vision tower +
              projector read at once in the source dtype, capture.load_shell, and cast to the compute dtype on
              the CPU when there is no GPU: both at the end of the load), the shell as it stays on the host
              (shell_resident: the cast copy; 0 on a GPU host), calibration activations (samples × tokens ×
              hidden, at most activation_budget_gib; the rest spills to disk), the layer in float32 on the CPU
              and one Hessian [in, in] float32 per Linear being solved;
- head:       GPTQ on the lm_head (targets.lm_head), after the last layer, with the activations still held: the
              source weight, and the solver's float32 copies (the GPTQ scheme's transient_bytes_per_param + the block's
              float32 Linear) of capture.HEAD_ROW_BLOCK rows at a time, and the finished blocks' tensors. Before the
              row blocks the whole 131072 x 5120 head was solved at once and the full-size run was killed at 22.8
              GiB on a 24 GiB host.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import CalibConfig
from ..loading.names import LAYERS
from ..memory.inventory import ModelShapes, inventory
from ..memory.storage import DTYPE_BYTES
from ..memory.units import GIB

BASELINE_BYTES = int(0.76 * GIB)  # measured: torch + transformers' Pixtral modeling + the pipeline imported
GPTQ_LIBRARY_BYTES = 470 * 2**20  # importing GPTQModel 7.6 (measured), after the baseline
# The temporaries per parameter of the largest Linear are a fact of the scheme: config._SchemeFacts
# (transient_bytes_per_param, with calibrated and row_blocked).


@dataclass(frozen=True)
class RssTerms:
    """The terms (bytes) and the predicted peak (baseline + the larger of the two phases)."""

    baseline: int
    outside: int
    shard: int
    layer: int
    transient: int
    library: int = 0
    outside_transient: int = 0
    shell: int = 0
    shell_resident: int = 0
    activations: int = 0
    layer_compute: int = 0
    hessians: int = 0
    head: int = 0

    @property
    def head_phase(self) -> int:
        return self.head + self.activations if self.head else 0

    @property
    def outside_phase(self) -> int:
        """Before the first decoder layer, three steps one after the other (each frees what it read): the
        non-decoder tensors emitted, the shell loaded, the calibration samples captured through it. Summing
        them predicted 11.3 GiB for a 12B-width GPTQ conversion that peaked at 7.2 (the shell load)."""
        return max(self.outside + self.outside_transient, self.shell, self.shell_resident + self.activations)

    @property
    def layer_phase(self) -> int:
        return self.shard + self.layer + self.transient + self.activations + self.layer_compute + self.hessians

    @property
    def peak(self) -> int:
        return self.baseline + self.library + max(self.outside_phase, self.layer_phase, self.head_phase)


def _decoder_linears(shapes: ModelShapes, layer: int = 0):
    return [lin for lin in shapes.linears if lin.name.startswith(f"{LAYERS}{layer}.")]


def convert_rss(config, shapes: ModelShapes, recipe, *, gpu: bool = False, calib_tokens: int | None = None,
                baseline: int = BASELINE_BYTES) -> RssTerms:
    """Predicted RSS terms of converting the model `shapes` describes with `recipe`. gpu: compute on a GPU (the
    shell, layer and Hessians then live there); calib_tokens: total calibration tokens (default: samples ×
    max_tokens, the recipe's upper bound). ValueError for a scheme without a measured transient (gptq-mixed,
    gguf-*: config._SchemeFacts.transient_bytes_per_param is None)."""
    scheme = recipe.scheme
    if scheme.transient_bytes_per_param is None:
        raise ValueError(f"no conversion RSS model for scheme {scheme.name}: its transients were never measured")
    src = DTYPE_BYTES[shapes.dtype]
    source = {lin.name: lin.in_features * lin.out_features * src for lin in shapes.linears}
    others = [it for it in shapes.others if it.stored]
    outside = sum(n for name, n in source.items() if not name.startswith(LAYERS)) + \
        sum(it.nbytes for it in others if not it.name.startswith(LAYERS))
    layer_lins = _decoder_linears(shapes)
    layer = sum(source[lin.name] for lin in layer_lins) + \
        sum(it.nbytes for it in others if it.name.startswith(f"{LAYERS}0."))
    largest = max(_transient_params(lin, scheme) for lin in layer_lins)
    shard = 2 * sum(it.nbytes for it in inventory(shapes, recipe) if it.stored and it.name.startswith(f"{LAYERS}0."))
    terms = dict(baseline=baseline, outside=outside, shard=shard, layer=layer,
                 transient=scheme.transient_bytes_per_param * largest)
    if not scheme.calibrated:  # data-free: planned non-decoder Linears are quantized in the outside phase
        planned = _planned_outside(config, recipe)
        outside_lins = [lin for lin in shapes.linears if lin.name in planned]
        terms["outside_transient"] = scheme.transient_bytes_per_param * max(
            (_transient_params(lin, scheme) for lin in outside_lins), default=0)
    else:
        terms.update(_gptq_terms(config, shapes, recipe, gpu, calib_tokens, layer_lins, src))
        terms["head"] = _head_bytes(shapes, recipe, src, gpu)
    return RssTerms(**terms)


def _head_bytes(shapes: ModelShapes, recipe, src: int, gpu: bool) -> int:
    """The lm_head's GPTQ (capture.calibrate_head in row blocks) on the host: 0 when the recipe leaves the head
    alone; on a GPU host the solver's copies live on the GPU."""
    from ..capture import HEAD_ROW_BLOCK

    head = next((lin for lin in shapes.linears if lin.name == "lm_head"), None)
    if head is None or not recipe.targets.lm_head:
        return 0
    rows = min(head.out_features, HEAD_ROW_BLOCK)
    stored = sum(it.nbytes for it in inventory(shapes, recipe) if it.stored and it.name.startswith("lm_head."))
    solving = 0 if gpu else rows * (recipe.scheme.transient_bytes_per_param + 4)
    return head.in_features * (head.out_features * src + solving) + stored


def _transient_params(lin, scheme) -> int:
    """Parameters of `lin` the quantizer holds temporaries for at once (row_blocked: ROW_BLOCK rows at a time)."""
    from ..schemes.rtn import ROW_BLOCK

    rows = min(lin.out_features, ROW_BLOCK) if scheme.row_blocked else lin.out_features
    return rows * lin.in_features


def _planned_outside(config, recipe) -> set[str]:
    """Module names of the non-decoder Linears the recipe's plan quantizes."""
    from ..plan import make_plan

    return {e.name for e in make_plan(config, recipe).quantized() if e.component != "decoder"}


def _hessian_bytes(layer_lins, true_sequential: bool) -> int:
    """float32 [in, in] per Linear of the largest group solved at once (capture.groups_for)."""
    from ..capture import groups_for

    ins = {lin.name.split(".", 4)[-1]: lin.in_features for lin in layer_lins}
    return max(sum(4 * ins[n] ** 2 for n in group if n in ins) for group in groups_for(true_sequential))


def _gptq_terms(config, shapes, recipe, gpu: bool, calib_tokens, layer_lins, src: int) -> dict:
    """Shell, activation store, float32 layer and Hessians of the calibrated path."""
    compute = 2 if gpu else 4  # convert.compute_setup: bf16 on a GPU, float32 on the CPU
    calib = recipe.calibration
    per_sample = calib.max_tokens or CalibConfig().max_tokens  # no cap given: sized at the default cap
    tokens = calib_tokens if calib_tokens is not None else (calib.num_samples or 0) * per_sample
    shell_params = sum(lin.in_features * lin.out_features for lin in shapes.linears
                       if lin.target in ("vision_tower", "projector")) + \
        sum(it.nbytes // src for it in shapes.others if it.stored and not it.name.startswith(LAYERS)
            and not it.name.startswith("lm_head"))
    acts = min(int(calib.activation_budget_gib * GIB), tokens * config.text_config.hidden_size * compute)
    layer_params = sum(lin.in_features * lin.out_features for lin in layer_lins)
    hessians = _hessian_bytes(layer_lins, recipe.scheme.true_sequential)
    return {"library": GPTQ_LIBRARY_BYTES, "shell": shell_params * (src if gpu else src + 4),
            "shell_resident": 0 if gpu else shell_params * compute, "activations": acts,
            "layer_compute": 0 if gpu else layer_params * 4, "hessians": 0 if gpu else hessians}
