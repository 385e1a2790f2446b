"""bench on the CPU at tiny scale: a converted checkpoint loads, prefill and decode are timed, memory recorded;
placements (embeddings / vision / lm_head off the device) leave the generated tokens unchanged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict

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


# A scripted clock for bench's timings: it stands still except in generate(), which costs GENERATE_S[n] for n new
# tokens (binary-exact seconds), so the rates below are numbers worked out by hand, not bench's own formulas.
GENERATE_S = {2: 0.375, 1: 0.5, 4: 0.875}  # the warm-up (WARMUP: 2 tokens), the prefill (1), the whole run (4)


def test_bench_a_gptq_checkpoint_on_cpu(rtn_checkpoint, monkeypatch):
    import types

    from transformers import LlavaForConditionalGeneration

    import pixtral_quant.bench as bench_module

    clock, calls = [0.0], []
    real_generate = LlavaForConditionalGeneration.generate

    def generate(self, *args, **kwargs):
        out = real_generate(self, *args, **kwargs)
        calls.append(kwargs["max_new_tokens"])
        clock[0] += GENERATE_S[kwargs["max_new_tokens"]]
        return out

    monkeypatch.setattr(LlavaForConditionalGeneration, "generate", generate)
    monkeypatch.setattr(bench_module, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    r = bench(rtn_checkpoint, device="cpu", workload=SMALL)
    assert r["quantization"] == "gptq" and r["kernel"] != "Linear"
    assert r["prompt_tokens"] == 1 + 15 + 16
    # warm-up, then prefill = generate(1 token) and generate(new_tokens = 4), BENCH_REPEATS (3) times each
    assert calls == [2, 1, 1, 1, 4, 4, 4]
    assert r["repeats"] == 3 and r["prefill_seconds_runs"] == [0.5] * 3 and r["generate_seconds_runs"] == [0.875] * 3
    assert (r["load_seconds"], r["prefill_seconds"], r["generate_seconds"]) == (0.0, 0.5, 0.875)
    # The module docstring's rates, by hand: prefill 32 prompt tokens / 0.5 s = 64 tok/s; decode (4 − 1) tokens
    # / (0.875 − 0.5) s = 8 tok/s.
    assert r["prefill_tokens_per_second"] == 64.0 and r["decode_tokens_per_second"] == 8.0
    assert r["peak_gpu_allocated"] is None  # on the CPU the peak is RSS: test_cpu_peak_is_the_process_peak_rss


# bench in a fresh process (the pytest process's peak RSS was set by whatever ran before): resets the RSS
# high-water mark, notes the RSS, runs bench, and reads VmHWM itself (not through pixtral_quant's reader).
_BENCH_CHILD = """
import json, sys

from pixtral_quant.bench import bench
from pixtral_quant.memory.settings import Workload
# What bench imports on its first load, imported before the baseline so that the growth is the load and the run.
import gptqmodel, optimum.gptq, transformers.models.llava.modeling_llava


def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))

with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # VmHWM := VmRSS
before = status("VmRSS")
transient = b"\x01" * int(sys.argv[3])  # resident, then returned to the system: only a high-water mark keeps it
del transient
after_transient = status("VmRSS")
r = bench(sys.argv[1], device="cpu", workload=Workload(**json.loads(sys.argv[2])))
print(json.dumps({"rss_before": before, "rss_after_transient": after_transient, "hwm_after": status("VmHWM"),
                  "peak_rss": r["peak_rss"]}))
