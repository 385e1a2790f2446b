"""Converted checkpoints scored as `validate` scores them, for the report scripts (scripts/report_convert.py,
scripts/report_mixed.py): one validate run per reference, every candidate against it, so a report's KL and
accuracy are validate's own (validate/compare.py: KL at the reference answer's positions, accuracy = the greedy
answer equal to the label after normalize)."""

from __future__ import annotations

import time
from pathlib import Path

from ..config import ValidateConfig

MAX_NEW_TOKENS = 8  # the tiny model's longest answer is 3 tokens + </s>


def converted(model_dir, recipe, out: Path) -> dict:
    """Convert (timed): {'bytes' of the safetensors, 'seconds' wall, 'loss' per layer (GPTQ; else None)}."""
    import shutil

    from ..convert import convert

    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    result = convert(model_dir, recipe, out)
    seconds = time.perf_counter() - start
    size = sum(p.stat().st_size for p in out.glob("*.safetensors"))
    return {"bytes": size, "seconds": seconds, "loss": result.layer_loss}


def scored(reference, outs: dict, eval_set: str | None = None,
           num_samples: int | None = None) -> tuple[dict, dict]:
    """validate's metrics of each checkpoint in `outs` ({name: folder}) against `reference`, on `eval_set` (None:
    validate's default) or its first `num_samples`: (the reference's {'accuracy': {task: acc, 'overall': acc},
    'samples': n, 'eval_set'}, {name: {'accuracy', 'kl', 'by_task'}})."""
    from ..validate.pipeline import validate

    cfg = ValidateConfig(eval_set=eval_set, num_samples=num_samples, max_new_tokens=MAX_NEW_TOKENS)
    report = validate(reference, list(outs.values()), cfg)
    first = report["candidates"][0]["metrics"]
    ref = {"accuracy": {**{t: g["accuracy_ref"] for t, g in first["by_task"].items()},
                        "overall": first["overall"]["accuracy_ref"]}, "samples": report["eval"]["samples"],
           "eval_set": report["eval"]["set"]}
    rows = {}
    for name, entry in zip(outs, report["candidates"]):
        m = entry["metrics"]
        by_task = {t: g["accuracy_cand"] for t, g in m["by_task"].items()}
        rows[name] = {"accuracy": m["overall"]["accuracy_cand"], "kl": m["overall"]["mean_kl"],
                      "by_task": {**by_task, "overall": m["overall"]["accuracy_cand"]}}
    return ref, rows
