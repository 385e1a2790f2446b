"""Image decoding and Pixtral's size arithmetic, checked against mistral-common's own code."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from calibration_helpers import huge_jpeg, huge_png, image_bytes, tokenizer
from PIL import Image, ImageFile, ImageOps, PngImagePlugin

from pixtral_quant.calibration import images
from pixtral_quant.errors import InputError

SIZES = [(1, 1), (16, 16), (17, 15), (40, 24), (1023, 1024), (1024, 1025), (1025, 1024), (1411, 1411),
         (1240, 1754), (2000, 10), (10, 5000), (4097, 33), (20000, 20000), (333, 777)]


@pytest.mark.parametrize("kind", ["tekken", "v7m1"])
def test_token_grid_matches_mistral_common(kind):
    encoder = tokenizer(kind).instruct_tokenizer.image_encoder
    for w, h in SIZES:
        cols, rows = encoder._image_to_num_tokens(SimpleNamespace(size=(w, h)))  # reads only .size
        assert images.patch_grid(w, h) == (cols, rows), (w, h)
        assert images.image_token_count(w, h) == rows * (cols + 1)
        assert images.pixtral_size(w, h) == (cols * 16, rows * 16)


def test_capped_size_rounds_like_pixtral():
    assert images.capped_size(1240, 1754) == (724, 1024)  # 1240 / 1.712890625 = 723.9 → 724
    assert images.capped_size(2000, 10) == (1024, 5)
    assert images.capped_size(20000, 3) == (1024, 1)  # never 0 px
    assert images.capped_size(500, 300) == (500, 300)
    assert images.capped_size(1000, 500, max_edge=256) == (256, 128)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P", "L", "CMYK", "1", "RGB"])
def test_to_rgb_equals_mistral_common(mode):
    from mistral_common.tokens.tokenizers.image import _convert_to_rgb

    rng = np.random.default_rng(0)
    rgba = Image.fromarray(rng.integers(0, 256, (12, 20, 4), dtype=np.uint8), "RGBA")
    src = rgba.convert("P") if mode == "P" else rgba if mode == "RGBA" else rgba.convert(mode)
    if mode == "P":
        src.info["transparency"] = 3
    ours = images.to_rgb(src)
    assert ours.mode == "RGB"
    assert np.array_equal(np.asarray(ours), np.asarray(_convert_to_rgb(src)))


def test_transparent_pixels_become_white():
    rgb = images.to_rgb(Image.new("RGBA", (4, 4), (0, 0, 0, 0)))
    assert rgb.getpixel((0, 0)) == (255, 255, 255)


@pytest.mark.parametrize("fmt,expected", [("PNG", "png"), ("JPEG", "jpeg"), ("WEBP", "webp"), ("GIF", "gif")])
def test_decodes_supported_formats(fmt, expected):
    decoded = images.decode(image_bytes("RGB", (33, 17), fmt), "x")
    assert (decoded.format, decoded.size, decoded.image.mode) == (expected, (33, 17), "RGB")
    assert decoded.image.size == (33, 17)
    assert decoded.notes == ()


def test_animated_gif_uses_first_frame_and_says_so():
    frames = [Image.new("RGB", (20, 20), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100)
    decoded = images.decode(buf.getvalue(), "x")
    r, g, b = decoded.image.getpixel((5, 5))
    assert r > 200 and b < 50
    assert "first frame" in decoded.notes[0] and "2 frames" in decoded.notes[0]


@pytest.mark.parametrize("tag", [3, 6, 8])
def test_exif_orientation_is_applied(tag):
    upright = Image.new("RGB", (30, 10), (255, 255, 255))
    upright.paste((255, 0, 0), (0, 0, 10, 10))  # red on the left when viewed
    stored = upright.transpose({3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90,
                                8: Image.Transpose.ROTATE_270}[tag])
    exif = Image.Exif()
    exif[0x0112] = tag
    buf = io.BytesIO()
    stored.save(buf, "JPEG", quality=95, exif=exif.tobytes())
    decoded = images.decode(buf.getvalue(), "x")
    assert decoded.image.size == decoded.size == (30, 10)
    assert decoded.image.getpixel((3, 5))[0] > 200 and decoded.image.getpixel((25, 5))[1] > 200
    assert decoded.notes == (f"EXIF orientation {tag} applied",)
    expected = ImageOps.exif_transpose(Image.open(io.BytesIO(buf.getvalue()))).convert("RGB")
    assert np.array_equal(np.asarray(decoded.image), np.asarray(expected))


def test_cmyk_jpeg_is_converted():
    decoded = images.decode(image_bytes("CMYK", (16, 16), "JPEG"), "x")
    assert decoded.image.mode == "RGB"


def _error(data: bytes) -> str:
    with pytest.raises(InputError) as info:
        images.decode(data, "m.jsonl:7 (sample s)")
    assert info.value.where == "m.jsonl:7 (sample s)" and info.value.fix
    return info.value.message


def test_corrupt_jpeg():
    good = image_bytes("RGB", (64, 64), "JPEG")
    assert "corrupt" in _error(good[:2] + b"\x13" * 200 + good[202:])


def test_truncated_png():
    good = image_bytes("RGB", (64, 64), "PNG", colour=(1, 2, 3), compress_level=0)
    assert "truncated" in _error(good[: len(good) // 2])


def test_pdf_renamed_png_is_named():
    assert "PDF" in _error(b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n")


def test_unsupported_format_is_refused():
    assert "TIFF" in _error(image_bytes("RGB", (8, 8), "TIFF"))
    assert "BMP" in _error(image_bytes("RGB", (8, 8), "BMP"))


def test_empty_file():
    assert "empty" in _error(b"")


def test_bomb_png_is_refused_without_decoding(monkeypatch):
    def no_pixels(self):
        raise AssertionError("the 400 MPix image must not be decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_pixels)
    monkeypatch.setattr(PngImagePlugin.PngImageFile, "getexif", no_pixels)  # it loads the whole image
    message = _error(huge_png(20000, 20000))
    assert "20000x20000" in message and "decompression-bomb" in message


# Decodes stdin's bytes in a fresh process and reports how far its RSS high-water mark (VmHWM, read here, not
# through pixtral_quant) rose, reset just before through /proc/self/clear_refs so the imports' own peak cannot
# hide anything, and the refusal message.
_DECODE_CHILD = """
import json, sys
from pixtral_quant.calibration import images
from pixtral_quant.errors import InputError

