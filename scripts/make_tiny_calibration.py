"""Write calibration/tiny/: the bundled tiny Pixtral's calibration set (its own six image tasks), seeded apart
from the held-out eval set (seed 1234) and the trainer's monitor set (1235).

    python scripts/make_tiny_calibration.py
Deterministic: the same seed writes the same bytes. No sample equals a held-out one (checked here and in
tests/test_convert_calibration.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pixtral_quant.fixtures import tasks as T
from pixtral_quant.fixtures.evalset import write_eval_set
from pixtral_quant.fixtures.train import EVAL_PER_TASK, EVAL_SEED, sample_hash

SEED, PER_TASK = 4321, 32
OUT = Path(__file__).resolve().parents[1] / "calibration" / "tiny"


def main() -> None:
    samples = T.make_set(SEED, PER_TASK)
    held_out = {sample_hash(s) for s in T.make_set(EVAL_SEED, EVAL_PER_TASK)}
    samples = [s for s in samples if sample_hash(s) not in held_out]
    if OUT.exists():
        shutil.rmtree(OUT)
    write_eval_set(samples, OUT)
    print(f"wrote {len(samples)} samples to {OUT}")


if __name__ == "__main__":
    main()
