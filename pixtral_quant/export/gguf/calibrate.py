"""llama.cpp's importance matrix, gathered through the full multimodal model (images in) instead of llama-imatrix's
text-only run.

The sequential loop every calibration shares does the work (pipeline/sequential.py): every calibration
conversation through embeddings → vision tower → projector (`capture.capture_inputs`), then the decoder one layer
at a time (`capture.load_layer`, `capture.run_layer`), then the lm_head's input (`capture.head_inputs`). Nothing
is quantized, so — as in llama-imatrix, which leaves the model untouched — these are the original model's
activations, and one pass per layer both accumulates the statistics (forward hooks on its Linears) and produces
the next layer's inputs.

What the Imatrix records, compared with llama-imatrix's file:
- counts: every token position of every sample (image tokens included); llama-imatrix counts every position of
  every chunk too.
- chunk_count: the number of samples (each conversation is one chunk, not split or packed to a fixed length).
- chunk_size: the longest sample's token count. llama-imatrix's chunks all have n_ctx tokens; ours vary, so this is
  an upper bound, informational only (llama.cpp's quantizer divides by each weight's own count).
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import torch

from ... import capture
from ...pipeline.sequential import Algorithm, run_sequential
from .imatrix import Imatrix, ImatrixEntry, accumulate
from .names import gguf_name, name_maps

# The Linears of a decoder layer (names relative to the layer), in capture's true-sequential order.
LINEARS = tuple(n for group in capture.SUBLAYER_GROUPS for n in group)


class Accumulator:
    """One weight's running statistics."""

    def __init__(self):
        self.entry: ImatrixEntry | None = None

    def add_batch(self, x: torch.Tensor) -> None:
        """x: [..., in] (the Linear's input, any float dtype, any device)."""
        self.entry = accumulate(self.entry, x)

    def result(self) -> ImatrixEntry:
        """The entry with in_sum2 on the CPU (float64 [in]); an error if no input ever reached the weight."""
        if self.entry is None:
            raise RuntimeError("no calibration input reached this weight")
        return ImatrixEntry(self.entry.in_sum2.cpu(), self.entry.count)


def gguf_key(runtime_name: str, maps: dict) -> str:
    """Runtime weight name → its GGUF tensor name in the text file (e.g. `blk.0.attn_q.weight`)."""
    mapped = gguf_name(runtime_name, maps)
    if mapped is None or mapped[0] != "text":
        raise KeyError(f"{runtime_name} has no GGUF text-model name")
    return mapped[1]


def collect_imatrix(ckpt, samples: Collection[list[dict]], tokenizer, *, dataset: str, device, dtype: torch.dtype,
                    text_only: bool, reporter, budget_bytes: int,
                    scratch_parent: Path | None = None) -> tuple[Imatrix, capture.CaptureStats]:
    """The importance matrix of every decoder Linear and the lm_head (`output.weight`) of `ckpt`.

    samples: conversations (a CalibrationSet or a list of messages lists); text_only strips their images first.
    tokenizer: a MistralTokenizer in finetuning mode (calibration.dataset.open_tokenizer). dataset: the name
    recorded in `imatrix.datasets`. device/dtype: where and in what the model runs (pipeline.runtime.compute_setup).
    reporter: pipeline.runtime.Reporter (one bar for the vision pass, one per layer, one for the lm_head).
    budget_bytes: activations kept in memory before spilling into a scratch folder under scratch_parent.
    Returns the Imatrix (in_sum2 float64 [in] on the CPU) and capture's per-sample statistics."""
    if len(samples) == 0:
        raise ValueError("an importance matrix needs at least one calibration sample")
    stats = ImatrixLayers(name_maps(ckpt.config))
    run = run_sequential(ckpt, samples, tokenizer, stats, text_only=text_only, budget_bytes=budget_bytes,
                         scratch_parent=scratch_parent, device=device, dtype=dtype, reporter=reporter)
    return Imatrix(stats.entries, (dataset,), len(run.stats.tokens), max(run.stats.tokens)), run.stats


class ImatrixLayers(Algorithm):
    """The importance matrix as the per-layer work of the sequential loop: each decoder layer, unmodified, runs
    every sample once with hooks on its Linears (its outputs replace the store's inputs); then the lm_head's
    input statistics. entries: GGUF name → ImatrixEntry, layer by layer, the lm_head last. maps: names.name_maps."""

    label = "imatrix: "
    thread_warning = False  # the imatrix run has never printed the MKL warning (kept as it was)

    def __init__(self, maps: dict):
        self.maps = maps
        self.entries: dict[str, ImatrixEntry] = {}

    def layer(self, i: int, layer, raw, run) -> None:
        accs = {n: Accumulator() for n in LINEARS}
        hooks = [layer.get_submodule(n).register_forward_hook(lambda m, args, out, a=acc: a.add_batch(args[0]))
                 for n, acc in accs.items()]
        n_layers = run.ckpt.config.text_config.num_hidden_layers
        try:
            capture.run_layer(layer, run.store, run.kwargs, run.device, update=True,
                              advance=run.reporter.task(f"imatrix: layer {i + 1}/{n_layers}", len(run.store)))
        finally:
            for h in hooks:
                h.remove()
        run.reporter.done()
        self.entries.update((gguf_key(f"{capture.LAYERS}{i}.{n}.weight", self.maps), acc.result())
                            for n, acc in accs.items())

    def finish(self, run) -> None:
        """The lm_head's input statistics: the final RMSNorm of the last layer's outputs (capture.head_inputs)."""
        acc = Accumulator()
        advance = run.reporter.task("imatrix: lm_head", len(run.store))
        for x in capture.head_inputs(run.ckpt, run.store, run.device, run.dtype):
            acc.add_batch(x)
            advance()
        run.reporter.done()
        self.entries[gguf_key(f"{capture.HEAD}.weight", self.maps)] = acc.result()
