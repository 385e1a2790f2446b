"""Tokenization parity: pixtral_quant.calibration.encode against mistral-common's encode_chat_completion.

Every reference below is a ChatCompletionRequest built by hand from mistral-common's own message and chunk
classes and encoded by the tokenizer directly, without going through encode.py. Both real tokenizers are
used: tekken_240911 (Pixtral-12B) and the v7m1 SentencePiece tokenizer (Pixtral Large).

The transformers section documents how transformers 5.23's Pixtral image processors and processor compare
(they do not always agree; see encode.py's module docstring).
"""

from __future__ import annotations

import base64
import functools
import io
import math

import numpy as np
import pytest
import torch
from mistral_common.protocol.instruct.chunk import ImageChunk, TextChunk
from mistral_common.protocol.instruct.messages import AssistantMessage, SystemMessage, UserMessage
from mistral_common.protocol.instruct.request import ChatCompletionRequest
from PIL import Image

from pixtral_quant.calibration.encode import Encoded, collate, encode, pad_images
from pixtral_quant.errors import InputError
from pixtral_quant.loading.tokenizer import bundled_tokenizer_path, open_mistral_tokenizer

KINDS = ("tekken", "v7m1")
# [IMG], [IMG_BREAK], [IMG_END] per tokenizer (formats.md); BOS, [INST], [/INST] are 1, 3, 4 in both.
IMAGE_IDS = {"tekken": (10, 12, 13), "v7m1": (10, 14, 15)}
BOS, INST, INST_END = 1, 3, 4
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


@functools.lru_cache(maxsize=None)
def tok(kind: str, finetuning: bool = False):
    """The bundled mistral-common tokenizer; finetuning=True accepts a final assistant turn."""
    return open_mistral_tokenizer(bundled_tokenizer_path(kind), finetuning=finetuning)


