"""Image bytes → the RGB picture Pixtral sees, and Pixtral's size arithmetic.

Decoding follows mistral-common (what `encode_chat_completion` does to a PIL image) so that handing our
decoded image to it gives the same pixels as handing it the raw file:

- formats: JPEG (and MPO, the multi-picture JPEG phones write), PNG, WebP, GIF. Anything else Pillow
  might open (TIFF, BMP, PDF renamed .png, ...) is refused with a fix; animated GIF/WebP/PNG use their
  first frame, and say so in the notes.
- colour: exactly mistral-common's `_convert_to_rgb`: RGB stays; any other mode is converted to RGBA and
  composited over white (so transparent areas are white, CMYK/P/L/LA become RGB).
- EXIF orientation is applied (mistral-common does not; a phone photo would otherwise be seen sideways).
- size: the longest edge is capped at 1024 with round(), then each side goes up to a multiple of 16
  (`pixtral_size`); one [IMG] token per 16×16 patch plus one [IMG_BREAK]/[IMG_END] per row.

Decompression-bomb policy (chosen so a 20000×20000 file never allocates its 400 MPix):
Pillow's own guard is lifted only while the header is read; then our limit applies. Up to
`MAX_DECODE_PIXELS` (32 MPix) the image is decoded in full (same pixels as mistral-common). Above it a JPEG
is decoded with DCT scaling (`Image.draft`, 1/2, 1/4 or 1/8 — the smallest scale whose longest edge is
still ≥ 1024, so Pixtral's resize still only shrinks it) and a note says so; any other format is refused
with an InputError that names the sample and says to downscale it. Peak memory is therefore bounded by
the limit (≈ 100 MB of RGB, plus mistral-common's float32 copy), whatever the header claims.
"""

from __future__ import annotations

import io
import math
import struct
import threading
from contextlib import contextmanager
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InputError

PATCH = 16
MAX_EDGE = 1024
MAX_DECODE_PIXELS = 32_000_000

# Pillow format name → the name we report. Everything else is refused.
SUPPORTED_FORMATS = {"JPEG": "jpeg", "MPO": "jpeg", "PNG": "png", "WEBP": "webp", "GIF": "gif"}
# (offset, bytes) that files people mistake for images start with, to say what a refused file really is.
MAGIC = {
    (0, b"%PDF"): "a PDF document",
    (0, b"PK\x03\x04"): "a ZIP archive (e.g. .docx/.xlsx)",
    (0, b"<svg"): "an SVG drawing",
    (0, b"<?xml"): "an XML/SVG file",
    (0, b"<!DOCTYPE"): "an HTML page",
    (0, b"<html"): "an HTML page",
    (0, b"II*\x00"): "a TIFF image",
    (0, b"MM\x00*"): "a TIFF image",
    (0, b"BM"): "a BMP image",
    (4, b"ftyp"): "an ISO media file (HEIC/AVIF/MP4)",
}
# The exceptions Pillow's decoders raise on damaged data (no bare except: anything else is a bug).
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, TypeError,
                 Image.DecompressionBombError)
FIX_CONVERT = "re-export the image as PNG or JPEG (e.g. `magick in.x out.png`, or open and save it in any viewer)"
_BOMB_LOCK = threading.Lock()


@dataclass(frozen=True)
class Decoded:
    """image: PIL RGB, upright; format: 'jpeg'|'png'|'webp'|'gif'; size: (W, H) of the file's picture
    after EXIF orientation, before any reduction; notes: what was done beyond a plain decode."""

    image: Image.Image
    format: str
    size: tuple[int, int]
    notes: tuple[str, ...] = ()


def capped_size(width: int, height: int, max_edge: int = MAX_EDGE) -> tuple[int, int]:
    """(W, H) after mistral-common's cap: longest edge ≤ max_edge, sides rounded, never below 1 px."""
    ratio = max(width / max_edge, height / max_edge)
    if ratio <= 1:
        return width, height
    return max(round(width / ratio), 1), max(round(height / ratio), 1)


def patch_grid(width: int, height: int, max_edge: int = MAX_EDGE, patch: int = PATCH) -> tuple[int, int]:
    """(columns, rows) of 16-px patches Pixtral makes of a width × height picture."""
    w, h = capped_size(width, height, max_edge)
    return (w - 1) // patch + 1, (h - 1) // patch + 1


def pixtral_size(width: int, height: int, max_edge: int = MAX_EDGE) -> tuple[int, int]:
    """(W, H) in pixels of the array the vision tower gets: the patch grid × 16."""
    cols, rows = patch_grid(width, height, max_edge)
    return cols * PATCH, rows * PATCH


def image_token_count(width: int, height: int, max_edge: int = MAX_EDGE) -> int:
    """Tokens one image costs: rows × ([IMG] × cols + [IMG_BREAK]); the last break is [IMG_END]."""
    cols, rows = patch_grid(width, height, max_edge)
    return rows * (cols + 1)


