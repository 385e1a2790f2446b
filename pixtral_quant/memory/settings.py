"""Defaults of the memory plan (the one place they live for pixtral_quant.memory): the workload generation
runs, where each component is placed, the GPU memory kept for CUDA itself, and the memory promise of each
shipped recipe.

The Recipe (config.py) has no deployment section yet, so the promises of the shipped recipes live in
SHIPPED_TARGETS below; they belong in each recipe's YAML once Recipe grows a `deployment:` section.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..errors import UsageError
from .units import GIB


@dataclass(frozen=True)
class Workload:
    """One generation at batch 1: `images` images of width × height, `text_tokens` prompt text tokens, then
    `new_tokens` generated. context: tokens the KV cache holds (prompt + generated); None = exactly those."""

    images: int = 1
    image_width: int = 1024
    image_height: int = 1024
    text_tokens: int = 1024
    new_tokens: int = 128
    context: int | None = None


@dataclass(frozen=True)
class Placement:
    """Where components live during generation.
    embeddings: 'gpu' | 'cpu' (the lookup runs on the CPU, only the looked-up rows go to the GPU);
    vision: 'gpu' | 'offload' (vision tower + projector kept in CPU memory, moved to the GPU for the image pass
    and back); lm_head: 'gpu' | 'cpu' (logits computed on the CPU, slow decode).
    kv_dtype / compute_dtype: of the KV cache and the activations."""

    embeddings: str = "gpu"
    vision: str = "gpu"
    lm_head: str = "gpu"
    kv_dtype: str = "bfloat16"
    compute_dtype: str = "bfloat16"


PLACEMENT_CHOICES: dict[str, tuple[str, ...]] = {"embeddings": ("gpu", "cpu"), "vision": ("gpu", "offload"),
                                                 "lm_head": ("gpu", "cpu")}

# GPU memory kept out of the budget for the CUDA context, cuBLAS/attention workspaces and allocator slack:
# (cards from this size up, reserve). Matches the promises' definitions: an 8 GiB card allows a torch peak of
# 7.5 GiB, 14 GiB → 13.5 GiB, 80 GiB → 75 GiB (a large card fragments more at long contexts).
RESERVE: tuple[tuple[float, float], ...] = ((0.0, 0.5 * GIB), (40.0 * GIB, 5.0 * GIB))


def reserve_for(card_bytes: int) -> int:
    """Bytes of a card's memory not available to torch tensors."""
    return int([r for size, r in RESERVE if card_bytes >= size][-1])


@dataclass(frozen=True)
class Target:
    """A memory promise: the card, the workload it must run, and the placement the recipe is meant to run with."""

    gpu_memory: str
    workload: Workload = field(default_factory=Workload)
    placement: Placement = field(default_factory=Placement)
    model: str = "pixtral-12b"  # the model the promise is about (shipped name)


# The promises (issue: 12B INT4 ≤ 8 GB, 12B INT8 ≤ 14 GB, one 1024² image + 1024 text tokens; Large on one
# 80 GB A100 at 8k context). Placements: the cheapest the plan found that fits (see `pixtral-quant plan`).
SHIPPED_TARGETS: dict[str, Target] = {
    "pixtral-12b-int4": Target("8GiB", Workload(), Placement(embeddings="cpu", vision="offload")),
    "pixtral-12b-int8": Target("14GiB", Workload(), Placement(embeddings="cpu", vision="offload")),
    # gptq-mixed: the same promises; convert --fit picks the allocation that fills them (mixed/budget.py)
    "pixtral-12b-mixed-8gib": Target("8GiB", Workload(), Placement(embeddings="cpu", vision="offload")),
    "pixtral-12b-mixed-14gib": Target("14GiB", Workload(), Placement(embeddings="cpu", vision="offload")),
    "pixtral-large-int4": Target("80GiB", Workload(context=8192), Placement(), model="pixtral-large"),
    # llama.cpp places the GGUF itself (memory/llamacpp.py): token_embd on the host, the mmproj on the GPU
    # 8.95 GiB with one 1024² image: a 12 GiB card (RTX 3060 / 4070 class); on 8 GiB plan proposes Q3_K_M + Q8_0
    "pixtral-12b-gguf-q4_k_m": Target("12GiB", Workload()),
}
DEFAULT_TARGET = Target("80GiB")  # a recipe without a promise: the largest single card


def target_for(recipe_name: str | None) -> Target:
    """The promise of a shipped recipe, else DEFAULT_TARGET."""
    return SHIPPED_TARGETS.get(recipe_name or "", DEFAULT_TARGET)


def with_placement(placement: Placement, **changes) -> Placement:
    """Placement with fields changed; UsageError for an unknown value."""
    for key, value in changes.items():
        if value is not None and value not in PLACEMENT_CHOICES[key]:
            raise UsageError(f"{key} cannot be placed on {value!r}", where=f"--{key.replace('_', '-')}",
                             fix=f"use one of {', '.join(PLACEMENT_CHOICES[key])}")
    return replace(placement, **{k: v for k, v in changes.items() if v is not None})
