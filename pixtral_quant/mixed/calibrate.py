"""The gptq-mixed calibration: the sequential loop (pipeline/sequential.py) through the full multimodal model with
MixedSolver (every candidate of every planned Linear into the layer journal, their per-row errors kept in memory,
the lm_head in row blocks), the Fisher probe's backward pass, and the sensitivities from both
(sensitivity.weighted_loss)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import BF16
from ..export.journal import HEAD_UNIT, layer_unit
from ..pipeline.sequential import Algorithm


def calibrate(ckpt, recipe, plan, handler, cset, tmp: Path, journal, reporter, result):
    """The sequential loop (pipeline/sequential.py) with MixedLayers (every candidate of every planned Linear into
    the journal), then the Fisher probe's backward pass. Returns ({module: {setting: sensitivity}}, {module:
    {setting: GPTQ loss}}); bf16 (when a candidate) has sensitivity 0. Sets result.stats."""
    from ..calibration.dataset import open_tokenizer
    from ..memory.units import GIB
    from ..pipeline.runtime import calib_budget, compute_setup
    from ..pipeline.sequential import run_sequential

    device, dtype = compute_setup()
    layers = MixedLayers(plan, handler, journal, recipe)
    run = run_sequential(ckpt, cset, open_tokenizer(ckpt.tokenizer), layers, text_only=recipe.calibration.text_only,
                         budget_bytes=int(calib_budget(recipe) * GIB), scratch_parent=tmp, device=device,
                         dtype=dtype, reporter=reporter)
    result.stats = run.stats
    return _sensitivities(layers.rowerr, layers.fisher, recipe.scheme), layers.gptq


FISHER_BUDGET_GIB = 1.0  # the Fisher probe's kept layer inputs stay in memory up to this, then go to disk


class MixedLayers(Algorithm):
    """gptq-mixed's per-layer work: each planned Linear solved at every candidate (mixed/sensitivity.MixedSolver;
    its bf16 weight kept, so every layer sees the reference model's activations), every candidate's tensors into
    the journal, the per-row errors kept in memory (rowerr), GPTQ's losses (gptq); then the lm_head (in row
    blocks) and the Fisher probe's backward pass (fisher), while the activations still exist."""

    def __init__(self, plan, handler, journal, recipe):
        self.plan, self.handler, self.journal = plan, handler, journal
        self.scheme, self.seed = recipe.scheme, recipe.calibration.seed
        self.rowerr: dict[str, dict[str, torch.Tensor]] = {}
        self.gptq: dict[str, dict[str, float]] = {}
        self.targets: dict[int, list[str]] = {}
        self.fisher: dict[str, torch.Tensor] = {}
        self.probe = None

    def begin(self, run) -> None:
        from ..memory.units import GIB
        from .fisher import FisherProbe

        self.probe = FisherProbe(self.scheme.fisher_samples, int(FISHER_BUDGET_GIB * GIB), run.scratch / "fisher",
                                 seed=self.seed)

    def layer(self, i: int, layer, raw, run) -> None:
        """Decoder layer i: every candidate of its planned Linears into the journal; their names (relative to the
        layer) into self.targets[i] for the Fisher probe."""
        from .. import capture

        self.probe.keep(i, run.store)
        prefix = f"{capture.LAYERS}{i}."
        names = sorted(n[len(prefix):] for n in self.plan.names() if n.startswith(prefix))
        true_sequential = self.handler.config.true_sequential
        passes = len(capture.groups_for(true_sequential)) + 1
        advance = run.reporter.task(f"layer {i + 1}/{run.text_config.num_hidden_layers}", passes * len(run.store))
        solved = capture.calibrate_layer(layer, names, self.handler.solver, run.store, run.kwargs, run.device,
                                         true_sequential, advance)
        run.reporter.done()
        tensors = {}
        for name, (candidates, losses, _) in sorted(solved.items()):
            raw.pop(f"{name}.weight")
            raw.pop(f"{name}.bias", None)
            self.gptq[prefix + name] = losses
            kept = _split_rowerr(prefix + name, candidates, self.rowerr)
            tensors.update((f"{prefix}{name}.{k}", v) for k, v in sorted(kept.items()))
        tensors.update((prefix + k, v) for k, v in sorted(raw.items()))
        self.journal.save(layer_unit(i), tensors, {}, {}, sorted(prefix + n for n in solved))
        self.targets[i] = names

    def finish(self, run) -> None:
        """The lm_head when planned (in row blocks: pipeline.sequential.solve_head), then the Fisher probe."""
        from .. import capture
        from ..pipeline.sequential import solve_head

        head = capture.HEAD in self.plan.names()
        if head:
            tensors, self.gptq[capture.HEAD] = solve_head(run, self.handler.solver)
            kept = _split_rowerr(capture.HEAD, tensors, self.rowerr)
            self.journal.save(HEAD_UNIT, {f"{capture.HEAD}.{k}": v for k, v in sorted(kept.items())}, {}, {},
                              [capture.HEAD])
        n_layers = run.text_config.num_hidden_layers
        self.fisher = self.probe.measure(run.ckpt, run.text_config, run.kwargs, run.store, self.targets, head,
                                         run.device, run.dtype, run.reporter.task("Fisher (backward, top down)",
                                                                                  n_layers))
        run.reporter.done()


def _split_rowerr(module: str, candidates: dict, rowerr: dict) -> dict:
    """The candidate tensors without the per-row errors, which go to rowerr[module][setting]."""
    from .sensitivity import ROWERR, TAG

    kept = {}
    for key, value in candidates.items():
        base, _, label = key.partition(TAG)
        if base == ROWERR:
            rowerr.setdefault(module, {})[label] = value
        else:
            kept[key] = value
    return kept


def _sensitivities(rowerr: dict, fisher: dict, scheme) -> dict[str, dict[str, float]]:
    from .sensitivity import weighted_loss

    out = {m: {label: weighted_loss(fisher[m], e) for label, e in per.items()} for m, per in rowerr.items()}
    if BF16 in scheme.candidates:
        for per in out.values():
            per[BF16] = 0.0
    return out
