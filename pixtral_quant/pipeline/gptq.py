"""GPTQ (gptq-int4 / gptq-int8) as the per-layer work of the sequential loop (pipeline/sequential.py): each
planned Linear of a decoder layer solved group by group (capture.calibrate_layer), each finished layer — and
then the lm_head, in row blocks — saved to the resume journal (export/journal.py) the moment it is done. Layers
an interrupted run finished are replayed from the journal (their saved weights, no solve) to rebuild the
activations."""

from __future__ import annotations

from .. import capture
from ..export.journal import HEAD_UNIT, Journal, layer_unit
from ..memory.units import GIB
from .runtime import ConvertResult, Reporter, calib_budget, compute_setup
from .sequential import Algorithm, Run, run_sequential, solve_head


class GptqLayers(Algorithm):
    """The GPTQ solves of one conversion of an `n_layers` model into `journal`. handler: schemes/gptq.GptqHandler
    (its solver, restore_weight and config.true_sequential); plan: plan.Plan (which Linears)."""

    def __init__(self, n_layers: int, plan, handler, journal: Journal):
        self.plan, self.handler, self.journal = plan, handler, journal
        self.true_sequential = handler.config.true_sequential
        self.units = [layer_unit(i) for i in range(n_layers)] + ([HEAD_UNIT] if capture.HEAD in plan.names() else [])

    def done_from(self, i: int) -> bool:
        return all(self.journal.has(u) for u in self.units[i:])

    def layer(self, i: int, layer, raw, run: Run) -> None:
        if self.journal.has(layer_unit(i)):
            self._replay(i, layer, run)
        else:
            self._solve(i, layer, raw, run)

    def _solve(self, i: int, layer, raw, run: Run) -> None:
        """Calibrate decoder layer i; its tensors (quantized Linears + the rest as stored) go to the journal."""
        prefix = f"{capture.LAYERS}{i}."
        targets = sorted(n[len(prefix):] for n in self.plan.names() if n.startswith(prefix))
        passes = len(capture.groups_for(self.true_sequential)) + 1
        advance = run.reporter.task(f"layer {i + 1}/{run.ckpt.config.text_config.num_hidden_layers}",
                                    passes * len(run.store))
        solved = capture.calibrate_layer(layer, targets, self.handler.solver, run.store, run.kwargs, run.device,
                                         self.true_sequential, advance)
        run.reporter.done()
        tensors, restore, losses = {}, {}, {}
        for name, (quantized, loss, kept) in sorted(solved.items()):
            raw.pop(f"{name}.weight")
            raw.pop(f"{name}.bias", None)
            losses[prefix + name] = loss
            tensors.update((f"{prefix}{name}.{k}", v) for k, v in sorted(quantized.items()))
            restore.update((f"{name}.{k}", v) for k, v in sorted(kept.items()))
        tensors.update((prefix + k, v) for k, v in sorted(raw.items()))
        self.journal.save(layer_unit(i), tensors, restore, losses, sorted(prefix + n for n in solved))

    def _replay(self, i: int, layer, run: Run) -> None:
        """Layer i as an interrupted run left it in the journal: its solved weights restored exactly, the samples
        run through it (capture.replay_layer)."""
        prefix = f"{capture.LAYERS}{i}."
        stored, restore = self.journal.read(layer_unit(i))
        tensors = dict(stored)
        weights = {}
        for module in sorted({k.rsplit(".", 1)[0] for k in restore}):
            stored = {k[len(prefix + module) + 1:]: v for k, v in tensors.items()
                      if k.startswith(f"{prefix}{module}.")}
            kept = {k[len(module) + 1:]: v for k, v in restore.items() if k.startswith(f"{module}.")}
            weights[module] = self.handler.restore_weight(stored, kept)
        advance = run.reporter.task(
            f"layer {i + 1}/{run.ckpt.config.text_config.num_hidden_layers} (resumed: replayed)", len(run.store))
        capture.replay_layer(layer, weights, run.store, run.kwargs, run.device, advance)
        run.reporter.done()

    def finish(self, run: Run) -> None:
        """The lm_head, when planned and not in the journal yet."""
        if self.units[-1] == HEAD_UNIT and not self.journal.has(HEAD_UNIT):
            tensors, loss = solve_head(run, self.handler.solver)
            self.journal.save(HEAD_UNIT, {f"{capture.HEAD}.{k}": v for k, v in sorted(tensors.items())}, {},
                              {capture.HEAD: loss}, [capture.HEAD])


def calibrated_layers(ckpt, plan, handler, cset, recipe, tmp, journal: Journal, reporter: Reporter,
                      result: ConvertResult) -> None:
    """GptqLayers over the sequential loop, the activations spilled under `tmp`; sets result.stats and
    result.spilled."""
    from ..calibration.dataset import open_tokenizer

    device, dtype = compute_setup()
    calib = recipe.calibration
    layers = GptqLayers(ckpt.config.text_config.num_hidden_layers, plan, handler, journal)
    run = run_sequential(ckpt, cset, open_tokenizer(ckpt.tokenizer), layers,
                         text_only=calib.text_only, budget_bytes=int(calib_budget(recipe) * GIB),
                         scratch_parent=tmp, device=device, dtype=dtype, reporter=reporter)
    result.stats, result.spilled = run.stats, run.store.spilled
