"""Shared fixtures: the bundled trained tiny Pixtral, its native twin, and one shared GPTQ conversion."""

from __future__ import annotations

import os

import pytest
import torch

from pixtral_quant.assets import TINY_MODEL

# The test machine has 2 cores shared with other jobs; the tiny model gains nothing from more threads.
torch.set_num_threads(1)
# GPTQModel sizes its CPU worker pool from this (default: every core); the CI machine has two.
os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")


@pytest.fixture(scope="session")
def tiny_model_dir():
    """The bundled trained tiny model directory (HF format, checkpoint names, tokenizer.model.v7m1)."""
    assert (TINY_MODEL / "model.safetensors").is_file(), f"the bundled model is missing from {TINY_MODEL}"
    return TINY_MODEL


@pytest.fixture(scope="session")
def native_twin_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model rewritten in Mistral-native format by loading.write_native."""
    from pixtral_quant.loading import open_checkpoint, write_native

    return write_native(open_checkpoint(tiny_model_dir), tmp_path_factory.mktemp("tiny-native"))


# --- convert: one GPTQ conversion of the tiny model per session, shared by the convert tests -------------

GPTQ_TEST_OVERRIDES = {"calibration.num_samples": 8, "scheme.true_sequential": False}


@pytest.fixture(scope="session")
def gptq_recipe():
    """The default tiny recipe, cut to 8 calibration samples and one solve pass per layer (CI time)."""
    from pixtral_quant.config import with_overrides
    from pixtral_quant.recipes import DEFAULT_RECIPE, load_recipe

    return with_overrides(load_recipe(DEFAULT_RECIPE), GPTQ_TEST_OVERRIDES)


@pytest.fixture(scope="session")
def gptq_tiny(tiny_model_dir, gptq_recipe, tmp_path_factory):
    """(output directory, ConvertResult) of gptq-int4 on the tiny model."""
    from pixtral_quant.convert import convert

    out = tmp_path_factory.mktemp("gptq") / "out"
    return out, convert(tiny_model_dir, gptq_recipe, out)


@pytest.fixture(scope="session")
def llama_cpp():
    """The llama_cpp module (llama-cpp-python). Skipped where it is not installed, except under CI=true, where it
    is a failure: .ci/run installs it (scripts/install_llamacpp.sh), so the GGUF tests always run there."""
    try:
        import llama_cpp
    except ImportError as exc:
        if os.environ.get("CI", "").lower() in ("1", "true"):
            pytest.fail(f"CI must run llama.cpp: {exc} (scripts/install_llamacpp.sh installs it)")
        pytest.skip(f"llama-cpp-python is not installed ({exc}): bash scripts/install_llamacpp.sh")
    return llama_cpp


# --- the README's test command (scripts/test.sh) runs everything --------------------------------------------

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under scripts/test.sh (PIXTRAL_QUANT_ALL_TESTS=1) a skip is a failure, except for `gpu` tests on a host
    without CUDA: the command promises the whole suite ran, so a missing vLLM, llama.cpp or library is an error."""
    outcome = yield
    report = outcome.get_result()
    if (os.environ.get("PIXTRAL_QUANT_ALL_TESTS") == "1" and report.skipped and not hasattr(report, "wasxfail")
            and item.get_closest_marker("gpu") is None):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"skipped, but scripts/test.sh runs every test but the GPU ones: {reason}"
