"""bench on the CPU at tiny scale: a converted checkpoint loads, prefill and decode are timed, memory recorded;
placements (embeddings / vision / lm_head off the device) leave the generated tokens unchanged."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from pixtral_quant.bench import bench, image_ids, synthetic_prompt
from pixtral_quant.cli import main
from pixtral_quant.convert import convert
from pixtral_quant.memory.placement import place
from pixtral_quant.memory.settings import Placement, Workload
from pixtral_quant.recipes import load_recipe

SMALL = Workload(image_width=64, image_height=48, text_tokens=16, new_tokens=4)


@pytest.fixture(scope="module")
def rtn_checkpoint(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "rtn"
    convert(tiny_model_dir, load_recipe("tiny-rtn-int4"), out)
    return out


def test_synthetic_prompt_layout(tiny_model_dir):
    from transformers import LlavaConfig

    config = LlavaConfig.from_pretrained(tiny_model_dir)
    ids = image_ids(tiny_model_dir)
    assert ids["image_break_token_id"] == 14  # the tiny model's v7m1 tokenizer
    p = synthetic_prompt(config, ids, SMALL, "cpu", torch.float32)
    row = p["input_ids"][0].tolist()
    assert row.count(10) == 3 * 4 and row.count(14) == 2 and row.count(15) == 1  # 3 rows × 4 cols of patches
    assert len(row) == 1 + 3 * 4 + 3 + 16 and tuple(p["pixel_values"].shape) == (1, 3, 48, 64)


def test_bench_a_gptq_checkpoint_on_cpu(rtn_checkpoint):
    r = bench(rtn_checkpoint, device="cpu", workload=SMALL)
    assert r["quantization"] == "gptq" and r["kernel"] != "Linear"
    assert r["prompt_tokens"] == 1 + 15 + 16
    assert r["prefill_seconds"] > 0 and r["decode_tokens_per_second"] > 0
    assert r["generate_seconds"] > r["prefill_seconds"]
    assert r["peak_rss"] > 2**27 and r["peak_gpu_allocated"] is None


def test_placements_keep_the_generated_tokens(tiny_model_dir):
    from transformers import LlavaForConditionalGeneration

    def generate(placement):
        model = LlavaForConditionalGeneration.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
        moved = place(model, placement, torch.device("cpu"))
        inputs = synthetic_prompt(model.config, image_ids(tiny_model_dir), SMALL, "cpu", torch.float32)
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
        return out, moved, model

    plain, none_moved, _ = generate(Placement())
    placed, moved, model = generate(Placement(embeddings="cpu", vision="offload", lm_head="cpu"))
    assert none_moved == [] and moved == ["embeddings: cpu", "vision: offload", "lm_head: cpu"]
    assert torch.equal(plain, placed)
    assert model.model.vision_tower._forward_pre_hooks and model.lm_head._forward_hooks


def test_cli_json(rtn_checkpoint):
    res = CliRunner().invoke(main, ["bench", str(rtn_checkpoint), "--device", "cpu", "--image-size", "32x32",
                                    "--text-tokens", "8", "--new-tokens", "3", "--json"])
    assert res.exit_code == 0, res.output
    r = json.loads(res.stdout[res.stdout.index("{"):])
    assert r["prompt_tokens"] == 1 + 6 + 8 and r["workload"]["new_tokens"] == 3
