"""Same inputs → byte-identical checkpoints, for every scheme, across two processes with different torch thread
counts (issue 11, item 3). The GPTQ schemes run their default true-sequential path on image calibration."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pixtral_quant.schemes.registry import scheme_names

CLI = [sys.executable, "-c", "import sys; from pixtral_quant.cli import main; sys.exit(main())"]
CALIBRATED = ["--calibration", "tiny", "--num-samples", "16"]


def files(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.mark.slow
@pytest.mark.parametrize("scheme", scheme_names())
def test_two_processes_with_1_and_2_threads_write_the_same_bytes(tiny_model_dir, tmp_path, scheme):
    extra = CALIBRATED if scheme.startswith("gptq") else []
    procs = {}
    for threads in (1, 2):  # both at once: two processes, each with its own thread count
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        argv = [*CLI, "convert", "--model", str(tiny_model_dir), "--scheme", scheme, *extra,
                "--out", str(tmp_path / f"t{threads}")]
        procs[threads] = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for threads, proc in procs.items():
        _, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, f"{threads} thread(s): {err[-2000:]}"
    one, two = files(tmp_path / "t1"), files(tmp_path / "t2")
    assert "model.safetensors" in one and "manifest.json" in one
    assert one == two, {k: (one.get(k), two.get(k)) for k in set(one) | set(two) if one.get(k) != two.get(k)}
