"""The plan: every Linear of the model with the scheme it gets, or the reason it is left alone. Printed before
work starts, saved in the manifest, and compared with what the conversion actually did (convert fails on a
difference). Bad combinations (a group size that does not divide a Linear, an option the scheme's checkpoint
format cannot express) are UsageErrors here, before anything is loaded or written.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from .errors import UsageError
from .loading.arch import meta_model
from .loading.names import LAYERS

# Component of a runtime module name → the Targets field that selects it.
COMPONENTS = (
    ("decoder", LAYERS),
    ("lm_head", "lm_head"),
    ("vision_tower", "model.vision_tower."),
    ("projector", "model.multi_modal_projector."),
)
# Module-name prefixes of each optional component in the runtime and the checkpoint spelling, for bitsandbytes'
# llm_int8_skip_modules: transformers 5.23 matches each entry from the start of the runtime name (or as a suffix),
# so "vision_tower" alone would not protect "model.vision_tower.*"; vLLM matches entries as substrings of
# its own (checkpoint-like) names. Both spellings keep both readers right.
FRAGMENTS = {"lm_head": ("lm_head", "language_model.lm_head"),
             "vision_tower": ("model.vision_tower", "vision_tower"),
             "projector": ("model.multi_modal_projector", "multi_modal_projector")}
# What each scheme can write for an optional target, its method notes and decoder reason are facts on its config
# (config._SchemeFacts: optional_targets, target_notes, decoder_reason).


@dataclass(frozen=True)
class Entry:
    """One Linear: runtime module name, component, in/out features, scheme (None = kept), reason."""

    name: str
    component: str
    in_features: int
    out_features: int
    scheme: str | None
    reason: str


@dataclass(frozen=True)
class Plan:
    scheme: str
    entries: tuple[Entry, ...]

    def quantized(self) -> list[Entry]:
        return [e for e in self.entries if e.scheme is not None]

    def names(self) -> set[str]:
        return {e.name for e in self.quantized()}

    def skip_fragments(self) -> list[str]:
        """Name prefixes of the optional components left in bf16 (for llm_int8_skip_modules)."""
        kept = {e.component for e in self.entries if e.scheme is None}
        return [name for c in FRAGMENTS if c in kept for name in FRAGMENTS[c]]

    def to_list(self) -> list[dict]:
        return [asdict(e) for e in self.entries]

    def check_done(self, done: set[str]) -> None:
        """RuntimeError unless `done` (module names actually quantized) is exactly the plan's set."""
        missing, extra = sorted(self.names() - done), sorted(done - self.names())
        if missing or extra:
            raise RuntimeError(f"the conversion differs from its plan: not quantized {missing[:5]}, "
                               f"quantized without a plan entry {extra[:5]}")


def component_of(name: str) -> str:
    return next(comp for comp, prefix in COMPONENTS if name.startswith(prefix))


def make_plan(config, recipe) -> Plan:
    """Plan of `recipe` for a model with this LlavaConfig; UsageError for a combination that cannot work."""
    scheme = recipe.scheme.name
    group = getattr(recipe.scheme, "group_size", None)
    entries = []
    for name, module in meta_model(config).named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        comp = component_of(name)
        chosen, reason = _decide(comp, recipe.targets, recipe.scheme)
        if chosen and group not in (None, -1) and module.in_features % group:
            raise UsageError(f"group size {group} does not divide in_features {module.in_features} of {name}",
                             where=f"scheme {scheme}", fix=f"use a group size dividing {module.in_features} "
                             "(e.g. 128, 64, 32) or -1 for per-channel")
        entries.append(Entry(name, comp, module.in_features, module.out_features, scheme if chosen else None,
                             reason))
    return Plan(scheme, tuple(entries))


def check_targets(recipe) -> None:
    """Raise the UsageError build_plan raises for an optional target (lm_head, vision_tower, projector) that
    the recipe's scheme cannot write; for callers that size a recipe without a model to plan (memory/report.py)."""
    for component in ("lm_head", "vision_tower", "projector"):
        _decide(component, recipe.targets, recipe.scheme)


def _decide(component: str, targets, scheme) -> tuple[bool, str]:
    """(quantize?, why) for one Linear of `component` under `scheme` (a config.py scheme config)."""
    wanted = getattr(targets, component)
    if component == "decoder":
        return (True, scheme.decoder_reason) if wanted else (False, "targets.decoder is false")
    if wanted is None:
        return False, f"{component} stays bf16 (targets.{component} not set)"
    can = scheme.optional_targets
    if can.get(component) != wanted:
        raise UsageError(f"scheme {scheme.name} cannot write the {component} as {wanted}",
                         where=f"targets.{component}",
                         fix=(f"this scheme supports {can}" if can else "leave it unset (bf16)") +
                         "; a GPTQ checkpoint holds one bit width (decoder Linears and optionally the lm_head)")
    note = scheme.target_notes.get(component)
    return True, f"targets.{component} = {wanted}" + (f" ({note})" if note else "")


def render(plan: Plan, cset=None):
    """A rich Table: one row per group of Linears sharing component, scheme and reason (layers folded); cset (a
    calibration/dataset.py CalibrationSet, None for data-free schemes) is named under it: which data calibrates,
    before the run spends its time on it."""
    from rich.table import Table

    table = Table("component", "Linears", "scheme", "reason", title=f"plan ({plan.scheme})",
                  caption=calibration_line(cset), caption_justify="left")
    groups: dict[tuple, list[Entry]] = {}
    for e in plan.entries:
        groups.setdefault((e.component, e.scheme, e.reason), []).append(e)
    for (comp, scheme, reason), items in groups.items():
        leaves = sorted({e.name.rsplit(".", 1)[-1] for e in items})
        table.add_row(comp, f"{len(items)} ({', '.join(leaves)})", scheme or "kept bf16", reason)
    return table


def calibration_line(cset) -> str:
    """'calibration: tiny, 96 samples, 2889 tokens, 115 images (sha256:1a2b3c4d5e6f)', or that there is none."""
    if cset is None:
        return "calibration: none (data-free scheme)"
    st = cset.stats
    return (f"calibration: {cset.name}, {st.samples} samples, {st.total_tokens} tokens, "
            f"{st.images} images ({cset.content_hash[:19]})")
