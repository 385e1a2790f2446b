"""The tiny model's synthetic tasks and its training pipeline (fast parts; the trained model itself is
checked in test_tiny_model.py)."""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import pytest

from pixtral_quant.calibration.encode import encode
from pixtral_quant.fixtures import tasks as T
from pixtral_quant.fixtures import train as TR
from pixtral_quant.fixtures.evalset import read_eval_set, write_eval_set
from pixtral_quant.loading.tokenizer import bundled_tokenizer_path, open_mistral_tokenizer


@pytest.fixture(scope="module")
def v7m1():
    return open_mistral_tokenizer(bundled_tokenizer_path("v7m1"), finetuning=True)


def test_sets_are_deterministic_and_cover_every_task():
    a, b = T.make_set(7, 3), T.make_set(7, 3)
    assert [TR.sample_hash(s) for s in a] == [TR.sample_hash(s) for s in b]
    assert {s.task for s in a} == set(T.TASKS)
    assert [TR.sample_hash(s) for s in T.make_set(8, 3)] != [TR.sample_hash(s) for s in a]


def test_images_are_patch_aligned_and_objects_visible():
    for s in T.make_set(3, 10):
        for im in s.images:
            w, h = im.size
            assert w % 16 == 0 and h % 16 == 0 and 32 <= min(w, h) and max(w, h) <= 128
            arr = np.asarray(im).astype(int)
            assert (arr.max(axis=2) - arr.min(axis=2)).max() > 60 or s.task == "ocr"  # something coloured


def test_training_tokens_and_pixels_equal_mistral_common(v7m1):
    """The training fast path (token cache + own normalisation) equals encode_chat_completion."""
    cache, rng = TR.TokenCache(v7m1), random.Random(0)
    for _ in range(24):
        s = T.make_sample(rng)
        ref = encode(v7m1, s.messages(with_answer=True))
        assert cache(s) == ref.tokens
        for arr, im in zip(ref.images, s.images):
            assert np.abs(arr - TR.pixels(im).numpy()).max() < 1e-6


def test_make_batch_marks_answer_and_image_positions(v7m1):
    cache = TR.TokenCache(v7m1)
    samples = T.make_set(5, 1)
    b = TR.make_batch(samples, cache)
    ids = b["input_ids"]
    for r, p, target in b["ans"].tolist():
        assert ids[r, p + 1] == target
    assert set(b["img"][:, 2].tolist()) == {0, 1, 2}  # next is [IMG], [IMG_BREAK] and [IMG_END] somewhere
    assert (ids == TR.IMG).sum() == sum((b["image_sizes"] // 16).prod(-1).tolist())


def test_eval_set_round_trips_through_disk(tmp_path):
    samples = T.make_set(11, 2)
    write_eval_set(samples, tmp_path)
    back = read_eval_set(tmp_path)
    assert [TR.sample_hash(s) for s in back] == [TR.sample_hash(s) for s in samples]


def test_training_script_runs_end_to_end(tmp_path):
    """A few steps of both stages, then save: weights, tokenizer, record, eval set."""
    args = SimpleNamespace(seed=0, threads=1, batch=4, vision_steps=2, steps=2, warmup=1, lr=1e-3,
                           aux_weight=0.3, log_every=1, eval_every=0, eval_per_task=2, tokenizer=str(bundled_tokenizer_path("v7m1")),
                           argv=["--out", "x"])
    result = TR.train(args, log=lambda msg: None)
    assert set(result["accuracy"]) == set(T.TASKS) | {"overall"}
    TR.save(result, tmp_path / "m", args)
    names = {p.name for p in (tmp_path / "m").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.model.v7m1", "training.json"} <= names
    assert (tmp_path / "m-eval" / "manifest.jsonl").is_file()
