"""Shared pieces: the sample description the writer turns into a manifest line, fonts, text layout."""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter, ImageFont

# DejaVu and STIX ship inside matplotlib (free licences, see calibration/README.md); no system fonts,
# so the rendering does not depend on the machine.
FONT_FILES = {
    "sans": "DejaVuSans.ttf", "sans-bold": "DejaVuSans-Bold.ttf", "sans-italic": "DejaVuSans-Oblique.ttf",
    "serif": "DejaVuSerif.ttf", "serif-bold": "DejaVuSerif-Bold.ttf", "serif-italic": "DejaVuSerif-Italic.ttf",
    "mono": "DejaVuSansMono.ttf", "mono-bold": "DejaVuSansMono-Bold.ttf", "stix": "STIXGeneral.ttf",
    "stix-bold": "STIXGeneralBol.ttf",
}
BODY_FONTS = ("sans", "serif", "stix")


@dataclass
class Pic:
    """An image of a sample. fmt: png | jpeg | webp | gif; how: 'path' ({"type": "image", "path"}),
    'image_url' (relative path in an image_url chunk) or 'data' (inline data: URL); save: PIL options;
    frames: extra frames for an animated GIF."""

    image: Image.Image
    fmt: str = "png"
    how: str = "path"
    save: dict = field(default_factory=dict)
    frames: list = field(default_factory=list)


@dataclass
class Item:
    """One sample: turns of (user parts, assistant reply); a user part is a str or a Pic."""

    task: str
    turns: list[tuple[list, str]]
    answer: str | None = None
    system: str | None = None


def single(task: str, pic: Pic, question: str, reply: str, answer: str | None = None, image_first: bool = True) -> Item:
    parts = [pic, question] if image_first else [question, pic]
    return Item(task, [(parts, reply)], answer)


@functools.lru_cache(maxsize=None)
def font(name: str, size: int) -> ImageFont.FreeTypeFont:
    import matplotlib

    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / FONT_FILES[name]), size)


def wrap(text: str, face: ImageFont.FreeTypeFont, width: int) -> list[str]:
    """Greedy word wrap to `width` pixels."""
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and face.getlength(trial) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    return lines + ([line] if line else [])


def paper(rng: random.Random, size: tuple[int, int], tone: str = "white") -> Image.Image:
    base = {"white": 255, "cream": 250, "grey": 238}[tone]
    jitter = rng.randint(-4, 0)
    tint = (base + jitter, base + jitter, max(base + jitter - (6 if tone == "cream" else 0), 0))
    return Image.new("RGB", size, tint)


def scan_look(rng: random.Random, image: Image.Image, angle: float | None = None) -> Image.Image:
    """A page photographed or scanned: slight rotation, blur, uneven light, grey paper."""
    angle = rng.uniform(-2.5, 2.5) if angle is None else angle
    out = image.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=(200, 200, 196))
    out = out.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.8)))
    w, h = out.size
    shade = Image.linear_gradient("L").resize((w, h)).point(lambda v: 255 - v // 6)
    return Image.composite(out, Image.new("RGB", (w, h), (150, 150, 150)), shade)


def draw_lines(draw: ImageDraw.ImageDraw, xy: tuple[int, int], lines: list[str], face, fill,
               spacing: float = 1.35) -> int:
    """Draw lines of text from (x, y); returns the y below the last line."""
    x, y = xy
    step = int(face.size * spacing)
    for line in lines:
        draw.text((x, y), line, font=face, fill=fill)
        y += step
    return y


def flatten(image: Image.Image) -> Image.Image:
    """RGB (or L) for formats without alpha: transparent areas become white, as mistral-common does."""
    if image.mode in ("RGB", "L"):
        return image
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, "WHITE")
    white.paste(rgba, (0, 0), rgba)
    return white.convert("RGB")


def money(value: float, currency: str = "$") -> str:
    return f"{currency}{value:,.2f}" if currency in "$£€" else f"{value:,.2f} {currency}"


def seeded(*parts) -> random.Random:
    """A Random seeded from strings (random.seed(str) is stable across runs and Python versions)."""
    return random.Random(":".join(map(str, parts)))