def to_rgb(image: Image.Image) -> Image.Image:
    """mistral-common's conversion: RGB unchanged; else via RGBA, composited over white."""
    if image.mode == "RGB":
        return image
    rgba = image if image.mode == "RGBA" else image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, "WHITE")
    white.paste(rgba, (0, 0), rgba)
    return white.convert("RGB")


def sniff(data: bytes) -> str | None:
    """What a file really is, from its first bytes, when it is something people mistake for an image."""
    return next((what for (at, magic), what in MAGIC.items() if data[at: at + len(magic)] == magic), None)


def decode(data: bytes, where: str) -> Decoded:
    """Encoded image bytes → Decoded (RGB, upright, first frame), or InputError naming `where`."""
    image = _open(data, where)
    fmt = _check_format(image, data, where)
    header = image.size
    image, reduced = _reduce_if_huge(image, where)  # first: it needs only the header
    try:
        notes = _frame_notes(image)
        image.load()  # before EXIF: Pillow's PNG getexif() would load the full image anyway
        size = _oriented_size(image, header)
        upright, turned = _apply_orientation(image)
        rgb = to_rgb(upright)
    except DECODE_ERRORS as exc:
        raise InputError(f"the {fmt.upper()} data is corrupt or truncated ({exc})", where=where,
                         fix=f"replace the file with an intact copy, or {FIX_CONVERT}") from None
    return Decoded(rgb, fmt, size, notes + reduced + turned)


def resize(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Downsize an RGB image to size (W, H) for the token budget (Lanczos: keeps text legible)."""
    if image.size == size:
        return image
    return image.resize(size, Image.Resampling.LANCZOS)


@contextmanager
def _pillow_guard_lifted():
    """Pillow refuses headers above 2 × MAX_IMAGE_PIXELS before we can look at them; we apply our own
    limit (which can draft a huge JPEG instead of refusing it), so its check is off while opening."""
    with _BOMB_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _open(data: bytes, where: str) -> Image.Image:
    if not data:
        raise InputError("the image file is empty (0 bytes)", where=where, fix="replace it with the real image")
    try:
        with _pillow_guard_lifted():
            return Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, *DECODE_ERRORS) as exc:
        what = sniff(data)
        if what:
            raise InputError(f"this is {what}, not an image", where=where, fix=FIX_CONVERT) from None
        # Pillow's "cannot identify image file <_io.BytesIO object at 0x...>" says nothing more than we do.
        detail = "" if isinstance(exc, UnidentifiedImageError) else f" ({exc})"
        raise InputError(f"not a readable image: corrupt, truncated or an unknown format{detail}", where=where,
                         fix=f"replace the file with an intact copy, or {FIX_CONVERT}") from None


def _check_format(image: Image.Image, data: bytes, where: str) -> str:
    fmt = SUPPORTED_FORMATS.get(image.format or "")
    if fmt is None:
        what = sniff(data) or f"a {image.format} file"
        raise InputError(f"this is {what}; Pixtral inputs are JPEG, PNG, WebP or GIF", where=where, fix=FIX_CONVERT)
    return fmt


def _frame_notes(image: Image.Image) -> tuple[str, ...]:
    frames = getattr(image, "n_frames", 1)
    return (f"animated {image.format} with {frames} frames: only the first frame is used",) if frames > 1 else ()


def _orientation(image: Image.Image) -> int:
    return image.getexif().get(0x0112, 1) if hasattr(image, "getexif") else 1


def _oriented_size(image: Image.Image, size: tuple[int, int]) -> tuple[int, int]:
    w, h = size
    return (h, w) if _orientation(image) in (5, 6, 7, 8) else (w, h)  # these orientations swap the axes


def _apply_orientation(image: Image.Image) -> tuple[Image.Image, tuple[str, ...]]:
    tag = _orientation(image)
    if tag in (None, 1):
        return image, ()
    return ImageOps.exif_transpose(image), (f"EXIF orientation {tag} applied",)


def _reduce_if_huge(image: Image.Image, where: str) -> tuple[Image.Image, tuple[str, ...]]:
    """Apply the decompression-bomb policy (module docstring) before any pixel is decoded."""
    w, h = image.size
    if w * h <= MAX_DECODE_PIXELS:
        return image, ()
    if image.format in ("JPEG", "MPO"):
        scale = MAX_EDGE / max(w, h)  # draft keeps the result ≥ the requested size
        image.draft("RGB", (math.ceil(w * scale), math.ceil(h * scale)))
        dw, dh = image.size
        if dw * dh <= MAX_DECODE_PIXELS:
            note = f"huge JPEG {w}x{h} decoded at {dw}x{dh} (DCT scaling) before Pixtral's resize"
            return image, (note,)
    raise InputError(
        f"image is {w}x{h} ({w * h / 1e6:.0f} MPix), above the {MAX_DECODE_PIXELS / 1e6:.0f} MPix decode limit "
        "(decompression-bomb guard)",
        where=where,
        fix="downscale it so its longest edge is at most 1024 px (Pixtral resizes to that anyway), "
            "e.g. `magick in.png -resize 1024x1024 out.png`, or save it as JPEG, which is read at reduced scale",
    )
