"""The steps of the sequential calibration through the full multimodal model; the loop that runs them is
pipeline/sequential.py. Knows nothing about algorithms: it hands each target Linear's inputs to a solver
(schemes/*) and writes the solver's result back.

1. The shell (embeddings, vision tower, projector, rotary tables; decoder layers left on the meta device) runs
   every calibration sample once: images → vision tower → projector → merged into the token embeddings.
   A pre-hook on decoder layer 0 takes its inputs (hidden states [1, T, H] + the keyword arguments the
   model passes every layer) and stops the forward there.
2. Decoder layers are then processed one at a time (read from the checkpoint, moved to the compute device,
   dropped afterwards): for each group of Linears (q/k/v, o, gate/up, down when true_sequential) every
   sample runs through the layer with hooks feeding the group's solvers; their dequantized weights replace
   the originals before the next group; a last pass gives the layer's outputs, which become the next layer's
   inputs (sequential GPTQ: each layer is calibrated on the outputs of the already-quantized ones).
Activations wait on the CPU, or in files under `spill_dir` once `budget_bytes` is passed.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .loading.arch import meta_model
from .loading.checkpoint import Checkpoint, read_tensors
from .loading.names import LAYERS  # the decoder-layer prefix (capture.LAYERS to this module's users)
# Linears of a decoder layer in the order their inputs become final (true-sequential groups).
SUBLAYER_GROUPS = (("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), ("self_attn.o_proj",),
                   ("mlp.gate_proj", "mlp.up_proj"), ("mlp.down_proj",))


class _Stop(Exception):
    """Raised by the layer-0 pre-hook once it has the layer's inputs."""


@dataclass
class CaptureStats:
    """Per calibration sample: tokens, images in the sample, images the vision tower actually encoded."""

    tokens: list[int] = field(default_factory=list)
    images: list[int] = field(default_factory=list)
    vision_images: list[int] = field(default_factory=list)


class ActivationStore:
    """Per-sample tensors kept on the CPU until `budget_bytes`, then saved under `spill_dir`."""

    def __init__(self, budget_bytes: int, spill_dir: Path):
        self.budget, self.dir = budget_bytes, spill_dir
        self.items: list[torch.Tensor | Path] = []
        self.used = 0

    def append(self, t: torch.Tensor) -> None:
        self.items.append(self._keep(len(self.items), t))

    def set(self, i: int, t: torch.Tensor) -> None:
        old = self.items[i]
        if isinstance(old, torch.Tensor):
            self.used -= old.numel() * old.element_size()
        self.items[i] = self._keep(i, t)

    def _keep(self, i: int, t: torch.Tensor):
        t = t.detach().cpu()
        size = t.numel() * t.element_size()
        if self.used + size <= self.budget:
            self.used += size
            return t
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f"{i}.pt"
        torch.save(t, path)
        return path

    def __getitem__(self, i: int) -> torch.Tensor:
        item = self.items[i]
        return torch.load(item) if isinstance(item, Path) else item

    def __len__(self) -> int:
        return len(self.items)

    @property
    def spilled(self) -> int:
        return sum(isinstance(x, Path) for x in self.items)


def load_shell(ckpt: Checkpoint, device, dtype: torch.dtype):
    """LlavaForConditionalGeneration with everything but the decoder layers loaded (cast to `dtype`)."""
    from .loading.checkpoint import _assign, _materialize_buffers

    model = meta_model(ckpt.config)
    names = [n for n in ckpt.tensors if not n.startswith(LAYERS) and not n.startswith("lm_head")]
    for name, tensor in read_tensors(ckpt, names).items():
        _assign(model, name, tensor.to(device=device, dtype=dtype))
    _materialize_buffers(model.model.language_model, device)
    _materialize_buffers(model.model.vision_tower, device)
    return model.eval()


def load_layer(ckpt: Checkpoint, text_config, i: int, device, dtype) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """Decoder layer i on `device` in `dtype`, and its tensors as stored (runtime names relative to the layer).
    text_config: the shell's (it carries the attention implementation transformers picked)."""
    from transformers.models.mistral.modeling_mistral import MistralDecoderLayer

    prefix = f"{LAYERS}{i}."
    raw = {n[len(prefix):]: t for n, t in read_tensors(ckpt, [n for n in ckpt.tensors if n.startswith(prefix)]).items()}
    with torch.device("meta"):
        layer = MistralDecoderLayer(text_config, layer_idx=i)
    layer.load_state_dict({k: v.to(device=device, dtype=dtype) for k, v in raw.items()}, assign=True)
    return layer.eval(), raw


