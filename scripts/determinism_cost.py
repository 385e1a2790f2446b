#!/usr/bin/env python
"""What thread-count-invariant conversion costs (issue 20, item 2), side by side in one run on this machine:

1. `convert --scheme gptq-int4` of the bundled tiny model (16 calibration samples, as tests/test_determinism.py)
   in fresh processes with 1 and 2 threads, under MKL's strict reproducible mode (MKL_CBWR=AUTO,STRICT, what
   pixtral_quant/reproducible.py sets) and under MKL's default mode (MKL_CBWR unset: the bytes then depend on the
   thread count on some CPUs). The runs alternate, `--repeats` times each; the median is reported.
2. The GPTQ Hessian at Pixtral-12B width (GPTQModel's GPTQ.add_batch on 8 samples of 977 tokens, the shapes of
   reports/full-size-cpu.md: in = 5120 for q/k/v, gate/up; 14336 for down_proj), 1 vs 2 threads, in one process
   per mode: the step that ran on one thread before the strict mode made it thread-invariant.

    python scripts/determinism_cost.py                # about 10 minutes on 2 cores
    python scripts/determinism_cost.py --repeats 1 --skip-hessian
Writes reports/determinism-cost.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pixtral_quant.diagnostics.machine import cpu_name

ROOT = Path(__file__).resolve().parents[1]
MODES = {"strict (ours)": "AUTO,STRICT", "MKL default": ""}

HESSIAN = r"""
import os, sys, time, torch
import pixtral_quant  # sets MKL_CBWR unless the environment has it
from pixtral_quant.config import GptqInt4
from pixtral_quant.schemes.gptq import GptqSolver
torch.manual_seed(0)
out = {}
for width in (5120, 14336):
    xs = [torch.randn(1, 977, width) for _ in range(8)]
    for threads in (1, 2):
        torch.set_num_threads(threads)
        solver = GptqSolver(torch.nn.Linear(width, 256, bias=False), GptqInt4())
        start = time.perf_counter()
        for x in xs:
            solver.add_batch(x)
        out[f"{width}/{threads}"] = time.perf_counter() - start
print(out)
"""


def convert_seconds(threads: int, cbwr: str, work: Path) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "MKL_CBWR": cbwr}
    out = work / f"t{threads}-{cbwr or 'default'}-{time.monotonic_ns()}"
    argv = [sys.executable, "-c", "import sys; from pixtral_quant.cli import main; sys.exit(main())", "convert",
            "--scheme", "gptq-int4", "--calibration", "tiny", "--num-samples", "16", "--out", str(out)]
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - start


def hessian_seconds(cbwr: str) -> dict[str, float]:
    env = {**os.environ, "MKL_CBWR": cbwr}
    done = subprocess.run([sys.executable, "-c", HESSIAN], env=env, check=True, capture_output=True, text=True,
                          cwd=ROOT)
    return eval(done.stdout.strip().splitlines()[-1])  # noqa: S307 - our own script's dict of floats


def render(report: dict) -> str:
    lines = ["# What thread-count-invariant conversion costs\n", f"Machine: {report['cpu']}, {report['cores']} cores "
             f"(`scripts/determinism_cost.py`, {report['date']}; median of {report['repeats']} alternating runs; "
             f"other jobs may have shared the machine: {report['note']}).\n",
             "## convert --scheme gptq-int4, tiny model, 16 samples (wall seconds, fresh process)\n",
             "| MKL mode | 1 thread | 2 threads | 2 vs 1 |", "| --- | ---: | ---: | ---: |"]
    for mode, row in report["convert"].items():
        lines.append(f"| {mode} | {row['1']:.1f} | {row['2']:.1f} | {row['2'] / row['1']:.2f} |")
    if report.get("hessian"):
        lines += ["", "## GPTQ Hessian at 12B width: 8 samples x 977 tokens (seconds per Linear)\n",
                  "| MKL mode | in | 1 thread | 2 threads | 2 vs 1 |", "| --- | ---: | ---: | ---: | ---: |"]
        for mode, row in report["hessian"].items():
            for width in (5120, 14336):
                one, two = row[f"{width}/1"], row[f"{width}/2"]
                lines.append(f"| {mode} | {width} | {one:.2f} | {two:.2f} | {two / one:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-hessian", action="store_true")
    ap.add_argument("--note", default="quiet machine")
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "determinism-cost")
    args = ap.parse_args(argv)
    runs: dict[str, dict[str, list[float]]] = {m: {"1": [], "2": []} for m in MODES}
    with tempfile.TemporaryDirectory() as work:
        for _ in range(args.repeats):
            for mode, cbwr in MODES.items():
                for threads in (1, 2):
                    runs[mode][str(threads)].append(convert_seconds(threads, cbwr, Path(work)))
                    print(mode, threads, runs[mode][str(threads)][-1], flush=True)
    report = {"cpu": cpu_name(), "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d"), "repeats": args.repeats,
              "note": args.note, "runs": runs,
              "convert": {m: {t: statistics.median(v) for t, v in r.items()} for m, r in runs.items()}}
    if not args.skip_hessian:
        report["hessian"] = {mode: hessian_seconds(cbwr) for mode, cbwr in MODES.items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(render(report))
    print(render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
