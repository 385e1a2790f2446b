"""Complete checkpoints: the Hugging Face processor and tokenizer files (export.processor) that `convert` writes
and the bundled tiny model carries, so that `AutoProcessor.from_pretrained(OUT)` works (and vLLM can build its
Pixtral processor).

Parity is measured against mistral-common's `encode_chat_completion` through pixtral_quant.calibration.encode
(itself tested against mistral-common in tests/test_encode.py), for both tokenizer kinds: the tiny model's
SentencePiece v7m1 and Pixtral-12B's tekken (mistral-common's bundled tekken_240911.json in a Mistral-native
twin of the tiny model; its vocabulary does not match the tiny model's, which is fine since no model runs here).
Chats: samples of the tiny model's eval set (sides multiples of 16: no resizing) and of the built-in eval set
(documents, receipts, code, multi-image, multi-turn, system prompt; most images are resized), each as a
prompt (ends with the user) and as a full conversation (ends with the assistant's answer).
"""

from __future__ import annotations

import functools
import json
import shutil

import numpy as np
import pytest

from pixtral_quant.calibration.builtin import builtin_manifest
from pixtral_quant.calibration.encode import encode
from pixtral_quant.calibration.fetch import read_bytes
from pixtral_quant.calibration.images import decode
from pixtral_quant.calibration.manifest import read_manifest
from pixtral_quant.calibration.sample import fill_images
from pixtral_quant.export.checkpoint import copy_side_files
from pixtral_quant.export.processor import GENERATED_FILES, write_processor_files
from pixtral_quant.loading.tokenizer import bundled_tokenizer_path, open_mistral_tokenizer

TINY_EVAL = "pixtral_quant/assets/tiny-pixtral-eval/manifest.jsonl"
# Built-in eval samples: > 1024 px, receipts and code (runs of spaces), tiny images, multi-turn with a system
# prompt, four images in one turn.
BUILTIN_IDS = ("eval-document-002", "eval-receipt-005", "eval-receipt-007", "eval-code-000", "eval-chart-011",
               "eval-photo-003", "eval-multi_image-004", "eval-multi_image-005", "eval-multi_image-009")
# transformers' Pixtral image processor resamples with another bicubic than mistral-common's (OpenCV); on the
# built-in eval set the largest difference is 1.43 normalised units (calibration/encode.py's docstring).
RESIZED_BOUND = 2.0


# --------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tiny_rtn(tiny_model_dir, tmp_path_factory):
    """convert --scheme rtn-int4 of the bundled tiny model (HF source that already carries the files)."""
    from pixtral_quant.convert import convert
    from pixtral_quant.recipes import load_recipe

    out = tmp_path_factory.mktemp("rtn") / "out"
    convert(tiny_model_dir, load_recipe("tiny-rtn-int4"), out)
    return out


@pytest.fixture(scope="module")
def native_rtn(tiny_model_dir, tmp_path_factory):
    """convert --scheme rtn-int4 of the tiny model's Mistral-native twin (params.json + tokenizer.model.v7m1,
    no HF processor files): the files are generated."""
    return _native_convert(tiny_model_dir, tmp_path_factory, None)


@pytest.fixture(scope="module")
def tekken_rtn(tiny_model_dir, tmp_path_factory):
    """The same with Pixtral-12B's tekken.json as the native twin's tokenizer."""
    tekken = tmp_path_factory.mktemp("tekken") / "tekken.json"
    shutil.copyfile(bundled_tokenizer_path("tekken"), tekken)
    return _native_convert(tiny_model_dir, tmp_path_factory, tekken)


def _native_convert(tiny_model_dir, tmp_path_factory, tokenizer):
    from pixtral_quant.convert import convert
    from pixtral_quant.loading import open_checkpoint, write_native
    from pixtral_quant.recipes import load_recipe

    src = write_native(open_checkpoint(tiny_model_dir), tmp_path_factory.mktemp("native") / "src",
                       tokenizer=tokenizer)
    assert not any((src / name).exists() for name in GENERATED_FILES)
    out = tmp_path_factory.mktemp("native-out") / "out"
    convert(src, load_recipe("tiny-rtn-int4"), out)
    return out