def noise(w: int, h: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    """A W×H random image in `mode` (made from random RGBA, so alpha varies where the mode keeps it)."""
    rgba = np.random.default_rng(seed).integers(0, 256, (h, w, 4), dtype=np.uint8)
    im = Image.fromarray(rgba, "RGBA")
    return im if mode == "RGBA" else im.convert(mode)


def reference(kind: str, messages: list, finetuning: bool = False):
    """mistral-common's own encoding of a hand-built message list: .tokens list[int], .images [3, H, W]."""
    return tok(kind, finetuning).encode_chat_completion(ChatCompletionRequest(messages=messages))


def assert_same(ours: Encoded, ref) -> None:
    """Identical token lists; same number of images, same shapes, pixels within 1e-6, float32."""
    assert ours.tokens == list(ref.tokens)
    assert len(ours.images) == len(ref.images)
    for a, b in zip(ours.images, ref.images):
        assert a.dtype == np.float32
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def pixtral_size(w: int, h: int) -> tuple[int, int]:
    """The Pixtral resize rule, written out independently: (W, H) after capping the longer side at 1024
    (scaled sides rounded with Python's round, at least 1) and raising each side to a multiple of 16."""
    ratio = max(w, h) / 1024
    if ratio > 1:
        w, h = max(round(w / ratio), 1), max(round(h / ratio), 1)
    return math.ceil(w / 16) * 16, math.ceil(h / 16) * 16


def image_block(kind: str, w: int, h: int) -> list[int]:
    """rows × ([IMG] × cols + [IMG_BREAK]) with the last [IMG_BREAK] replaced by [IMG_END]."""
    img, brk, end = IMAGE_IDS[kind]
    cols, rows = w // 16, h // 16
    block = ([img] * cols + [brk]) * rows
    block[-1] = end
    return block


def image_grids(ids: list[int], kind: str) -> list[tuple[int, int]]:
    """(rows, cols) of each [IMG] block in `ids`, in order; asserts every row of a block is equally long."""
    img, brk, end = IMAGE_IDS[kind]
    grids, rows, cols, run = [], 0, None, 0
    for t in ids:
        if t == img:
            run += 1
        elif t in (brk, end):
            assert cols is None or cols == run
            cols, run, rows = run, 0, rows + 1
            if t == end:
                grids.append((rows, cols))
                rows, cols = 0, None
    return grids


# --------------------------------------------------------------------------------------------- parity


def case_single_image():
    im = noise(37, 53)
    ours = [{"role": "user", "content": [{"type": "image", "image": im}, {"type": "text", "text": "What colour?"}]}]
    ref = [UserMessage(content=[ImageChunk(image=im), TextChunk(text="What colour?")])]
    return ours, ref, False


def case_interleaved():
    a, b, c = noise(37, 53, seed=1), noise(1500, 700, seed=2), noise(64, 16, seed=3)
    ours = [{"role": "user", "content": [
        {"type": "text", "text": "First:"}, {"type": "image", "image": a},
        {"type": "text", "text": "second:"}, {"type": "image", "image": b},
        {"type": "image", "image": c}, {"type": "text", "text": "Which differ?"}]}]
    ref = [UserMessage(content=[TextChunk(text="First:"), ImageChunk(image=a), TextChunk(text="second:"),
                                ImageChunk(image=b), ImageChunk(image=c), TextChunk(text="Which differ?")])]
    return ours, ref, False


def case_multi_turn():
    a, b = noise(48, 32, seed=4), noise(37, 53, seed=5)
    ours = [
        {"role": "user", "content": [{"type": "image", "image": a}, {"type": "text", "text": "Shape?"}]},
        {"role": "assistant", "content": "A circle."},
        {"role": "user", "content": [{"type": "text", "text": "And this one?"}, {"type": "image", "image": b}]},
    ]
    ref = [UserMessage(content=[ImageChunk(image=a), TextChunk(text="Shape?")]),
           AssistantMessage(content="A circle."),
           UserMessage(content=[TextChunk(text="And this one?"), ImageChunk(image=b)])]
    return ours, ref, False


def case_system_prompt():
    im = noise(37, 53, seed=6)
    ours = [{"role": "system", "content": "Answer in one word."},
            {"role": "user", "content": [{"type": "image", "image": im}, {"type": "text", "text": "Colour?"}]}]
    ref = [SystemMessage(content="Answer in one word."),
           UserMessage(content=[ImageChunk(image=im), TextChunk(text="Colour?")])]
    return ours, ref, False


def case_final_assistant():
    im = noise(37, 53, seed=7)
    ours = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "image", "image": im}, {"type": "text", "text": "Colour?"}]},
            {"role": "assistant", "content": "red"}]
    ref = [SystemMessage(content="Be brief."),
           UserMessage(content=[ImageChunk(image=im), TextChunk(text="Colour?")]),
           AssistantMessage(content="red")]
    return ours, ref, True


