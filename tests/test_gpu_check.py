"""scripts/gpu_check.py: every stage runs at tiny scale on the CPU and the report says what it measured; the
full-size run is the `gpu`-marked test (skipped without CUDA)."""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from pixtral_quant.config import with_overrides
from pixtral_quant.memory import memory_report
from pixtral_quant.recipes import load_recipe

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_tiny_mode_runs_every_stage(tmp_path):
    gpu_check = load_script()
    assert gpu_check.main(["--tiny", "--out", str(tmp_path / "r" / "gpu-check"), "--work", str(tmp_path / "w")]) == 0
    report = json.loads((tmp_path / "r" / "gpu-check.json").read_text())
    stages = report["stages"]
    assert [s["status"] for s in stages.values()] == ["ok"] * len(stages)
    assert set(stages) == {"env", "synth", "convert-int4", "generate-int4", "convert-int8", "generate-int8",
                           "drop-synth", "gptq", "large"}
    run = stages["generate-int4"]["runs"][0]
    assert run["placement"]["embeddings"] == "cpu" and run["measured"]["prompt_tokens"] == 1 + 20 + 16
    assert stages["generate-int4"]["decode_linears"]["linears"] == 4 * 7
    # The prediction is the plan's (memory_report, what `pixtral-quant plan` prints) for the RTN twin of the
    # recipe, the tiny workload, the placement applied and the recipe's card; recomputed here from the config.
    rtn4 = with_overrides(load_recipe("pixtral-12b-int4"), {"scheme": "rtn-int4"})
    placed = {k: run["placement"][k] for k in ("embeddings", "vision", "lm_head")}
    plan = memory_report("tiny", rtn4, gpu_memory="8GiB", workload=asdict(gpu_check.TINY_WORKLOAD), placement=placed)
    assert run["predicted_peak_bytes"] == plan["peak_bytes"] == run["predicted"]["peak_bytes"]
    assert run["measured_over_predicted"] == run["measured_peak_bytes"] / plan["peak_bytes"]
    g = stages["gptq"]
    assert len(g["layer_seconds"]) == 1 and (g["samples"], g["recipe_samples"]) == (2, 256)
    assert "mean layer time × 4 " in g["extrapolation"]  # the tiny model's 4 decoder layers
    # (capture + mean layer × layers + lm_head) × recipe samples / samples used, from the stored (rounded to
    # 0.1 s) parts: the bounds carry that rounding, the final value is rounded to 1 s.
    parts = [g["capture_seconds"], 4 * sum(g["layer_seconds"]) / len(g["layer_seconds"]), g["lm_head_seconds"]]
    scale, slack = 256 / 2, 0.05 * (1 + 4 + 1)
    assert scale * (sum(parts) - slack) - 0.5 <= g["extrapolated_12b_seconds"] <= scale * (sum(parts) + slack) + 0.5
    large = stages["large"]
    assert large["synth"]["layers"] == 2 and large["full_layers"] == 4
    rtn_large = with_overrides(load_recipe("pixtral-large-int4"), {"scheme": "rtn-int4"})
    full = memory_report("tiny", rtn_large, gpu_memory="80GiB", workload=asdict(gpu_check.TINY_WORKLOAD))
    assert large["predicted_full_peak_bytes"] == full["peak_bytes"]
    assert large["extrapolated_full_peak_bytes"] == (full["peak_bytes"] + large["measured_peak_bytes"]
                                                     - large["predicted_peak_bytes"])
    md = (tmp_path / "r" / "gpu-check.md").read_text()
    assert "CPU (tiny mode)" in md and "| generate-int4 | ok |" in md
    assert not any((tmp_path / "w").iterdir())  # scratch models removed


def test_a_failing_stage_is_recorded_and_the_rest_run(tmp_path, monkeypatch):
    gpu_check = load_script()
    monkeypatch.setattr(gpu_check, "gptq_stage", lambda run: (_ for _ in ()).throw(RuntimeError("boom")))
    code = gpu_check.main(["--tiny", "--stages", "env", "gptq", "--out", str(tmp_path / "g"), "--work",
                           str(tmp_path / "w")])
    stages = json.loads((tmp_path / "g.json").read_text())["stages"]
    assert code == 1 and stages["gptq"]["status"] == "failed" and "boom" in stages["gptq"]["error"]
    assert stages["env"]["status"] == "ok" and set(stages) == {"env", "gptq"}


def test_stages_past_the_budget_are_skipped_not_run(tmp_path):
    gpu_check = load_script()
    mode = gpu_check.Mode()
    run = gpu_check.Run(mode, tmp_path, tmp_path / "rep", budget_s=10)
    run.stage("synth", lambda r: pytest.fail("must not run"))
    assert run.report["stages"]["synth"]["status"] == "skipped"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_full_size_on_the_gpu(tmp_path):
    gpu_check = load_script()
    gpu_check.main(["--out", str(tmp_path / "gpu-check"), "--work", str(tmp_path / "work")])
    stages = json.loads((tmp_path / "gpu-check.json").read_text())["stages"]
    for tag, limit in (("int4", 7.5), ("int8", 13.5)):
        runs = stages[f"generate-{tag}"]["runs"]
        assert runs[-1]["measured_peak_bytes"] <= limit * 2**30
        assert all(r["within_10_percent"] for r in runs)
