"""`validate --engine`: the engine registry, the vLLM results → metrics path, bad input (exit 2), and end to end
through vLLM on the bundled tiny model (a good INT4 candidate passes, the broken one fails naming the same
threshold as under the transformers engine).

The end-to-end tests need vLLM's environment (scripts/install_vllm.sh → .venv-vllm). Without it they skip
locally, but FAIL when CI is set (true or 1): CI builds that environment, so its absence there is a broken CI.
Where this CPU's vLLM build has no INT4 kernel (AVX2 only), the end-to-end candidates are bf16 ones (what that
build serves), decided by the engine's own check (engines.vllm.cpu_kernels)."""

from __future__ import annotations

import json
import math
import os
import sys
from types import SimpleNamespace

import pytest
import torch
from click.testing import CliRunner

from pixtral_quant.cli import main
from pixtral_quant.errors import UsageError
from pixtral_quant.validate import cache, compare, engines, metrics
from pixtral_quant.validate.outputs import ModelOutputs, SampleOutput, TopK


def cli(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


# --- the registry and the vLLM result conversion (no vLLM needed) -------------------------------------------


def test_registry_names_and_unknown_engine():
    assert set(engines.ENGINES) == {"transformers", "vllm", "llama.cpp"}
    assert isinstance(engines.engine_for(engines.EngineConfig()), engines.TransformersEngine)
    assert isinstance(engines.engine_for(engines.EngineConfig(name="vllm")), engines.VllmEngine)
    with pytest.raises(UsageError, match="unknown engine 'trt'"):
        engines.engine_for(engines.EngineConfig(name="trt"))
    r = cli("validate", "--candidate", "pixtral_quant/assets/tiny-pixtral", "--engine", "trt")
    assert r.exit_code == 2 and "unknown engine 'trt'" in r.output and "transformers" in r.output


def test_cache_keys_differ_by_engine():
    t = engines.engine_for(engines.EngineConfig()).cache_options()
    v20 = engines.engine_for(engines.EngineConfig(name="vllm")).cache_options()
    v5 = engines.engine_for(engines.EngineConfig(name="vllm", logprobs_k=5)).cache_options()
    keys = {cache.reference_key("m", "e", {"max_new_tokens": 8, **o}) for o in (t, v20, v5)}
    assert len(keys) == 3


def test_vllm_only_options_with_transformers_are_an_error():
    cfg = SimpleNamespace(layer_sqnr_samples=0)
    engines.engine_for(engines.EngineConfig()).check(cfg)  # defaults: fine
    with pytest.raises(UsageError, match="tensor_parallel_size only apply to the vLLM engine") as e:
        engines.engine_for(engines.EngineConfig(tensor_parallel_size=2)).check(cfg)
    assert "--tensor-parallel-size" in e.value.fix
    r = cli("validate", "--candidate", "pixtral_quant/assets/tiny-pixtral", "--distributed-executor-backend", "ray")
    assert r.exit_code == 2 and "distributed_executor_backend only apply to the vLLM engine" in r.output


def test_layer_sqnr_is_refused_under_vllm():
    with pytest.raises(UsageError, match="per-layer SQNR"):
        engines.engine_for(engines.EngineConfig(name="vllm")).check(SimpleNamespace(layer_sqnr_samples=2))


def test_topk_at_reads_vllm_prompt_logprobs():
    # Position 0: the answer token (7) is in the top 2; position 1: it is not, and vLLM adds it as a third entry.
    positions = [{3: -1.5, 7: -0.3}, {5: -0.1, 3: -2.6, 9: -7.0}]
    tk = engines.topk_at(positions, [7, 9], 2)
    assert tk.ids.tolist() == [[7, 3, -1], [5, 3, 9]]
    assert tk.logprobs[0, 2] == -math.inf and tk.logprobs[1].tolist() == pytest.approx([-0.1, -2.6, -7.0])
    assert tk.target.tolist() == pytest.approx([-0.3, -7.0])
    assert engines.topk_at([{"3": -1.5, "7": -0.3}], [7], 2).ids.tolist() == [[7, 3]]  # JSON's str keys


def test_images_of_keeps_message_order():
    msgs = [{"role": "user", "content": [{"type": "image", "image": "a"}, {"type": "text", "text": "x"},
                                         {"type": "image", "image": "b"}]},
            {"role": "assistant", "content": "red"}, {"role": "user", "content": [{"type": "image", "image": "c"}]}]
    assert engines.images_of(msgs) == ["a", "b", "c"]


def topk_sample(logits: torch.Tensor, answer: torch.Tensor, k: int, generated=(1, 2)) -> SampleOutput:
    """What the vLLM engine would produce for a model with these logits."""
    ids, lp = metrics.topk_of(logits, k)
    target = logits.double().log_softmax(-1).gather(-1, answer[:, None]).squeeze(-1).float()
    return SampleOutput(None, answer, list(generated), None, TopK(ids, lp, target))


def test_rows_from_topk_match_rows_from_logits():
    """The same two models seen through full logits and through top-k: top-1, NLLs and outputs identical, KL a
    lower bound within 1 % for peaked distributions (the tiny LM's answer positions are peaked)."""
    g = torch.Generator().manual_seed(3)
    ref = torch.randn(6, 300, generator=g) * 8
    cand = ref + 0.4 * torch.randn(6, 300, generator=g)
    answer = ref.argmax(-1)
    label = {"id": "s", "task": "t", "bucket": "≤64 px", "answer": "x"}
    full = compare.sample_row(SampleOutput(ref, answer, [1, 2]), SampleOutput(cand, answer, [1, 2]), label, str)
    top = compare.sample_row(topk_sample(ref, answer, 20), topk_sample(cand, answer, 20), label, str)
    assert top["top1_agree"] == full["top1_agree"] and top["tokens"] == full["tokens"] == 6
    assert top["nll_ref"] == pytest.approx(full["nll_ref"], rel=1e-5)
    assert top["nll_cand"] == pytest.approx(full["nll_cand"], rel=1e-5)
    assert full["kl_mean"] > 1e-4 and top["kl_mean"] <= full["kl_mean"] * (1 + 1e-6)
    assert top["kl_mean"] == pytest.approx(full["kl_mean"], rel=0.01)
    with pytest.raises(UsageError, match="same --engine"):
        compare.sample_row(SampleOutput(ref, answer, []), topk_sample(cand, answer, 20), label, str)


def test_cache_round_trip_with_topk(tmp_path):
    g = torch.Generator().manual_seed(0)
    s = topk_sample(torch.randn(3, 40, generator=g), torch.tensor([1, 2, 3]), 5, generated=(9,))
    key = cache.reference_key("m", "e", {"engine": "vllm"})
    cache.store(tmp_path, key, ModelOutputs([s]))
    back = cache.load(tmp_path, key, 0).samples[0]
    assert back.kind == "topk" and back.answer_logits is None and back.generated == [9]
    for name in ("ids", "logprobs", "target"):
        assert torch.equal(getattr(back.topk, name), getattr(s.topk, name))


# --- end to end through vLLM ---------------------------------------------------------------------------------

N = "40"  # eval samples per run, as tests/test_validate.py


def vllm_ready() -> str | None:
    """None when vLLM's environment is usable, else why not."""
    from pixtral_quant.engines import vllm as engine
    from pixtral_quant.errors import MissingDependencyError

    try:
        engine.check_available()
    except MissingDependencyError as exc:
        return exc.message
    return None


@pytest.fixture(scope="module")
def need_vllm():
    why = vllm_ready()
    if why is None:
        return
    if os.environ.get("CI", "").lower() in ("1", "true"):
        pytest.fail(f"CI is set but vLLM's environment is missing ({why}): .ci/run must build it")
    pytest.skip(f"vLLM's environment is not installed here ({why}); CI runs this test")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("validate-engine")
    mp = pytest.MonkeyPatch()
    mp.setenv("PIXTRAL_QUANT_CACHE", str(root / "cache"))
    yield root
    mp.undo()


@pytest.fixture(scope="module")
def int4(work):
    out = work / "g4"
    r = cli("convert", "--recipe", "tiny-gptq-int4", "--out", str(out))
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture(scope="module")
def served(need_vllm, int4, work):
    """(good, broken) candidates this CPU's vLLM build serves: the INT4 conversion where the INT4 kernel exists,
    else a bf16 copy of the reference (AVX2-only CPU); broken = the good one with layer 1 zeroed."""
    import shutil

    from pixtral_quant.assets import TINY_MODEL
    from pixtral_quant.engines import vllm as engine
    from pixtral_quant.fixtures.broken import zero_layer

    good = int4
    if not engine.cpu_kernels()[engine.INT4_KERNEL]:
        good = work / "bf16"
        shutil.copytree(TINY_MODEL, good)
    return good, zero_layer(good, work / f"{good.name}-layer1-zeroed", 1)


def test_vllm_engine_end_to_end(served, int4, work):
    """One vLLM validation of a good and a broken candidate; the broken one breaks max_mean_kl, as under
    the transformers engine (tests/test_validate.py); the good one passes its recipe's bars."""
    good_dir, broken = served
    r = cli("validate", "--engine", "vllm", "--candidate", str(good_dir), "--candidate", str(broken),
            "--num-samples", N, "--report-dir", str(work / "rep-vllm"))
    assert r.exit_code == 1, r.output
    assert f"{broken.name}: max_mean_kl broken: mean_kl" in r.output and "off by" in r.output
    assert f"{good_dir.name}: " not in r.output  # the good candidate broke nothing
    report = json.loads((work / "rep-vllm" / "report.json").read_text())
    assert report["engine"]["name"] == "vllm" and "top-20" in report["engine"]["teacher_forced"]
    good, bad = report["candidates"]
    assert good["passed"] and not bad["passed"]
    m = good["metrics"]["overall"]
    assert m["samples"] == int(N) and m["accuracy_ref"] >= 0.9 and m["top1_agreement"] >= 0.98
    assert m["mean_kl"] < 0.05 and m["exact_match"] >= 0.9
    assert (m["mean_kl"] > 0) == (good_dir == int4)  # a bf16 copy of the reference gives identical logprobs
    assert bad["metrics"]["overall"]["mean_kl"] > 0.05
    assert "Engine: vllm" in (work / "rep-vllm" / "report.md").read_text()


def test_missing_vllm_exits_2_naming_the_install_command(int4, monkeypatch):
    """vLLM's python pointed at one without vLLM (this project's own): exit 2 before any model runs."""
    from pixtral_quant.engines import vllm as engine

    monkeypatch.setenv(engine.ENV_PYTHON, sys.executable)
    r = cli("validate", "--engine", "vllm", "--candidate", str(int4), "--num-samples", "2")
    assert r.exit_code == 2, r.output
    assert "install_vllm.sh" in r.output and "Traceback" not in r.output


def test_candidate_vllm_cannot_load_exits_2_with_vllms_reason(need_vllm, work):
    """A bnb-nf4 candidate: vLLM's CPU build has no bitsandbytes. Exit 2 with vLLM's own words and what to do,
    no traceback (the reference runs first: it is cached from the end-to-end test)."""
    out = work / "nf4"
    assert cli("convert", "--scheme", "bnb-nf4", "--out", str(out)).exit_code == 0
    r = CliRunner().invoke(main, ["validate", "--engine", "vllm", "--candidate", str(out), "--num-samples", N])
    assert r.exit_code == 2, r.output
    assert "Unknown quantization method: bitsandbytes" in r.output and "fix:" in r.output
    assert "Traceback" not in r.output and isinstance(r.exception, SystemExit)


def test_int4_candidate_where_vllm_has_no_int4_kernel_exits_2_in_one_line(need_vllm, int4, tmp_path, monkeypatch):
    """vLLM as an AVX2-only CPU runs it (tests/vllm_helpers.py): the bf16 reference runs (its own cache: it must
    run here), the INT4 candidate is refused with the reason in one line and the fix; exit 2, no traceback."""
    from pixtral_quant.engines import vllm as engine
    from vllm_helpers import avx2_python

    monkeypatch.setenv(engine.ENV_PYTHON, str(avx2_python(engine.find_python(), tmp_path)))
    monkeypatch.setenv("PIXTRAL_QUANT_CACHE", str(tmp_path / "cache"))
    r = CliRunner().invoke(main, ["validate", "--engine", "vllm", "--candidate", str(int4), "--num-samples", "8"])
    assert r.exit_code == 2, r.output
    error = next(line for line in r.output.splitlines() if "cannot load this checkpoint" in line)
    assert error.endswith("no cpu_gemm_wna16 kernel; this checkpoint has GPTQ 4-bit weights")
    assert "fix: serve INT4 checkpoints with vLLM on a CPU with AVX-512" in r.output
    assert "Traceback" not in r.output and isinstance(r.exception, SystemExit)
    assert any((tmp_path / "cache").rglob("*")), "the bf16 reference did not run under the AVX2 build"
