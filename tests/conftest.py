"""Shared fixtures: the tiny Pixtral (trained when bundled, else random bf16 weights) and its native twin."""

from __future__ import annotations

import shutil

import pytest
import torch

from pixtral_quant.assets import TINY_MODEL

# The test machine has 2 cores shared with other jobs; the tiny model gains nothing from more threads.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """The bundled tiny model directory (HF format, checkpoint names, tokenizer.model.v7m1).

    Until trained weights are bundled, a seeded random-weight model of the same config, saved by
    transformers' save_pretrained in bf16 with the v7m1 tokenizer copied in."""
    if (TINY_MODEL / "model.safetensors").is_file():
        return TINY_MODEL
    from transformers import LlavaForConditionalGeneration

    from pixtral_quant.fixtures.train import tiny_config
    from pixtral_quant.loading.tokenizer import bundled_tokenizer_path

    out = tmp_path_factory.mktemp("tiny-pixtral")
    torch.manual_seed(0)
    LlavaForConditionalGeneration(tiny_config()).to(torch.bfloat16).save_pretrained(out)
    shutil.copy(bundled_tokenizer_path("v7m1"), out / "tokenizer.model.v7m1")
    return out


@pytest.fixture(scope="session")
def native_twin_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model rewritten in Mistral-native format by loading.write_native."""
    from pixtral_quant.loading import open_checkpoint, write_native

    return write_native(open_checkpoint(tiny_model_dir), tmp_path_factory.mktemp("tiny-native"))