@functools.lru_cache(maxsize=None)
def processor(directory):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(str(directory))


@functools.lru_cache(maxsize=None)
def mistral(path, finetuning: bool):
    return open_mistral_tokenizer(path, finetuning=finetuning)


# --------------------------------------------------------------------------------------------- chats


def _samples(manifest, ids=None) -> list[tuple[str, list[dict]]]:
    """(id, messages with PIL images) of a manifest's samples, in `ids` order (or the file's)."""
    by_id = {s.id: s for s in read_manifest(manifest)}
    chosen = [by_id[i] for i in ids] if ids else list(by_id.values())
    out = []
    for s in chosen:
        images = [decode(read_bytes(ref, s.where), s.where).image for ref in s.image_refs()]
        out.append((s.id, fill_images(s.messages, images)))
    return out


@functools.lru_cache(maxsize=1)
def chats() -> tuple[tuple[str, tuple], ...]:
    """≥ 10 conversations with images: tiny-eval samples (all six tasks, one with two images), a multi-turn
    chat with an image per user turn and a system prompt, and the built-in eval samples in BUILTIN_IDS."""
    tiny = _samples(TINY_EVAL)[:6]
    (_, first), (_, second) = tiny[0], tiny[1]
    multi_turn = [{"role": "system", "content": "Answer with one word."}] + first + second
    listed = tiny + [("tiny-multi-turn", multi_turn)] + _samples(builtin_manifest("eval"), BUILTIN_IDS)
    return tuple((name, tuple(messages)) for name, messages in listed)


def _images(messages) -> list:
    return [c["image"] for m in messages if not isinstance(m["content"], str) for c in m["content"]
            if c["type"] == "image"]


def _compare(proc, tokenizer_path, messages) -> tuple[int, float]:
    """AutoProcessor vs encode on one conversation: asserts equal ids and image sizes, and pixels ≤ 1e-6 for
    images that need no resizing; returns (images compared exactly, largest difference on resized ones)."""
    ref = encode(mistral(tokenizer_path, messages[-1]["role"] == "assistant"), list(messages))
    hf = proc.apply_chat_template(list(messages), tokenize=True, return_dict=True, return_tensors="np")
    assert hf["input_ids"][0].tolist() == ref.tokens
    assert len(hf["image_sizes"]) == len(ref.images)
    exact, resized = 0, 0.0
    for pixels, (h, w), want, image in zip(hf["pixel_values"], hf["image_sizes"], ref.images, _images(messages)):
        assert (h, w) == want.shape[1:]
        diff = float(np.abs(pixels[:, :h, :w] - want).max())
        if image.width % 16 == 0 and image.height % 16 == 0 and max(image.size) <= 1024:
            assert diff <= 1e-6
            exact += 1
        else:
            resized = max(resized, diff)
    return exact, resized


def _parity(directory, tokenizer_path) -> dict:
    """Every chat, as a prompt and as a full conversation, through AutoProcessor(directory) and encode."""
    proc = processor(directory)
    counts = {"chats": 0, "exact_images": 0, "resized_max": 0.0}
    for _, messages in chats():
        for conversation in (messages[:-1], messages):
            exact, resized = _compare(proc, tokenizer_path, conversation)
            counts["chats"] += 1
            counts["exact_images"] += exact
            counts["resized_max"] = max(counts["resized_max"], resized)
    return counts


# --------------------------------------------------------------------------------------------- tests


def test_bundled_tiny_model_loads_with_autoprocessor(tiny_model_dir):
    from transformers import PixtralImageProcessor, PixtralProcessor

    proc = processor(tiny_model_dir)
    assert isinstance(proc, PixtralProcessor)
    assert isinstance(proc.image_processor, PixtralImageProcessor)
    assert proc.image_token_ids == [10, 14, 15]  # [IMG], [IMG_BREAK], [IMG_END] of v7m1 (test_encode.IMAGE_IDS)
    assert proc.image_processor.size["longest_edge"] == 1024 and proc.patch_size == 16


