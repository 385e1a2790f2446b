"""MKL's strict reproducible mode, set when pixtral_quant is imported (pixtral_quant/reproducible.py; the
end-to-end check is tests/test_determinism.py)."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = ("import os, torch, pixtral_quant.reproducible as r; torch.set_num_threads(2); "
         "print(os.environ['MKL_CBWR'], r.gemm_is_thread_invariant())")


def _probe(**env: str) -> list[str]:
    base = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"}
    return subprocess.run([sys.executable, "-c", PROBE], env={**base, **env}, capture_output=True, text=True,
                          check=True).stdout.split()


def test_importing_pixtral_quant_sets_the_strict_mode_and_a_small_gemm_is_thread_invariant():
    assert _probe() == ["AUTO,STRICT", "True"]


def test_a_mode_the_user_chose_is_kept():
    assert _probe(MKL_CBWR="COMPATIBLE,STRICT") == ["COMPATIBLE,STRICT", "True"]


def test_the_probe_sees_math_that_ran_before_the_mode_could_be_set():
    """A process whose MKL started before pixtral_quant was imported keeps MKL's default mode; whether its small
    GEMM then differs between thread counts depends on the CPU, so the probe must agree with a direct check."""
    code = ("import torch; torch.nn.functional.linear(torch.randn(6, 128), torch.randn(128, 128)); "
            "import pixtral_quant.reproducible as r; torch.set_num_threads(2); g = torch.Generator().manual_seed(0); "
            "x, w = torch.randn(6, 128, generator=g), torch.randn(128, 128, generator=g); "
            "a = torch.nn.functional.linear(x, w); torch.set_num_threads(1); "
            "b = torch.nn.functional.linear(x, w); torch.set_num_threads(2); "
            "print(torch.equal(a, b) == r.gemm_is_thread_invariant())")
    base = {k: v for k, v in os.environ.items() if k != "MKL_CBWR"}
    out = subprocess.run([sys.executable, "-c", code], env=base, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True"]