def case_text_chunk_lists():
    """System and assistant content given as several text chunks: mistral-common joins them with a blank
    line (not ""), so a helper that concatenates them itself would break parity."""
    im = noise(16, 16, seed=8)
    ours = [{"role": "system", "content": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "No."}]},
            {"role": "user", "content": [{"type": "image", "image": im}, {"type": "text", "text": "Colour?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "red"}, {"type": "text", "text": "dark"}]}]
    ref = [SystemMessage(content=[TextChunk(text="Be brief."), TextChunk(text="No.")]),
           UserMessage(content=[ImageChunk(image=im), TextChunk(text="Colour?")]),
           AssistantMessage(content=[TextChunk(text="red"), TextChunk(text="dark")])]
    return ours, ref, True


def case_image_modes():
    """RGBA (random alpha), LA, P with an RGBA palette, L, CMYK, and a 1500×700 RGBA that needs resizing."""
    ims = [noise(37, 53, m, seed=9) for m in ("RGBA", "LA", "P", "L", "CMYK")] + [noise(1500, 700, "RGBA", 10)]
    assert ims[2].palette.mode == "RGBA"  # the palette carries alpha: mistral-common composites it over white
    ours = [{"role": "user", "content": [{"type": "image", "image": im} for im in ims]
             + [{"type": "text", "text": "Same?"}]}]
    ref = [UserMessage(content=[ImageChunk(image=im) for im in ims] + [TextChunk(text="Same?")])]
    return ours, ref, False


CASES = {f.__name__.removeprefix("case_"): f for f in (
    case_single_image, case_interleaved, case_multi_turn, case_system_prompt, case_final_assistant,
    case_text_chunk_lists, case_image_modes)}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("kind", KINDS)
def test_encode_matches_mistral_common(kind, case):
    """encode(OpenAI-shaped dicts) == encode_chat_completion(hand-built request): ids, and pixels to 1e-6."""
    ours, ref, finetuning = CASES[case]()
    encoded = encode(tok(kind, finetuning), ours)
    assert_same(encoded, reference(kind, ref, finetuning))
    n_images = sum(isinstance(c, ImageChunk) for m in ref if isinstance(m.content, list) for c in m.content)
    assert n_images > 0 and len(encoded.images) == n_images


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("wh, expect", [
    ((16, 16), (16, 16)),
    ((37, 53), (48, 64)),        # small odd sizes go up to multiples of 16
    ((1500, 700), (1024, 480)),  # 700 / 1.4648 = 477.9 → 478 → 480
    ((1025, 481), (1024, 496)),  # 481 / 1.00098 = 480.53 → rounds to 481 → 31 rows (a floor would give 30)
    ((961, 2048), (480, 1024)),  # 961 / 2 = 480.5 → Python rounds half to even: 480 → 30 columns
    ((3000, 20), (1024, 16)),    # extreme aspect: the short side stays ≥ 1 pixel
])
def test_image_tokens_follow_the_pixtral_rule(kind, wh, expect):
    """[BOS][INST] + rows × ([IMG] × cols + [IMG_BREAK]) (last break → [IMG_END]) + [/INST], with the
    tokenizer's own ids, and a float32 [3, H, W] array of the size the resize rule gives."""
    assert pixtral_size(*wh) == expect
    ids = tok(kind).instruct_tokenizer.image_encoder.special_ids
    assert (ids.img, ids.img_break, ids.img_end) == IMAGE_IDS[kind]
    enc = encode(tok(kind), [{"role": "user", "content": [{"type": "image", "image": Image.new("RGB", wh)}]}])
    w, h = expect
    assert enc.tokens == [BOS, INST] + image_block(kind, w, h) + [INST_END]
    assert [im.shape for im in enc.images] == [(3, h, w)]
    assert enc.images[0].dtype == np.float32


def test_pixels_are_clip_normalised_rgb_independently():
    """Checked without mistral-common: an aligned RGB image gives (x/255 − mean)/std, channels first, to 1e-6;
    transparent pixels become white."""
    rgb = noise(32, 48, "RGB", seed=11)
    got = encode(tok("v7m1"), [{"role": "user", "content": [{"type": "image", "image": rgb}]}]).images[0]
    want = ((np.asarray(rgb, dtype=np.float32) / 255 - MEAN) / STD).transpose(2, 0, 1)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)

    rgba = noise(32, 48, "RGBA", seed=12)
    got = encode(tok("v7m1"), [{"role": "user", "content": [{"type": "image", "image": rgba}]}]).images[0]
    a = np.asarray(rgba, dtype=np.float32)
    over_white = a[..., :3] * (a[..., 3:] / 255) + 255 * (1 - a[..., 3:] / 255)
    want = ((over_white / 255 - MEAN) / STD).transpose(2, 0, 1)
    np.testing.assert_allclose(got, want, rtol=0, atol=1.01 / 255 / STD.min())  # PIL composites in uint8


# --------------------------------------------------------------------------------------------- collate


def test_collate_shapes_dtypes_and_image_order():
    """input_ids/attention_mask int64 [B, T] right-padded with 0; pixel_values float32 [N, 3, Hmax, Wmax]
    zero-padded; image_sizes int64 [N, 2] (H, W); images in the order of their [IMG] blocks in the batch."""
    t = tok("v7m1")
    a, b, c = noise(37, 53, seed=13), noise(64, 16, seed=14), noise(32, 32, seed=15)
    first = encode(t, [{"role": "user", "content": [{"type": "image", "image": a}, {"type": "text", "text": "x"},
                                                    {"type": "image", "image": b}]}])
    second = encode(t, [{"role": "user", "content": [{"type": "text", "text": "a longer question here"},
                                                     {"type": "image", "image": c}]}])
    batch = collate([first, second])
    n = max(len(first.tokens), len(second.tokens))
    assert set(batch) == {"input_ids", "attention_mask", "pixel_values", "image_sizes"}
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (2, n)
    assert batch["input_ids"].dtype == batch["attention_mask"].dtype == torch.int64
    for row, e in enumerate((first, second)):
        assert batch["input_ids"][row, : len(e.tokens)].tolist() == e.tokens
        assert batch["attention_mask"][row].tolist() == [1] * len(e.tokens) + [0] * (n - len(e.tokens))
        assert batch["input_ids"][row, len(e.tokens):].eq(0).all()
    assert batch["pixel_values"].shape == (3, 3, 64, 64) and batch["pixel_values"].dtype == torch.float32
    assert batch["image_sizes"].dtype == torch.int64
    assert batch["image_sizes"].tolist() == [[64, 48], [16, 64], [32, 32]]
    for i, im in enumerate(first.images + second.images):
        h, w = im.shape[1:]
        assert torch.equal(batch["pixel_values"][i, :, :h, :w], torch.from_numpy(im))
        assert batch["pixel_values"][i, :, h:, :].eq(0).all() and batch["pixel_values"][i, :, :, w:].eq(0).all()
    # Llava fills [IMG] positions of the flattened batch with features of image 0, 1, ... in turn.
    grids = image_grids(batch["input_ids"].flatten().tolist(), "v7m1")
    assert grids == [(h // 16, w // 16) for h, w in batch["image_sizes"].tolist()]

    text_only = collate([encode(t, [{"role": "user", "content": "hi"}])])
    assert set(text_only) == {"input_ids", "attention_mask"}
    assert set(pad_images(first.images)) == {"pixel_values", "image_sizes"}


@pytest.fixture(scope="module")
def tiny_llava():
    """LlavaForConditionalGeneration from fixtures.train.tiny_config(), random weights, fp32, eval."""
    from transformers import LlavaForConditionalGeneration

    from pixtral_quant.fixtures.train import tiny_config

    torch.manual_seed(0)
    return LlavaForConditionalGeneration(tiny_config()).eval()


@pytest.mark.parametrize("sizes", [[(37, 53)], [(37, 53), (64, 16)]], ids=["1-image", "2-images"])
def test_tiny_llava_accepts_collated_batch(tiny_llava, sizes):
    """The number of [IMG] tokens equals the number of image features (per image: rows × cols), and a
    forward pass gives finite logits [1, T, 32768]; one [IMG] fewer makes Llava refuse the batch."""
    ims = [noise(w, h, seed=20 + i) for i, (w, h) in enumerate(sizes)]
    msgs = [{"role": "user", "content": [{"type": "image", "image": im} for im in ims]
             + [{"type": "text", "text": "Describe."}]}]
    batch = collate([encode(tok("v7m1"), msgs)])
    with torch.no_grad():
        feats = tiny_llava.model.get_image_features(pixel_values=batch["pixel_values"],
                                                    image_sizes=batch["image_sizes"]).pooler_output
        per_image = [f.shape[0] for f in feats]
        assert per_image == [(h // 16) * (w // 16) for h, w in batch["image_sizes"].tolist()]
        assert int((batch["input_ids"] == 10).sum()) == sum(per_image)
        logits = tiny_llava(**batch).logits
        assert logits.shape == (1, batch["input_ids"].shape[1], 32768)
        assert torch.isfinite(logits).all()

        broken = dict(batch, input_ids=batch["input_ids"].clone())
        first_img = int((broken["input_ids"][0] == 10).nonzero()[0])
        broken["input_ids"][0, first_img] = 1032  # an ordinary text token
        with pytest.raises(ValueError, match="[Ii]mage"):
            tiny_llava(**broken)


# ---------------------------------------------------------------------------------------- transformers


def hf_processors():
    """transformers' Pixtral image processors: torchvision backend and PIL backend (defaults: 16 / 1024)."""
    from transformers import PixtralImageProcessor
    from transformers.models.pixtral.image_processing_pil_pixtral import PixtralImageProcessorPil

    return {"torchvision": PixtralImageProcessor(), "pil": PixtralImageProcessorPil()}


def hf_pixels(proc, im: Image.Image) -> tuple[np.ndarray, list[int]]:
    """(pixel_values float32 [3, H, W], [H, W]) from a transformers image processor, one image."""
    out = proc(im, return_tensors="np")
    return np.asarray(out["pixel_values"][0], dtype=np.float32), [int(x) for x in out["image_sizes"][0]]


def ours(im: Image.Image) -> np.ndarray:
    return encode(tok("v7m1"), [{"role": "user", "content": [{"type": "image", "image": im}]}]).images[0]


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "L", "CMYK"])
def test_hf_image_processor_agrees_without_resizing(mode):
    """A 32×48 image (already patch-aligned): both transformers backends give mistral-common's size and its
    pixels within 1e-6 (measured: 2.4e-7 torchvision, exactly 0 PIL), alpha composited over white."""
    im = noise(32, 48, mode, seed=30)
    ref = ours(im)
    for name, proc in hf_processors().items():
        px, size = hf_pixels(proc, im)
        assert size == [48, 32], name
        np.testing.assert_allclose(px, ref, rtol=0, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("wh, hw, min_diff", [((37, 53), [64, 48], 0.3), ((1500, 700), [480, 1024], 1.0)])
def test_hf_image_processor_resamples_differently(wh, hw, min_diff):
    """Same output size, different bicubic: OpenCV INTER_CUBIC (mistral-common) vs torchvision / PIL.
    Measured max |difference|: 0.53 for 37×53 → 48×64 and 2.0 for 1500×700 → 1024×480 (normalised units)."""
    im = noise(*wh, seed=31)
    ref = ours(im)
    for name, proc in hf_processors().items():
        px, size = hf_pixels(proc, im)
        assert size == hw == list(ref.shape[1:]), name
        assert np.abs(px - ref).max() > min_diff, name


def test_hf_image_processor_floors_where_mistral_common_rounds():
    """1025×481: the scaled height is 481 · 1024/1025 = 480.53. mistral-common rounds to 481 → 31 patch rows
    (H 496, 31 × 65 = 2015 image tokens); transformers floors to 480 → 30 rows (H 480, 1950 tokens)."""
    im = Image.new("RGB", (1025, 481), (200, 30, 90))
    assert ours(im).shape == (3, 496, 1024)
    for name, proc in hf_processors().items():
        assert hf_pixels(proc, im)[1] == [480, 1024], name
    # The size function PixtralProcessor also uses to count placeholder tokens: (cols + 1) × rows.
    from transformers.models.pixtral.image_processing_pixtral import get_resize_output_image_size

    h, w = get_resize_output_image_size(np.zeros((481, 1025, 3)), size=(1024, 1024), patch_size=(16, 16))
    assert (h, w) == (480, 1024) and (w // 16 + 1) * (h // 16) == 1950
    assert len(image_block("v7m1", 1024, 496)) == 2015


def test_hf_drops_palette_alpha():
    """A "P" image whose palette carries alpha: mistral-common composites it over white, transformers converts
    P → RGB and drops the alpha (its pixels equal ours for im.convert("RGB"), and differ from ours by > 1)."""
    im = noise(32, 48, "P", seed=32)
    assert im.palette.mode == "RGBA" and "A" not in im.getbands()
    ref, dropped = ours(im), ours(im.convert("RGB"))
    for name, proc in hf_processors().items():
        px, _ = hf_pixels(proc, im)
        np.testing.assert_allclose(px, dropped, rtol=0, atol=1e-6, err_msg=name)
        assert np.abs(px - ref).max() > 1.0, name


def png_base64(im: Image.Image) -> str:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_transformers_mistral_common_backend_matches():
    """transformers' MistralCommonBackend (tokenization_mistral_common) wraps mistral-common: same ids and
    pixels as encode for a single image given as base64 PNG (v7m1 only: opening tekken again costs ~2 s)."""
    from transformers.tokenization_mistral_common import MistralCommonBackend

    im = noise(37, 53, seed=33)
    backend = MistralCommonBackend(tokenizer_path=str(bundled_tokenizer_path("v7m1")))
    out = backend.apply_chat_template(
        [{"role": "user", "content": [{"type": "image", "base64": png_base64(im)}, {"type": "text", "text": "Hi"}]}],
        return_dict=True, return_tensors="pt")
    mine = encode(tok("v7m1"), [{"role": "user", "content": [{"type": "image", "image": im},
                                                           {"type": "text", "text": "Hi"}]}])
    assert out["input_ids"][0].tolist() == mine.tokens
    np.testing.assert_allclose(out["pixel_values"][0].numpy(), mine.images[0], rtol=0, atol=1e-6)
    assert out["image_sizes"].tolist() == [[64, 48]]


@pytest.mark.slow
def test_pixtral_processor_token_ids_with_tekken():
    """PixtralProcessor (tekken.json converted to a Hugging Face tokenizer, ≈ 8 s): ids equal ours when the
    image sizes agree (even where pixels differ), and are 65 shorter (one patch row) for 1025×481."""
    from transformers import PixtralImageProcessor, PixtralProcessor
    from transformers.integrations.mistral import convert_tekken_tokenizer

    hf_tok = convert_tekken_tokenizer(str(bundled_tokenizer_path("tekken")))
    proc = PixtralProcessor(image_processor=PixtralImageProcessor(), tokenizer=hf_tok, patch_size=16)
    for sizes, shorter in (([(32, 48)], 0), ([(37, 53), (64, 16)], 0), ([(1025, 481)], 65)):
        ims = [noise(w, h, seed=40 + i) for i, (w, h) in enumerate(sizes)]
        mine = encode(tok("tekken"), [{"role": "user", "content": [{"type": "image", "image": im} for im in ims]
                                       + [{"type": "text", "text": "What is this?"}]}])
        text = "<s>[INST]" + "[IMG]" * len(ims) + "What is this?[/INST]"
        ids = proc(text=text, images=ims, return_tensors="pt", add_special_tokens=False)["input_ids"][0].tolist()
        assert len(mine.tokens) - len(ids) == shorter
        if not shorter:
            assert ids == mine.tokens


# --------------------------------------------------------------------------------------------- errors

GOOD = {"role": "user", "content": "Hello"}


@pytest.mark.parametrize("bad, says", [
    ({"role": "user", "content": []}, "no text and no image"),
    ({"role": "user", "content": ""}, "no text and no image"),
    ({"role": "user", "content": "   "}, "no text and no image"),
    ({"role": "user", "content": [{"type": "text", "text": ""}]}, "no text and no image"),
    ({"role": "assistant", "content": ""}, "no text and no image"),
    ({"role": "user", "content": None}, "no content"),
    ({"role": "user"}, "no content"),
    ({"role": "tool", "content": "x"}, "role 'tool'"),
    ({"role": "User", "content": "x"}, "role 'User'"),
    ({"content": "x"}, "role None"),
    ({"role": "user", "content": [{"type": "audio", "audio": b""}]}, "type 'audio'"),
    ({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x.png"}}]}, "type 'image_url'"),
    ({"role": "user", "content": [{"text": "no type"}]}, "type None"),
    ({"role": "user", "content": ["bare string"]}, "type 'str'"),
    ({"role": "user", "content": [{"type": "image", "image": np.zeros((16, 16, 3))}]}, "not a PIL image"),
    ({"role": "assistant", "content": [{"type": "image", "image": Image.new("RGB", (16, 16))}]}, "user messages"),
    ({"role": "system", "content": [{"type": "audio"}]}, "type 'audio'"),
])
def test_bad_message_raises_input_error_naming_the_index(bad, says):
    """InputError whose `where` is messages[1] (the bad message), with a message saying what is wrong."""
    with pytest.raises(InputError) as err:
        encode(tok("v7m1"), [GOOD, bad, GOOD])
    assert err.value.where == "messages[1]"
    assert "messages[1]" in str(err.value) and says in err.value.message
    assert err.value.fix


def test_error_where_uses_the_callers_label_and_mistral_common_rejections_are_input_errors():
    with pytest.raises(InputError) as err:
        encode(tok("v7m1"), [{"role": "user", "content": []}], where="calib.jsonl:7")
    assert err.value.where == "calib.jsonl:7[0]"
    # A final assistant turn in serving mode: mistral-common's own error, re-raised with the fix.
    with pytest.raises(InputError, match="finetuning=True"):
        encode(tok("v7m1"), [GOOD, {"role": "assistant", "content": "Hi."}])
    with pytest.raises(ValueError):
        collate([])
