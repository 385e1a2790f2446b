"""The bundled trained tiny Pixtral: its held-out accuracy, re-measured through the project's own loader
and the real encoding path (mistral-common), and the properties the quantization tests rely on."""

from __future__ import annotations

import json

import pytest
import torch

from pixtral_quant.assets import TINY_EVAL, TINY_MODEL
from pixtral_quant.fixtures import tasks as T
from pixtral_quant.fixtures.evalset import read_eval_set
from pixtral_quant.fixtures.evaluate import accuracy_by_task, answer_hits, greedy_answer
from pixtral_quant.fixtures.train import EVAL_PER_TASK, EVAL_SEED, sample_hash
from pixtral_quant.loading import load_model, open_checkpoint
from pixtral_quant.loading.tokenizer import open_mistral_tokenizer


@pytest.fixture(scope="module")
def bundled():
    ckpt = open_checkpoint(TINY_MODEL)
    model = load_model(ckpt, dtype=torch.float32)  # bf16 weights, fp32 compute (bf16 matmul is slow on CPU)
    return ckpt, model, open_mistral_tokenizer(ckpt.tokenizer, finetuning=True)


@pytest.fixture(scope="module")
def eval_set():
    return read_eval_set(TINY_EVAL)


@pytest.fixture(scope="module")
def measured(bundled, eval_set):
    _, model, tok = bundled
    hits = answer_hits(model, tok, eval_set)
    return hits, accuracy_by_task(eval_set, hits)


def test_held_out_accuracy_meets_the_bar(measured):
    _, acc = measured
    assert acc["overall"] >= 0.90, acc
    for task, chance in T.CHANCE.items():
        assert acc[task] >= 2 * chance, (task, acc[task], chance)


def test_recorded_accuracy_is_what_the_model_scores(measured):
    """training.json's numbers were measured at training time; the shipped weights reproduce them."""
    _, acc = measured
    recorded = json.loads((TINY_MODEL / "training.json").read_text())["held_out"]["accuracy"]
    assert set(recorded) == set(acc)
    for key, value in acc.items():
        assert abs(value - recorded[key]) <= 0.01, (key, value, recorded[key])


def test_greedy_generation_agrees_with_teacher_forced_scoring(bundled, eval_set, measured):
    ckpt, model, _ = bundled
    tok = open_mistral_tokenizer(ckpt.tokenizer)  # serving mode: the prompt ends with the user turn
    hits, _ = measured
    picks = [i for t in T.TASKS for i in [k for k, s in enumerate(eval_set) if s.task == t][:2]]
    for i in picks:
        said = greedy_answer(model, tok, eval_set[i])
        assert (said == eval_set[i].answer) == hits[i], (eval_set[i].task, said, eval_set[i].answer)


def test_eval_set_is_the_seeded_held_out_set(eval_set):
    """The shipped eval set is exactly the seeded set the trainer excluded from training."""
    regenerated = T.make_set(EVAL_SEED, EVAL_PER_TASK)
    assert [sample_hash(s) for s in eval_set] == [sample_hash(s) for s in regenerated]
    assert {s.task for s in eval_set} == set(T.TASKS) and len(eval_set) == EVAL_PER_TASK * len(T.TASKS)
    assert sum(len(s.images) == 2 for s in eval_set) == EVAL_PER_TASK  # the two-image task


def test_bundled_model_shape_rules(bundled):
    ckpt, model, _ = bundled
    size = sum(f.stat().st_size for f in ckpt.weight_files)
    assert size <= 45e6, size
    assert {info.dtype for info in ckpt.tensors.values()} == {"bfloat16"}
    decoder_linears = [m for n, m in model.model.language_model.named_modules() if isinstance(m, torch.nn.Linear)]
    assert len(decoder_linears) == 7 * model.config.text_config.num_hidden_layers
    assert all(m.in_features % 128 == 0 for m in decoder_linears)
    assert model.config.vision_config.hidden_act == "silu"
    assert model.config.vision_config.model_type == "pixtral"
    assert ckpt.tokenizer.name == "tokenizer.model.v7m1" and model.config.text_config.vocab_size == 32768
