"""The lm_head solved once over all rows and once in row blocks, on the same activations (tests/test_mixed.py,
tests/test_convert_lm_head.py)."""

from __future__ import annotations

import torch

from pixtral_quant import capture


def whole_and_blocks(ckpt, solver, tmp_path, rows: int) -> tuple:
    """capture.calibrate_head over 3 seeded random samples [1, 40, hidden] (float32, CPU): (tensors, losses) of the
    all-rows solve, then of the solve in blocks of `rows` rows."""
    store = capture.ActivationStore(2**30, tmp_path)
    hidden = ckpt.config.text_config.hidden_size
    for seed in range(3):
        store.append(torch.randn(1, 40, hidden, generator=torch.Generator().manual_seed(seed)))
    whole = capture.calibrate_head(ckpt, solver, store, "cpu", torch.float32)
    return whole, capture.calibrate_head(ckpt, solver, store, "cpu", torch.float32, rows=rows)
