"""How much each output channel of each Linear matters to the model's output distribution: the diagonal of the
Fisher information of the next-token distribution with respect to the Linear's outputs,
F_c = E_tokens E_{y ~ p(·|context)} [(∂ log p(y) / ∂ out_c)²], measured on the first few calibration samples.

Why: quantizing a Linear adds an error δ to its outputs; to second order the KL(ref‖cand) of the next-token
distribution grows by ½ δᵀ F δ, and with the diagonal of F and the per-row output errors GPTQ's Hessian gives,
½ Σ_c F_c · mean_t δ_c² (sensitivity.weighted_loss). The Hessian alone (GPTQ's loss) says how large δ is, not how
much the rest of the model amplifies or ignores it: on the tiny model it ranks Linears against their measured KL
with Spearman −0.09, the Fisher-weighted loss with ≈ +0.7 (tests/test_mixed.py).

The gradients come from one backward pass, streamed layer by layer like the calibration itself: the calibration
keeps the inputs of the first `samples` samples at every decoder layer (spilled to disk past a budget); afterwards
the final norm + lm_head give ∂ log p(y)/∂ hidden for a y drawn from the model's own distribution (the true Fisher,
one Monte-Carlo label per position, seeded), and each layer, reloaded from the top down, turns the gradient at its
output into the gradient at its input while hooks read the gradient at each Linear's output.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..capture import HEAD, LAYERS, ActivationStore, _to, final_norm, load_layer
from ..loading.checkpoint import read_tensors
from ..schemes.gptq import one_thread_on_cpu


def sampled_logit_grad(logits: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """∂(−log p(y))/∂logits = softmax(logits) − onehot(y) with y ~ softmax(logits) per row. logits float [T, V]
    → float32 [T, V] (pure; the draw comes from `generator`)."""
    p = torch.softmax(logits.float(), dim=-1)
    y = torch.multinomial(p, 1, generator=generator)[:, 0]
    return p - torch.nn.functional.one_hot(y, p.shape[-1]).float()


def channel_fisher(grad: torch.Tensor) -> torch.Tensor:
    """Σ over tokens of the squared gradient per output channel: float [..., C] → float32 [C]."""
    return grad.detach().float().reshape(-1, grad.shape[-1]).square().sum(0)


class FisherProbe:
    """Keeps the first `samples` samples' inputs of every decoder layer during calibration (`keep`), then
    measures every target Linear's output-channel Fisher with one streamed backward pass (`measure`)."""

    def __init__(self, samples: int, budget_bytes: int, spill_dir: Path, seed: int = 0):
        self.samples, self.seed = samples, seed
        self.inputs = ActivationStore(budget_bytes, spill_dir)  # layer-major: index = layer · samples + k

    def keep(self, i: int, store: ActivationStore) -> None:
        """Layer i's inputs (store holds them before the layer runs). Call for i = 0, 1, ... in order."""
        assert len(self.inputs) == i * self.count(store)
        for k in range(self.count(store)):
            self.inputs.append(store[k])

    def count(self, store: ActivationStore) -> int:
        return min(self.samples, len(store))

    def measure(self, ckpt, text_config, kwargs_list: list[dict], final: ActivationStore, targets: dict[int, list],
                head: bool, device, dtype, advance=lambda: None) -> dict[str, torch.Tensor]:
        """{runtime module name: float32 [out] mean Fisher per output channel} for the decoder Linears `targets`
        (layer → names relative to it) and, with `head`, the lm_head. `final`: the last layer's outputs."""
        # One CPU thread, as GPTQ's Hessian (schemes/gptq.one_thread_on_cpu): the backward's float sums, and from
        # them the allocation and every byte of the checkpoint, are then the same on any CPU count.
        with one_thread_on_cpu(torch.device(device)):
            return self._measure(ckpt, text_config, kwargs_list, final, targets, head, device, dtype, advance)

    def _measure(self, ckpt, text_config, kwargs_list, final, targets, head, device, dtype, advance):
        k = self.count(final)
        generator = torch.Generator().manual_seed(self.seed)
        sums: dict[str, torch.Tensor] = {}
        norm, weight = _head(ckpt, device, dtype)
        grads, tokens = [], 0
        for j in range(k):
            grad, head_fisher = _head_grad(norm, weight, final[j], generator, device, dtype)
            grads.append(grad)
            tokens += grad.shape[-2]
            if head:
                sums[HEAD] = sums.get(HEAD, 0) + head_fisher
        del norm, weight
        for i in reversed(range(text_config.num_hidden_layers)):
            layer, _ = load_layer(ckpt, text_config, i, device, dtype)
            for j in range(k):
                grads[j] = self._layer_backward(layer, self.inputs[i * k + j], kwargs_list[j], grads[j],
                                                targets.get(i, []), f"{LAYERS}{i}.", sums, device)
            advance()
            del layer
        return {name: s / tokens for name, s in sums.items()}

    @staticmethod
    def _layer_backward(layer, x, kwargs: dict, grad_out, names: list[str], prefix: str, sums: dict, device):
        """The gradient at layer's input for `grad_out` at its output; adds each named Linear's channel Fisher."""
        outputs: dict[str, torch.Tensor] = {}

        def keep(name):
            def hook(module, args, out):
                out.retain_grad()
                outputs[name] = out
            return hook

        hooks = [layer.get_submodule(n).register_forward_hook(keep(n)) for n in names]
        x = x.to(device).detach().requires_grad_(True)
        try:
            with torch.enable_grad():
                out = layer(x, **{key: _to(v, device) for key, v in kwargs.items()})
                out = out[0] if isinstance(out, tuple) else out
                out.backward(grad_out.to(device=device, dtype=out.dtype))
        finally:
            for h in hooks:
                h.remove()
        for n, o in outputs.items():
            sums[prefix + n] = sums.get(prefix + n, 0) + channel_fisher(o.grad)
        return x.grad.float().cpu()


def _head(ckpt, device, dtype):
    """The final RMSNorm (capture.final_norm, as the lm_head's inputs are made) and the lm_head weight [V, H] on
    `device` in `dtype`."""
    weight = read_tensors(ckpt, [f"{HEAD}.weight"])[f"{HEAD}.weight"]
    return final_norm(ckpt, device, dtype), weight.to(device=device, dtype=dtype)


def _head_grad(norm, weight, hidden: torch.Tensor, generator, device, dtype):
    """(∂(−log p(y))/∂hidden [1, T, H] float32 on the CPU, the lm_head's channel Fisher [V]) for one sample's
    final hidden states [1, T, H]."""
    x = hidden.to(device=device, dtype=dtype).requires_grad_(True)
    with torch.enable_grad():
        logits = norm(x) @ weight.T
        g = sampled_logit_grad(logits[0].detach(), generator)
        logits.backward(g.to(logits.dtype)[None])
    return x.grad.float().cpu(), channel_fisher(g)
