"""scripts/gpu_check.py: every stage runs at tiny scale on the CPU and the report says what it measured; the
full-size run is the `gpu`-marked test (skipped without CUDA)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

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
    assert run["predicted_peak_bytes"] > 0 and stages["generate-int4"]["decode_linears"]["linears"] == 4 * 7
    assert stages["gptq"]["extrapolated_12b_seconds"] > 0 and len(stages["gptq"]["layer_seconds"]) == 1
    assert stages["large"]["synth"]["layers"] == 2 and stages["large"]["full_layers"] == 4
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
