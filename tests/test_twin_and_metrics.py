"""The outlier twin keeps the model's function; the KL / SQNR metrics behave on hand-made inputs."""

from __future__ import annotations

import math

import torch

from pixtral_quant.validate.metrics import sqnr_db, token_kl


def test_token_kl_is_zero_for_equal_and_positive_otherwise():
    a = torch.randn(5, 11)
    assert torch.allclose(token_kl(a, a), torch.zeros(5, dtype=torch.float64))
    p = torch.tensor([[math.log(0.5), math.log(0.5)]], dtype=torch.float64)
    q = torch.tensor([[math.log(0.9), math.log(0.1)]], dtype=torch.float64)
    expected = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert abs(token_kl(p, q).item() - expected) < 1e-12


def test_sqnr():
    x = torch.ones(100)
    assert sqnr_db(x, x) == float("inf")
    assert abs(sqnr_db(x, x * 1.1) - 20.0) < 1e-3  # noise 0.1 → 20 dB (float32 1.1)


def test_outlier_twin_keeps_the_function_and_makes_outliers(tiny_model_dir, tmp_path):
    from transformers import LlavaForConditionalGeneration

    from pixtral_quant.fixtures.twin import make_outlier_twin

    twin_dir = make_outlier_twin(tiny_model_dir, tmp_path / "twin", k=8, s=32.0)
    ref = LlavaForConditionalGeneration.from_pretrained(tiny_model_dir, dtype=torch.float32)
    twin = LlavaForConditionalGeneration.from_pretrained(twin_dir, dtype=torch.float32)
    ids = torch.tensor([[1, 3, 1100, 1200, 1300, 1400, 4]])
    with torch.no_grad():
        a, b = ref(input_ids=ids).logits, twin(input_ids=ids).logits
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)
    down_ref = ref.model.language_model.layers[0].mlp.down_proj.weight.abs().amax(0)
    down_twin = twin.model.language_model.layers[0].mlp.down_proj.weight.abs().amax(0)
    assert int((down_twin > 8 * down_ref).sum()) == 8  # 8 columns scaled ×32
    assert (tmp_path / "twin" / "tokenizer.model.v7m1").is_file()
