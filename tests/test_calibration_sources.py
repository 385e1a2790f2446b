"""User datasets that are not manifests: image folders with captions, `datasets` saved to disk."""

from __future__ import annotations

import json
import sys

import pytest
from calibration_helpers import image_bytes, tokenizer

from pixtral_quant.calibration.dataset import list_samples, load_set
from pixtral_quant.calibration.fetch import read_bytes
from pixtral_quant.calibration.sources import read_folder
from pixtral_quant.errors import InputError, UsageError


def _folder(tmp_path, captions_name: str, text: str):
    for name, size in (("a.png", (20, 20)), ("b.jpg", (40, 30))):
        (tmp_path / name).write_bytes(image_bytes("RGB", size, "PNG" if name.endswith("png") else "JPEG"))
    (tmp_path / captions_name).write_text(text, encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize("name,text", [
    ("captions.tsv", "a.png\tA red square.\nb.jpg\tA red, wide box.\n"),
    ("captions.csv", "a.png,A red square.\nb.jpg,\"A red, wide box.\"\n"),
    ("captions.jsonl", json.dumps({"file": "a.png", "caption": "A red square."}) + "\n"
     + json.dumps({"image": "b.jpg", "text": "A red, wide box.", "prompt": "What is it?"}) + "\n"),
])
def test_folder_with_captions(tmp_path, name, text):
    samples = read_folder(_folder(tmp_path, name, text))
    assert [s.id for s in samples] == ["a.png", "b.jpg"]
    assert samples[1].messages[1] == {"role": "assistant", "content": "A red, wide box."}
    prompts = [s.messages[0]["content"][1]["text"] for s in samples]
    assert prompts == ["Describe this image.", "What is it?" if name.endswith(".jsonl") else "Describe this image."]
    assert read_bytes(samples[1].image_refs()[0], samples[1].where) == (tmp_path / "b.jpg").read_bytes()


def test_folder_spec_through_load_set(tmp_path):
    """The folder's samples are counted under task "caption" with the tokens mistral-common's own
    encode_chat_completion gives each (image + prompt + caption)."""
    from mistral_common.protocol.instruct.chunk import ImageChunk, TextChunk
    from mistral_common.protocol.instruct.messages import AssistantMessage, UserMessage
    from mistral_common.protocol.instruct.request import ChatCompletionRequest
    from PIL import Image

    folder = _folder(tmp_path, "captions.tsv", "a.png\tA.\nb.jpg\tB.\n")
    cset = load_set(str(folder), "v7m1")
    total = image_total = 0
    for name, caption in (("a.png", "A."), ("b.jpg", "B.")):
        request = ChatCompletionRequest(messages=[
            UserMessage(content=[ImageChunk(image=Image.open(folder / name)), TextChunk(text="Describe this image.")]),
            AssistantMessage(content=caption)])
        ids = tokenizer("v7m1").encode_chat_completion(request).tokens
        total += len(ids)
        image_total += sum(t in (10, 14, 15) for t in ids)  # v7m1's [IMG], [IMG_BREAK], [IMG_END]
    assert image_total == 2 * (2 + 1) + 2 * (3 + 1)  # 20×20 px: 2×2 patches; 40×30 px: 3 cols × 2 rows
    assert cset.stats.samples == 2 and cset.stats.image_tokens == image_total
    assert cset.stats.per_task == {"caption": {"samples": 2, "images": 2, "tokens": total,
                                               "image_token_share": round(image_total / total, 3)}}


def test_uncaptioned_image_and_missing_image(tmp_path):
    folder = _folder(tmp_path, "captions.tsv", "a.png\tA.\n")
    with pytest.raises(InputError, match="have no caption"):
        read_folder(folder)
    (folder / "captions.tsv").write_text("a.png\tA.\nb.jpg\tB.\nc.png\tC.\n")
    with pytest.raises(InputError) as info:
        read_folder(folder)
    assert info.value.where.endswith("captions.tsv:3") and "does not exist" in info.value.message


def test_folder_without_captions(tmp_path):
    (tmp_path / "a.png").write_bytes(image_bytes())
    with pytest.raises(InputError, match="no manifest.jsonl and no captions"):
        list_samples(str(tmp_path))


def test_options_that_do_not_apply(tmp_path):
    with pytest.raises(UsageError, match="hf: datasets only"):
        list_samples("calib", image_column="image")
    with pytest.raises(UsageError, match="folder of images only"):
        list_samples("calib", captions="x.tsv")


@pytest.fixture(scope="module")
def saved_dataset(tmp_path_factory):
    datasets = pytest.importorskip("datasets")
    from PIL import Image

    out = tmp_path_factory.mktemp("hf") / "ds"
    features = datasets.Features({"picture": datasets.Image(), "caption": datasets.Value("string"),
                                  "question": datasets.Value("string")})
    data = {"picture": [Image.new("RGB", (30 + 16 * i, 20), (40 * i, 0, 0)) for i in range(3)],
            "caption": ["zero", "one", "two"], "question": ["Q0?", "Q1?", "Q2?"]}
    datasets.Dataset.from_dict(data, features=features).save_to_disk(str(out))
    return out


def test_hf_dataset_on_disk(saved_dataset):
    cset = load_set(f"hf:{saved_dataset}", "v7m1", image_column="picture", text_column="caption",
                    prompt_column="question")
    assert len(cset) == 3 and cset.stats.images == 3
    messages = cset.messages(2)
    assert messages[0]["content"][1]["text"] == "Q2?" and messages[1]["content"] == "two"
    assert messages[0]["content"][0]["image"].size == (62, 20)
    assert cset.stats.size_histogram == {"<32": 1, "32-127": 2}  # 30, 46 and 62 px wide


def test_hf_dataset_needs_columns(saved_dataset):
    pytest.importorskip("datasets")
    with pytest.raises(UsageError, match="--image-column and --text-column"):
        list_samples(f"hf:{saved_dataset}")
    with pytest.raises(UsageError) as info:
        list_samples(f"hf:{saved_dataset}", image_column="img", text_column="caption")
    assert "picture" in info.value.fix


def test_hf_without_datasets_names_the_extra(monkeypatch, tmp_path):
    from pixtral_quant.calibration import sources
    from pixtral_quant.errors import MissingDependencyError

    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    sources._hf_dataset.cache_clear()
    with pytest.raises(MissingDependencyError) as info:
        list_samples(f"hf:{tmp_path}", image_column="i", text_column="t")
    assert "pixtral-quant[datasets]" in info.value.fix