def hwm():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))

data = sys.stdin.buffer.read()
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # VmHWM := VmRSS
before, message = hwm(), None
try:
    images.decode(data, "x")
except InputError as exc:
    message = exc.message
print(json.dumps({"grown": hwm() - before, "message": message}))
"""


def test_bomb_png_never_allocates_its_pixels():
    """The pytest process's peak RSS says nothing (models loaded by other tests set it long ago): a fresh process
    decodes the 20000×20000 PNG, whose pixels Pillow would hold in 400 MB (mode 1: a byte per pixel)."""
    proc = subprocess.run([sys.executable, "-c", _DECODE_CHILD], input=huge_png(20000, 20000), capture_output=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    report = json.loads(proc.stdout.decode().splitlines()[-1])
    assert "decompression-bomb" in report["message"]
    assert report["grown"] < 8 * 2**20, report  # the header only: well under 2 % of the pixels


def test_bomb_jpeg_is_drafted_then_resized_like_pixtral():
    decoded = images.decode(huge_jpeg(20000, 20000), "x")
    assert decoded.size == (20000, 20000)
    assert decoded.image.size == (2500, 2500)  # DCT scaling 1/8, still above 1024: Pixtral's resize shrinks it
    assert "DCT scaling" in decoded.notes[0]
    assert images.pixtral_size(*decoded.image.size) == images.pixtral_size(*decoded.size) == (1024, 1024)
    assert decoded.image.getpixel((100, 100)) == (128, 128, 128)


def test_resize_is_a_noop_at_same_size():
    img = Image.new("RGB", (20, 10))
    assert images.resize(img, (20, 10)) is img
    assert images.resize(img, (10, 5)).size == (10, 5)