def test_bundled_files_are_what_the_generator_writes(tiny_model_dir, tmp_path):
    """The shipped files are the generator's output byte for byte (deterministic, not stale)."""
    from transformers import AutoConfig

    written = write_processor_files(tmp_path, AutoConfig.from_pretrained(tiny_model_dir),
                                    tiny_model_dir / "tokenizer.model.v7m1")
    assert written == sorted(GENERATED_FILES)
    for name in written:
        assert (tmp_path / name).read_bytes() == (tiny_model_dir / name).read_bytes(), name
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert not {"vocab_file", "is_local", "name_or_path"} & set(config)  # nothing about where it was read


def test_v7m1_parity_bundled_model(tiny_model_dir):
    counts = _parity(tiny_model_dir, tiny_model_dir / "tokenizer.model.v7m1")
    assert counts["chats"] == 2 * len(chats()) == 32
    # 14 images need no resizing (tiny eval: 7 + 2 in the multi-turn; built-in: 48×48, 128×112, 192×128, ...)
    assert counts["exact_images"] == 28
    assert 0 < counts["resized_max"] <= RESIZED_BOUND


def test_tekken_parity_native_convert(tekken_rtn):
    """A converted Mistral-native source with tekken.json: files generated, AutoProcessor picks them (not
    mistral-common's backend) and matches encode_chat_completion."""
    from transformers import TokenizersBackend

    for name in GENERATED_FILES + ("tekken.json",):
        assert (tekken_rtn / name).is_file(), name
    assert type(processor(tekken_rtn).tokenizer) is TokenizersBackend
    assert processor(tekken_rtn).image_token_ids == [10, 12, 13]
    counts = _parity(tekken_rtn, tekken_rtn / "tekken.json")
    assert counts["chats"] == 32 and counts["exact_images"] == 28
    assert 0 < counts["resized_max"] <= RESIZED_BOUND


def test_convert_copies_the_files(tiny_rtn, tiny_model_dir):
    manifest = json.loads((tiny_rtn / "manifest.json").read_text())
    for name in GENERATED_FILES:
        assert (tiny_rtn / name).read_bytes() == (tiny_model_dir / name).read_bytes(), name
        assert name in manifest["side_files"]
    ids = processor(tiny_rtn)(text="[INST]x[IMG][/INST]", images=[np.zeros((16, 32, 3), np.uint8)])["input_ids"]
    assert ids[0].tolist()[-4:] == [10, 10, 15, 4]  # a 32×16 image: one row of two [IMG], [IMG_END]; [/INST]


def test_native_convert_generates_the_files(native_rtn, tiny_model_dir):
    """A Mistral-native source (no HF files) gets the same files the bundled model ships, and they are
    listed in the manifest."""
    manifest = json.loads((native_rtn / "manifest.json").read_text())
    for name in GENERATED_FILES:
        assert (native_rtn / name).read_bytes() == (tiny_model_dir / name).read_bytes(), name
        assert name in manifest["side_files"] and name in manifest["files"]
    assert _compare(processor(native_rtn), native_rtn / "tokenizer.model.v7m1", chats()[0][1]) == (1, 0.0)


def test_source_files_win_over_generated(tiny_model_dir, tmp_path):
    """A source with its own image settings keeps them; only the missing tokenizer group is generated."""
    from transformers import AutoConfig

    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir(), out.mkdir()
    shutil.copyfile(tiny_model_dir / "tokenizer.model.v7m1", src / "tokenizer.model.v7m1")
    own = '{"image_processor_type": "PixtralImageProcessor", "size": {"longest_edge": 512}}\n'
    (src / "preprocessor_config.json").write_text(own)
    written = copy_side_files(src, out, AutoConfig.from_pretrained(tiny_model_dir))
    assert (out / "preprocessor_config.json").read_text() == own
    assert not (out / "processor_config.json").exists()
    assert {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja"} <= set(written)
    assert processor(out).image_processor.size["longest_edge"] == 512
