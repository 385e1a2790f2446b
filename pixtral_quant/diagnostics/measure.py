"""Measured memory: peak host RSS of a job run in a fresh child process (VmHWM: the most resident pages the
process ever held at once, file-backed mmap pages included) and the peak GPU memory torch allocated when CUDA
is there.

    from pixtral_quant.diagnostics.measure import measure
    measure({"kind": "convert", "model": "/data/synth-16", "recipe": recipe.to_dict(), "out": "/tmp/o"})

The child prints one JSON line: baseline_rss (after the imports, before the job), peak_rss, seconds, result.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable

MARK = "PIXTRAL_QUANT_MEASURE "


def peak_rss() -> int:
    """This process's peak resident set size in bytes: VmHWM of /proc/self/status (the high-water mark of this
    process's own memory). ru_maxrss is the fallback only: Linux carries it over from the parent across
    fork/vfork + exec, so a child of a large process would report the parent's peak."""
    try:
        with open("/proc/self/status") as f:
            line = next(ln for ln in f if ln.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def gpu_peak() -> int | None:
    """torch.cuda.max_memory_allocated(), or None without CUDA."""
    import torch

    return int(torch.cuda.max_memory_allocated()) if torch.cuda.is_available() else None


def _convert(job: dict) -> dict:
    from ..config import recipe_from_dict
    from ..convert import convert

    result = convert(job["model"], recipe_from_dict(job["recipe"]), job["out"], overwrite=True)
    tokens = sum(result.stats.tokens) if result.stats is not None else None
    return {"bytes_after": result.bytes_after, "seconds": result.seconds, "spilled": result.spilled,
            "calibration_tokens": tokens}


def _synth(job: dict) -> dict:
    from ..synth import synthesize

    result = synthesize(job["config"], job["out"], layers=job.get("layers"),
                        max_shard_bytes=job.get("max_shard_bytes"))
    return {"tensor_bytes": result.tensor_bytes, "files": len(result.files)}


def _sleep(job: dict) -> dict:
    """A job that allocates `bytes` and holds them briefly (the measurement's own test)."""
    import torch

    block = torch.ones(job["bytes"] // 4, dtype=torch.float32)
    time.sleep(0.05)
    return {"sum": float(block[:10].sum())}


def import_pipeline() -> None:
    """What every conversion imports before its first tensor: the pipeline and transformers' Pixtral modeling
    code (about 0.27 GiB of the baseline)."""
    import importlib

    for name in ("pixtral_quant.convert", "pixtral_quant.synth", "transformers.models.llava.modeling_llava",
                 "transformers.models.mistral.modeling_mistral", "transformers.models.pixtral.modeling_pixtral"):
        importlib.import_module(name)


JOBS: dict[str, tuple[Callable[[], None], Callable[[dict], dict]]] = {
    "convert": (import_pipeline, _convert),
    "synth": (import_pipeline, _synth),
    "alloc": (lambda: __import__("torch"), _sleep),
}


def run_job(job: dict) -> dict:
    """In the child: import what the job needs, note the baseline, run it, report peaks."""
    prepare, work = JOBS[job["kind"]]
    prepare()
    baseline = peak_rss()
    start = time.perf_counter()
    result = work(job)
    return {"baseline_rss": baseline, "peak_rss": peak_rss(), "gpu_peak": gpu_peak(),
            "seconds": time.perf_counter() - start, "result": result}


def measure(job: dict, timeout: float | None = None, threads: int | None = None) -> dict:
    """Run `job` (a dict with 'kind' in JOBS) in a fresh Python process; its report. RuntimeError with the
    child's stderr tail when it fails."""
    env = dict(os.environ)
    if threads is not None:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    proc = subprocess.run([sys.executable, "-m", "pixtral_quant.diagnostics.measure", json.dumps(job)],
                          capture_output=True, text=True, timeout=timeout, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"measured job {job['kind']} failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(lines[-1][len(MARK):])


if __name__ == "__main__":
    print(MARK + json.dumps(run_job(json.loads(sys.argv[1]))), flush=True)