def strip_images(messages: list[dict]) -> list[dict]:
    """The same conversation without its image chunks (text-only calibration)."""
    out = []
    for msg in messages:
        content = msg["content"]
        if not isinstance(content, str):
            content = [c for c in content if c.get("type") != "image"]
        out.append({"role": msg["role"], "content": content})
    return out


@torch.no_grad()
def capture_inputs(shell, samples: Iterator[list[dict]], tokenizer, device, store: ActivationStore,
                   advance: Callable[[], None] = lambda: None) -> tuple[list[dict], CaptureStats]:
    """Run each conversation through embeddings + vision tower + projector; store layer 0's hidden states.
    Returns the per-sample keyword arguments for the decoder layers (CPU tensors) and the statistics."""
    from .calibration.encode import collate, encode

    stats, kwargs_list, seen = CaptureStats(), [], []
    layer0 = shell.model.language_model.layers[0]

    def catch(module, args, kwargs):
        store.append(args[0] if args else kwargs.pop("hidden_states"))
        kwargs_list.append({k: _to(v, "cpu") for k, v in kwargs.items() if k != "hidden_states"})
        raise _Stop

    def count(module, args, kwargs, output):
        sizes = kwargs.get("image_sizes", args[1] if len(args) > 1 else None)
        seen.append(len(sizes) if sizes is not None else int(args[0].shape[0]))

    hooks = [layer0.register_forward_pre_hook(catch, with_kwargs=True),
             shell.model.vision_tower.register_forward_hook(count, with_kwargs=True)]
    try:
        for messages in samples:
            enc = encode(tokenizer, messages)
            batch = {k: v.to(device) for k, v in collate([enc]).items()}
            batch.pop("attention_mask")  # one unpadded sample: plain causal attention
            if "pixel_values" in batch:
                batch["pixel_values"] = batch["pixel_values"].to(shell.dtype)
            seen.clear()
            try:
                shell.model(**batch, use_cache=False)
            except _Stop:
                pass
            stats.tokens.append(len(enc.tokens))
            stats.images.append(len(enc.images))
            stats.vision_images.append(sum(seen))
            advance()
    finally:
        for h in hooks:
            h.remove()
    return kwargs_list, stats


def _to(value, device):
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, tuple):
        return tuple(_to(v, device) for v in value)
    return value


@torch.no_grad()
def run_layer(layer, store: ActivationStore, kwargs_list: list[dict], device, update: bool,
              advance: Callable[[], None] = lambda: None) -> None:
    """Every stored sample through `layer`; with update=True its outputs replace the stored inputs."""
    for i in range(len(store)):
        out = layer(store[i].to(device), **{k: _to(v, device) for k, v in kwargs_list[i].items()})
        out = out[0] if isinstance(out, tuple) else out
        if update:
            store.set(i, out)
        advance()


def groups_for(true_sequential: bool) -> tuple[tuple[str, ...], ...]:
    return SUBLAYER_GROUPS if true_sequential else (tuple(n for g in SUBLAYER_GROUPS for n in g),)


@torch.no_grad()
def calibrate_layer(layer, targets: list[str], make_solver, store, kwargs_list, device, true_sequential: bool,
                    advance=lambda: None) -> dict[str, tuple[dict, float]]:
    """Solve every target Linear (names relative to the layer) group by group, writing each dequantized
    weight back into the layer before the next group runs. Returns name → (tensors, loss, restore): restore is
    the solver's `restore` (what gives its dequantized weight back exactly, for a resumed run)."""
    results = {}
    for group in groups_for(true_sequential):
        names = [n for n in group if n in targets]
        if not names:
            continue
        solvers = {n: make_solver(layer.get_submodule(n)) for n in names}
        hooks = [layer.get_submodule(n).register_forward_hook(
            lambda m, args, out, s=solvers[n]: s.add_batch(args[0])) for n in names]
        try:
            run_layer(layer, store, kwargs_list, device, update=False, advance=advance)
        finally:
            for h in hooks:
                h.remove()
        for n, solver in solvers.items():
            tensors, loss, dequantized = solver.finish()
            linear = layer.get_submodule(n)
            linear.weight.data = dequantized.to(device=linear.weight.device, dtype=linear.weight.dtype)
            results[n] = (tensors, loss, solver.restore)
    run_layer(layer, store, kwargs_list, device, update=True, advance=advance)
    return results


