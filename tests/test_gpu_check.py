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
    assert run["measured"]["prompt_tokens"] == 1 + 20 + 16
    # pixtral-12b-int4's promise: embeddings in CPU memory, vision tower + projector offloaded, lm_head on the card
    assert {k: run["placement"][k] for k in ("embeddings", "vision", "lm_head")} == \
        {"embeddings": "cpu", "vision": "offload", "lm_head": "gpu"}
    assert stages["generate-int4"]["decode_linears"]["linears"] == 4 * 7
    # The prediction is the plan's for the RTN twin of pixtral-12b-int4 (INT4 decoder and lm_head) on the tiny
    # model, worked out here by hand (not by memory_report) from the tiny config: text 256 wide, 4 layers, 4 heads
    # and 2 KV heads of 64, MLP 768, vocab 32768; vision 128 wide, MLP 512, 2 layers, patch 16. GPTQ int4 g128 of
    # an in → out Linear: qweight in·out/2 + qzeros (in/128)·out/2 + fp16 scales (in/128)·out·2 + int32 g_idx in·4.
    q_o = 256 * 256 // 2 + 2 * 256 // 2 + 2 * 256 * 2 + 256 * 4  # 35072 (q_proj, o_proj: 256 → 256)
    k_v = 256 * 128 // 2 + 2 * 128 // 2 + 2 * 128 * 2 + 256 * 4  # 18048 (k_proj, v_proj: 256 → 128)
    gate_up = 256 * 768 // 2 + 2 * 768 // 2 + 2 * 768 * 2 + 256 * 4  # 103168 (256 → 768)
    down = 768 * 256 // 2 + 6 * 256 // 2 + 6 * 256 * 2 + 768 * 4  # 105216 (768 → 256)
    decoder = 4 * (2 * q_o + 2 * k_v + 2 * gate_up + down)  # 1671168
    lm_head = 256 * 32768 // 2 + 2 * 32768 // 2 + 2 * 32768 * 2 + 256 * 4  # 4359168
    norms = 9 * 256 * 2 + 2 * 32 * 4  # 2 per layer + the final one, bf16; rotary inv_freq + original, float32
    vision = 2 * (2 * (4 * 128 * 128 + 3 * 128 * 512 + 2 * 128) + 128 * 3 * 16 * 16 + 128) + 2 * 16 * 4  # 1246592
    projector = 2 * (128 * 256 + 256 + 256 * 256 + 256)  # 197632: two Linears with biases, bf16
    # The peak is the image pass: the resident weights (embeddings in CPU memory), the offloaded tower and projector
    # moved in, and the image pass's activations for one 64×64 image (16 patches, 4096 pixels; prompt 16 image +
    # 4 break/end + 16 text = 36 tokens): float32 pixels 3·4096·4 + attention scores 16²·2 + the tower's
    # 2·(3·16·128 + 3·16·512) + the merged input embeddings 36·256·2.
    image_pass = 3 * 4096 * 4 + 16 * 16 * 2 + 2 * (3 * 16 * 128 + 3 * 16 * 512) + 36 * 256 * 2  # 129536
    peak = decoder + lm_head + norms + vision + projector + image_pass
    assert peak == 7_608_960  # (decode: 6035200 resident + 39 tokens × 2048 B of KV (+ a layer's) + logits, less)
    assert run["predicted_peak_bytes"] == peak == run["predicted"]["peak_bytes"]
    assert run["predicted"]["peak_phase"] == "image pass"
    assert run["measured_over_predicted"] == run["measured_peak_bytes"] / peak
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
    # pixtral-large-int4's promise (everything on an 80 GiB card, 8192-token context: prompt 8192 − 3 new) on the tiny
    # model, by hand: the peak is the prefill, resident weights (INT4 decoder, bf16 lm_head and embeddings) + the
    # prompt's KV (2·layers·2 KV heads·64·2 B per token) + one layer's MLP activations (2·256 + 3·768 per token, bf16)
    # + the kept input embeddings [8189, 256] bf16. At the 2 layers converted (2 layers' norms fewer) and at all 4:
    prompt, bf16_vocab = 8192 - 3, 32768 * 256 * 2
    acts = prompt * (2 * 256 + 3 * 768) * 2 + prompt * 256 * 2  # 50313216
    others = 2 * bf16_vocab + vision + projector
    small_peak = decoder // 2 + (norms - 4 * 256 * 2) + others + prompt * 2 * 2 * 2 * 64 * 2 + acts
    full_peak = decoder + norms + others + prompt * 2 * 4 * 2 * 64 * 2 + acts
    assert (small_peak, full_peak) == (94_535_808, 103_758_976)
    assert large["predicted_peak_bytes"] == small_peak and large["predicted_full_peak_bytes"] == full_peak
    assert large["extrapolated_full_peak_bytes"] == full_peak + large["measured_peak_bytes"] - small_peak
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
