"""The gptq-mixed calibration: convert's sequential pipeline through the full multimodal model with MixedSolver
(every candidate of every planned Linear into the layer journal, their per-row errors kept in memory), the Fisher
probe's backward pass, and the sensitivities from both (sensitivity.weighted_loss)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import BF16
from ..export.journal import HEAD_UNIT, layer_unit


def calibrate(ckpt, recipe, plan, handler, cset, tmp: Path, journal, reporter, result):
    """convert's sequential pipeline with MixedSolver (every candidate of every planned Linear into the journal),
    then the Fisher probe's backward pass. Returns ({module: {setting: sensitivity}}, {module: {setting: GPTQ
    loss}}); bf16 (when a candidate) has sensitivity 0."""
    from .. import capture
    from ..convert import GIB, calib_budget, compute_setup, first_layer_inputs
    from .fisher import FisherProbe

    device, dtype = compute_setup()
    scheme, calib = recipe.scheme, recipe.calibration
    scratch = capture.scratch_dir(tmp)
    store = capture.ActivationStore(int(calib_budget(recipe) * GIB), scratch / "layers")
    probe = FisherProbe(scheme.fisher_samples, int(FISHER_BUDGET_GIB * GIB), scratch / "fisher", seed=calib.seed)
    rowerr: dict[str, dict[str, torch.Tensor]] = {}
    gptq: dict[str, dict[str, float]] = {}
    try:
        kwargs, result.stats, text_config = first_layer_inputs(ckpt, cset, calib, store, device, dtype, reporter)
        n_layers = text_config.num_hidden_layers
        targets = {}
        for i in range(n_layers):
            probe.keep(i, store)
            targets[i] = _one_layer(ckpt, text_config, i, plan, handler, store, kwargs, device, dtype, journal,
                                    rowerr, gptq, reporter)
        head = capture.HEAD in plan.names()
        if head:
            tensors, gptq[capture.HEAD] = capture.calibrate_head(ckpt, handler.solver, store, device, dtype,
                                                                 reporter.task("lm_head", len(store)))
            reporter.done()
            kept = _split_rowerr(capture.HEAD, tensors, rowerr)
            journal.save(HEAD_UNIT, {f"{capture.HEAD}.{k}": v for k, v in sorted(kept.items())}, {}, {},
                         [capture.HEAD])
        fisher = probe.measure(ckpt, text_config, kwargs, store, targets, head, device, dtype,
                               reporter.task("Fisher (backward, top down)", n_layers))
        reporter.done()
    finally:
        capture.remove_scratch(scratch)
    return _sensitivities(rowerr, fisher, recipe.scheme), gptq


FISHER_BUDGET_GIB = 1.0  # the Fisher probe's kept layer inputs stay in memory up to this, then go to disk


def _one_layer(ckpt, text_config, i, plan, handler, store, kwargs, device, dtype, journal, rowerr, gptq, reporter):
    """Decoder layer i: every candidate of its planned Linears into the journal; returns their names (relative)."""
    from .. import capture
    from ..convert import release_freed_memory

    prefix = f"{capture.LAYERS}{i}."
    layer, raw = capture.load_layer(ckpt, text_config, i, device, dtype)
    names = sorted(n[len(prefix):] for n in plan.names() if n.startswith(prefix))
    passes = len(capture.groups_for(handler.config.true_sequential)) + 1
    advance = reporter.task(f"layer {i + 1}/{text_config.num_hidden_layers}", passes * len(store))
    solved = capture.calibrate_layer(layer, names, handler.solver, store, kwargs, device,
                                     handler.config.true_sequential, advance)
    reporter.done()
    tensors = {}
    for name, (candidates, losses, _) in sorted(solved.items()):
        raw.pop(f"{name}.weight")
        raw.pop(f"{name}.bias", None)
        gptq[prefix + name] = losses
        kept = _split_rowerr(prefix + name, candidates, rowerr)
        tensors.update((f"{prefix}{name}.{k}", v) for k, v in sorted(kept.items()))
    tensors.update((prefix + k, v) for k, v in sorted(raw.items()))
    journal.save(layer_unit(i), tensors, {}, {}, sorted(prefix + n for n in solved))
    del layer, tensors
    release_freed_memory()
    return names


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
