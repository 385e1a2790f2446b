"""Thread-count-invariant float math on the CPU: MKL's strict conditional numerical reproducibility (CNR).

Why: torch's CPU matmuls are MKL's sgemm, and MKL picks its kernel by shape *and* thread count. Measured on an
AMD EPYC (2026-12-07, torch 2.14.1, MKL 2024.2): a Linear whose input has 5, 6 or 7 rows — the vision tower on a
small image, 6 patches — gives other float32 bits with 1 thread than with 2 (tests/test_reproducible.py), so a
GPTQ checkpoint calibrated through the vision tower differed between a 1- and a 2-thread process. MKL's strict
CNR mode (`MKL_CBWR=AUTO,STRICT`: the fastest code path of this CPU, results that do not depend on the thread
count for ?gemm, ?trsm and ?symm — oneMKL developer guide, "Reproducibility conditions") makes them equal.
LAPACK (Cholesky, its inverse) is outside that guarantee and varies with the thread count even so: GPTQ's solve
keeps to one thread (schemes/gptq.py: one_thread_on_cpu).

MKL reads MKL_CBWR once, at its first call, so it is set here, when pixtral_quant is first imported (before any
of our torch math). A value the user set is kept. A process that ran MKL math before importing pixtral_quant
keeps MKL's default mode: `gemm_is_thread_invariant()` tells, and calibrated conversions say so in their log.
"""

from __future__ import annotations

import os

ENV = "MKL_CBWR"
MODE = "AUTO,STRICT"

os.environ.setdefault(ENV, MODE)


def gemm_is_thread_invariant() -> bool:
    """Whether a float32 Linear with 6 input rows (the shape MKL's default mode computes differently with 1 and
    2 threads) gives the same bits with one thread as with all of torch's threads. True on one-thread hosts."""
    import torch

    threads = torch.get_num_threads()
    if threads == 1:
        return True
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(6, 128, generator=g), torch.randn(128, 128, generator=g)
    many = torch.nn.functional.linear(x, w)
    torch.set_num_threads(1)
    try:
        one = torch.nn.functional.linear(x, w)
    finally:
        torch.set_num_threads(threads)
    return torch.equal(one, many)
