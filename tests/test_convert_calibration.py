"""The tiny model's calibration set: its own tasks, disjoint from the held-out eval set, loadable by name."""

from __future__ import annotations

from pixtral_quant.calibration.builtin import builtin_manifest, calibration_root
from pixtral_quant.calibration.dataset import load_set
from pixtral_quant.fixtures import tasks as T
from pixtral_quant.fixtures.evalset import read_eval_set
from pixtral_quant.fixtures.train import EVAL_PER_TASK, EVAL_SEED, sample_hash


def test_tiny_calibration_set_is_disjoint_from_the_eval_set():
    calib = read_eval_set(calibration_root() / "tiny")
    held_out = {sample_hash(s) for s in T.make_set(EVAL_SEED, EVAL_PER_TASK)}
    assert len(calib) >= 96 and {s.task for s in calib} == set(T.TASKS)
    assert not {sample_hash(s) for s in calib} & held_out


def test_tiny_set_loads_by_name():
    assert builtin_manifest("tiny").parent.name == "tiny"
    cset = load_set("builtin:tiny", "v7m1", num_samples=6, seed=0)
    assert len(cset) == 6 and cset.content_hash.startswith("sha256:")
