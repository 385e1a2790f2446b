"""Kernel-level decode timing: every decoder Linear of a model at batch 1 (one token), replayed as one CUDA graph,
against bf16 nn.Linear twins of the same shapes. Isolates the matmul kernels a checkpoint runs on (GPTQ
Marlin/Triton/torch, bitsandbytes) from attention, sampling and Python overhead.

    from pixtral_quant.kernel_bench import decode_linears_timing
    decode_linears_timing(model, torch.device("cuda"))   # {'quantized_ms': ..., 'bf16_ms': ..., 'speedup': ...}
"""

from __future__ import annotations

import time

import torch

LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
           "mlp.up_proj", "mlp.down_proj")


def decoder_linears(model) -> list[torch.nn.Module]:
    """The decoder's Linear modules (quantized or not), layer by layer, in execution order."""
    return [layer.get_submodule(n) for layer in model.model.language_model.layers for n in LINEARS]


def dense_twins(modules, device, dtype=torch.bfloat16) -> list[torch.nn.Linear]:
    """nn.Linear of each module's shape (random weights), on `device`."""
    return [torch.nn.Linear(m.in_features, m.out_features, bias=False, device=device, dtype=dtype) for m in modules]


def _step(modules, inputs: dict[int, torch.Tensor]) -> None:
    for m in modules:
        m(inputs[m.in_features])


@torch.no_grad()
def time_pass(modules, device, dtype=torch.bfloat16, iters: int = 20, graphs: bool = True) -> tuple[float, bool]:
    """(seconds per pass over `modules` at batch 1, whether a CUDA graph was used). Falls back to eager launches
    when the kernels cannot be captured."""
    inputs = {n: torch.randn(1, n, device=device, dtype=dtype) for n in {m.in_features for m in modules}}
    for _ in range(3):
        _step(modules, inputs)
    run, used = (lambda: _step(modules, inputs)), False
    if graphs and device.type == "cuda":
        try:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                _step(modules, inputs)
            run, used = graph.replay, True
        except RuntimeError:
            torch.cuda.synchronize()
    return _timed(run, device, iters), used


def _timed(run, device, iters: int) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        run()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / iters


def decode_linears_timing(model, device, iters: int = 20) -> dict:
    """Quantized decoder Linears vs bf16 twins, per decode token (ms), and the kernel class."""
    quantized = decoder_linears(model)
    q_s, q_graph = time_pass(quantized, device, iters=iters)
    twins = dense_twins(quantized, device)
    d_s, d_graph = time_pass(twins, device, iters=iters)
    del twins
    return {"kernel": type(quantized[0]).__name__, "linears": len(quantized), "quantized_ms": 1e3 * q_s,
            "bf16_ms": 1e3 * d_s, "speedup": d_s / q_s, "cuda_graphs": q_graph and d_graph}
