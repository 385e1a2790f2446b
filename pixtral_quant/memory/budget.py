"""The GPU memory of one generation, phase by phase, against a card: fits or not.

Phases (batch 1, torch-allocated bytes; the CUDA context is the card's reserve, settings.RESERVE):
- image pass: resident weights + the offloaded vision tower/projector moved in + the image activations
  (the KV cache is still empty);
- prefill:    resident weights + KV cache of the prompt + one decoder layer's activations + the kept input
  embeddings [T, H] + the largest quantized-kernel transient;
- decode:     resident weights + KV cache of the whole context + one layer's KV again (the cache grows by
  concatenation) + the logits.
Resident weights are every component placed on the GPU (settings.Placement); CPU-placed ones are host memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .inventory import ModelShapes, by_component, format_shapes, inventory
from .runtime import (decoder_prefill_bytes, image_tokens, kernel_transient, kv_bytes_per_token,
                      vision_prefill_bytes)
from .settings import Placement, Workload, reserve_for
from .storage import DTYPE_BYTES

# arch component → the Placement field that decides where it lives (others are always on the GPU).
PLACED_BY = {"embeddings": "embeddings", "vision_tower": "vision", "projector": "vision", "lm_head": "lm_head"}
COMPONENT_ORDER = ("decoder_linears", "lm_head", "embeddings", "vision_tower", "projector", "norms")


@dataclass(frozen=True)
class Tokens:
    """The workload in tokens: prompt (images + text), context (KV capacity), per-image patches and tokens."""

    prompt: int
    context: int
    image_tokens: int
    patches: int
    pixels: int


def tokens_of(config, workload: Workload) -> Tokens:
    """Resolve a Workload; ValueError when the context cannot hold the images and the generated tokens."""
    img = image_tokens(config.vision_config, workload.image_width, workload.image_height)
    images = workload.images * img.tokens
    if workload.context is None:
        prompt = images + workload.text_tokens
        return Tokens(prompt, prompt + workload.new_tokens, images, workload.images * img.patches,
                      workload.images * workload.image_width * workload.image_height)
    prompt = workload.context - workload.new_tokens
    if prompt < images:
        raise ValueError(f"a context of {workload.context} tokens cannot hold {workload.images} image(s) of "
                         f"{img.tokens} tokens and {workload.new_tokens} new tokens")
    return Tokens(prompt, workload.context, images, workload.images * img.patches,
                  workload.images * workload.image_width * workload.image_height)


@dataclass
class MemoryPlan:
    """Bytes of one generation. weights: per component (runtime, rotary tables included) with where each lives;
    phases: GPU bytes per phase; peak/limit: the largest phase vs the card minus its reserve."""

    card: int
    reserve: int
    tokens: Tokens
    placement: Placement
    weights: dict[str, int]
    where: dict[str, str]
    kv_per_token: int
    activations: dict[str, int]
    phases: dict[str, int]
    host: int
    notes: list[str] = field(default_factory=list)

    @property
    def limit(self) -> int:
        return self.card - self.reserve

    @property
    def peak_phase(self) -> str:
        return max(self.phases, key=self.phases.get)

    @property
    def peak(self) -> int:
        return self.phases[self.peak_phase]

    @property
    def fits(self) -> bool:
        return self.peak <= self.limit


def placed(component: str, placement: Placement) -> str:
    """'gpu', 'cpu' or 'offload' for an arch component."""
    return getattr(placement, PLACED_BY[component]) if component in PLACED_BY else "gpu"


def _phases(config, weights, where, tokens: Tokens, kinds, placement: Placement, kv_tok: int) -> tuple[dict, dict]:
    """(activation bytes per phase, GPU bytes per phase)."""
    text, b = config.text_config, DTYPE_BYTES[placement.compute_dtype]
    resident = sum(n for c, n in weights.items() if where[c] == "gpu")
    offloaded = sum(n for c, n in weights.items() if where[c] == "offload")
    vision_kinds = kinds["vision"]
    dtype = placement.compute_dtype
    acts = {
        "image pass": vision_prefill_bytes(config, tokens.patches, tokens.pixels, tokens.prompt, dtype)
        + max((kernel_transient(k, s, tokens.patches) for k, s in vision_kinds.items()), default=0),
        "prefill": decoder_prefill_bytes(text, tokens.prompt, dtype) + tokens.prompt * text.hidden_size * b
        + max((kernel_transient(k, s, tokens.prompt) for k, s in kinds["decoder"].items()), default=0),
        "decode": kv_tok * tokens.context // text.num_hidden_layers + 2 * 4 * text.vocab_size,
    }
    phases = {"image pass": resident + offloaded + acts["image pass"],
              "prefill": resident + kv_tok * tokens.prompt + acts["prefill"],
              "decode": resident + kv_tok * tokens.context + acts["decode"]}
    if tokens.patches == 0:
        acts.pop("image pass"), phases.pop("image pass")
    return acts, phases


def _kinds(shapes: ModelShapes, recipe) -> dict[str, dict]:
    """Kernel shapes per format kind, split into the decoder path and the vision path."""
    from dataclasses import replace

    vision_only = replace(shapes, linears=tuple(s for s in shapes.linears if s.target in ("vision_tower", "projector")))
    text_only = replace(shapes, linears=tuple(s for s in shapes.linears if s.target == "decoder"))
    return {"vision": format_shapes(vision_only, recipe), "decoder": format_shapes(text_only, recipe)}


def plan_memory(config, shapes: ModelShapes, recipe, card: int, workload: Workload, placement: Placement,
                reserve: int | None = None) -> MemoryPlan:
    """The memory plan of `recipe` on a card of `card` bytes for `workload` with `placement`."""
    tokens = tokens_of(config, workload)
    per = by_component(inventory(shapes, recipe))
    weights = {c: per.get(c, 0) for c in COMPONENT_ORDER}
    where = {c: placed(c, placement) for c in weights}
    kv_tok = kv_bytes_per_token(config.text_config, placement.kv_dtype)
    acts, phases = _phases(config, weights, where, tokens, _kinds(shapes, recipe), placement, kv_tok)
    host = sum(n for c, n in weights.items() if where[c] != "gpu")
    return MemoryPlan(card, reserve_for(card) if reserve is None else reserve, tokens, placement, weights, where,
                      kv_tok, acts, phases, host)