@torch.no_grad()
def replay_layer(layer, weights: dict[str, torch.Tensor], store, kwargs_list, device,
                 advance=lambda: None) -> None:
    """A layer calibrated by an earlier, interrupted run: its Linears (names relative to the layer) get the
    dequantized weights that run computed, then every sample goes through it as calibrate_layer's last pass
    did, so the store ends up holding the same next-layer inputs bit for bit, without re-solving."""
    for name, weight in weights.items():
        linear = layer.get_submodule(name)
        linear.weight.data = weight.to(device=linear.weight.device, dtype=linear.weight.dtype)
    run_layer(layer, store, kwargs_list, device, update=True, advance=advance)


HEAD = "lm_head"
FINAL_NORM = "model.language_model.norm.weight"


def final_norm(ckpt: Checkpoint, device, dtype) -> torch.nn.Module:
    """The decoder's final RMSNorm (MistralRMSNorm, its weight from the checkpoint) on `device` in `dtype`: what
    turns the last layer's hidden states into the lm_head's input (head_inputs, mixed/fisher.py)."""
    from transformers.models.mistral.modeling_mistral import MistralRMSNorm

    text = ckpt.config.text_config
    norm = MistralRMSNorm(text.hidden_size, eps=text.rms_norm_eps).to(device=device, dtype=dtype)
    norm.weight.data = read_tensors(ckpt, [FINAL_NORM])[FINAL_NORM].to(device=device, dtype=dtype)
    return norm


@torch.no_grad()
def head_inputs(ckpt: Checkpoint, store: ActivationStore, device, dtype) -> Iterator[torch.Tensor]:
    """Per stored sample, the lm_head's input: the final RMSNorm of the hidden states the store holds after the
    last decoder layer ([1, T, hidden], `dtype` on `device`)."""
    norm = final_norm(ckpt, device, dtype)
    for i in range(len(store)):
        yield norm(store[i].to(device=device, dtype=dtype))


# Output rows of the lm_head GPTQ solves at once when its solver can split the rows (GptqSolver.adopt / join).
# Why: GPTQ treats every row alone given the Hessian, but GPTQModel's solver holds several float32 copies of the
# weight it solves (working copy, result, losses, our dequantized copy ...): on Pixtral-12B's 131072 x 5120
# lm_head that is 2.7 GB each, and a CPU-only 12B-width conversion with an INT4 lm_head was killed by the kernel
# at 22.8 GiB (24 GiB machine; reports/full-size-cpu.md). 16384 rows: 0.34 GB per copy; a multiple of 32, so
# GPTQ v1's qzeros packing along the rows never straddles two blocks.
HEAD_ROW_BLOCK = 16384


def _head_linear(weight: torch.Tensor, device, dtype) -> torch.nn.Linear:
    """A bias-free Linear over `weight` ([rows, hidden]), its weight in `dtype` on `device`."""
    head = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False, device="meta")
    head.weight = torch.nn.Parameter(weight.to(device=device, dtype=dtype), requires_grad=False)
    return head


@torch.no_grad()
def calibrate_head(ckpt: Checkpoint, make_solver, store: ActivationStore, device, dtype,
                   advance=lambda: None, rows: int | None = None) -> tuple[dict, float]:
    """GPTQ on the lm_head, after the last decoder layer, on `head_inputs`. Returns (tensors, loss) like
    calibrate_layer's entries. rows: solve that many output rows at a time, for a solver with adopt / join
    (schemes.gptq.GptqSolver; HEAD_ROW_BLOCK): the Hessian is accumulated once, on the first block, and every
    other block solves with a copy of it: the same GPTQ. None: all rows at once."""
    weight = read_tensors(ckpt, [f"{HEAD}.weight"])[f"{HEAD}.weight"]  # source dtype [vocab, hidden]
    leader = make_solver(_head_linear(weight[:rows], device, dtype))  # rows None: all of them
    for x in head_inputs(ckpt, store, device, dtype):
        leader.add_batch(x)
        advance()
    if rows is None:
        tensors, loss, _ = leader.finish()
        return tensors, loss
    parts = []
    for start in range(rows, weight.shape[0], rows):  # the leader's Hessian is freed by its finish: it goes last
        follower = make_solver(_head_linear(weight[start:start + rows], device, dtype))
        follower.adopt(leader)
        parts.append(follower.finish()[:2])
        del follower
    return leader.join([leader.finish()[:2], *parts])


def scratch_dir(parent: Path | None) -> Path:
    """A temporary folder for spilled activations (inside `parent` when given)."""
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=".activations-", dir=parent))


def remove_scratch(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