"""
TRANSIENT = 512 * 2**20  # more than the load and run add (measured: about 160 MiB for the tiny RTN checkpoint)
PAGES = 4 * 2**20  # Linux counts RSS per thread in batches and updates VmHWM lazily: reads are off by some pages


def test_cpu_peak_is_the_process_peak_rss(rtn_checkpoint):
    """bench's peak_rss on the CPU is this process's RSS high-water mark, so the load is included: a transient
    512 MiB freed before bench still counts (a current-RSS reading would miss it), every weight of the checkpoint
    counts, and it is the high-water mark the process reads for itself right after (within PAGES)."""
    weights = sum(p.stat().st_size for p in rtn_checkpoint.glob("*.safetensors"))
    proc = subprocess.run([sys.executable, "-c", _BENCH_CHILD, str(rtn_checkpoint), json.dumps(asdict(SMALL)),
                           str(TRANSIENT)],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = json.loads(proc.stdout.splitlines()[-1])
    assert m["rss_after_transient"] < m["rss_before"] + TRANSIENT / 2, m  # the transient really was freed
    assert m["peak_rss"] >= m["rss_before"] + max(TRANSIENT, weights) - PAGES, (m, weights)
    assert abs(m["peak_rss"] - m["hwm_after"]) <= PAGES, m


EOS = 2  # </s> of the tiny model's tokenizer


@torch.no_grad()
def greedy_by_hand(model, inputs: dict, new_tokens: int) -> list[int]:
    """Greedy decoding written out, not generate(): one forward over the prompt (with the image), then one token at
    a time through the KV cache; </s> masked, as min_new_tokens = new_tokens does in generate()."""
    out, ids = model(**inputs, use_cache=True), []
    for _ in range(new_tokens):
        logits = out.logits[0, -1].clone()
        logits[EOS] = -float("inf")
        ids.append(int(logits.argmax()))
        out = model(input_ids=torch.tensor([[ids[-1]]]), past_key_values=out.past_key_values, use_cache=True)
    return ids


def test_placements_keep_the_generated_tokens(tiny_model_dir):
    """The placed model's generate() gives the tokens of a decode loop written out on the unplaced model (an
    independent path, not the same generate() twice), in two runs in a row (offload swaps the host weights back in
    after each image pass). On the CPU the placed modules stay where they were, so a device given as "meta" shows
    the moves: the embeddings' and lm_head's outputs go to the device, their weights stay on the CPU."""
    from transformers import LlavaForConditionalGeneration

    def load():
        return LlavaForConditionalGeneration.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()

    plain = load()
    inputs = synthetic_prompt(plain.config, image_ids(tiny_model_dir), SMALL, "cpu", torch.float32)
    assert place(plain, Placement(), torch.device("cpu")) == []
    expected = greedy_by_hand(plain, inputs, SMALL.new_tokens)
    assert len(set(expected)) > 1, expected  # not a degenerate repeat

    model = load()
    moved = place(model, Placement(embeddings="cpu", vision="offload", lm_head="cpu"), torch.device("cpu"))
    assert moved == ["embeddings: cpu", "vision: offload", "lm_head: cpu"]
    prompt = inputs["input_ids"].shape[1]
    for _ in range(2):
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False)
        assert out[0, prompt:].tolist() == expected
    for module in (model.model.vision_tower, model.model.multi_modal_projector):
        assert module._forward_pre_hooks and module._forward_hooks

    meta = load()
    place(meta, Placement(embeddings="cpu", lm_head="cpu"), torch.device("meta"))
    rows = meta.get_input_embeddings()(inputs["input_ids"])
    logits = meta.lm_head(torch.zeros(1, 2, meta.config.text_config.hidden_size))
    assert rows.device.type == logits.device.type == "meta"
    assert meta.get_input_embeddings().weight.device.type == meta.lm_head.weight.device.type == "cpu"


def test_cli_json(rtn_checkpoint):
    res = CliRunner().invoke(main, ["bench", str(rtn_checkpoint), "--device", "cpu", "--image-size", "32x32",
                                    "--text-tokens", "8", "--new-tokens", "3", "--json"])
    assert res.exit_code == 0, res.output
    r = json.loads(res.stdout[res.stdout.index("{"):])
    assert r["prompt_tokens"] == 1 + 6 + 8 and r["workload"]["new_tokens"] == 3
    assert r["generate_seconds"] > 0 and r["prefill_seconds"] > 0  # real timings (their relation: the scripted clock)


def test_the_figures_are_medians_of_the_repeats(monkeypatch):
    """A scripted clock with one slow outlier run: the median ignores it (the mean would not)."""
    import types

    import pixtral_quant.bench as bench_module

    durations = iter([0.1, 0.5, 0.4, 0.6, 9.0, 1.0, 1.2, 0.9, 1.1])  # warm-up, 4 prefills, 4 generations
    clock = [0.0]

    class Model:
        config = None

        def generate(self, **kwargs):
            clock[0] += next(durations)

    monkeypatch.setattr(bench_module, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    monkeypatch.setattr(bench_module, "synthetic_prompt", lambda *a, **k: {"input_ids": torch.zeros(1, 10)})
    r = bench_module.measure_generation(Model(), {}, torch.device("cpu"), torch.float32, SMALL, repeats=4)
    assert r["prefill_seconds_runs"] == pytest.approx([0.5, 0.4, 0.6, 9.0])
    assert r["prefill_seconds"] == pytest.approx(0.55) and r["generate_seconds"] == pytest.approx(1.05)


def test_several_checkpoints_side_by_side(rtn_checkpoint, tiny_model_dir):
    """llama-bench style: one call, one table, a column per checkpoint and the ratios to the first."""
    args = ["bench", str(tiny_model_dir), str(rtn_checkpoint), "--device", "cpu", "--dtype", "float32",
            "--image-size", "32x32", "--text-tokens", "4", "--new-tokens", "2", "--repeats", "2"]
    res = CliRunner().invoke(main, [*args, "--json"])
    assert res.exit_code == 0, res.output
    runs = json.loads(res.stdout[res.stdout.index("["):])
    assert [r["quantization"] for r in runs] == [None, "gptq"] and all(r["repeats"] == 2 for r in runs)
    res = CliRunner().invoke(main, args)
    text = " ".join(res.stdout.split())
    assert res.exit_code == 0 and "decode vs first" in text and "medians of 2 runs" in text, res.output
    assert "1.00×" in text  # the first checkpoint against itself
