"""vLLM's environment as an AVX2-only CPU runs it, on any x86 CPU.

vLLM's CPU build picks its extension from torch's CPU capability probe (vllm/platforms/cpu.py `import_kernels`:
AVX-512 → `_C` / `_C_AVX512`, else `_C_AVX2`). `avx2_python` writes a wrapper interpreter whose `sitecustomize`
makes that probe answer "no AVX-512", so vLLM loads and runs its real `_C_AVX2` extension — what an AMD EPYC with
AVX2 only gets — on this machine too (AVX2 code runs on AVX-512 CPUs). Nothing else is changed.
"""

from __future__ import annotations

import stat
from pathlib import Path

SITECUSTOMIZE = """\
import torch.cpu

torch.cpu._is_avx512_supported = lambda: False
torch.cpu._is_avx512_bf16_supported = lambda: False
"""


def avx2_python(real_python: Path, folder: Path) -> Path:
    """A shell wrapper around `real_python` (the vLLM environment's) that runs it with the AVX2-only probe."""
    shim = folder / "avx2-shim"
    shim.mkdir(parents=True, exist_ok=True)
    (shim / "sitecustomize.py").write_text(SITECUSTOMIZE)
    wrapper = folder / "python-avx2"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH="{shim}${{PYTHONPATH:+:$PYTHONPATH}}" exec "{real_python}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    return wrapper
