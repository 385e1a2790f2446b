"""Helpers shared by tests/test_calibration_*.py: cached tokenizers, image bytes, manifests, huge files.

The huge files are built without ever holding their pixels, so the bomb tests cost ~2 MB, not 400 MPix.
"""

from __future__ import annotations

import functools
import io
import json
import struct
import zlib
from pathlib import Path

from PIL import Image


@functools.lru_cache(maxsize=None)
def tokenizer(kind: str):
    """A finetuning-mode MistralTokenizer ('tekken' takes seconds to open: opened once per session)."""
    from pixtral_quant.loading.tokenizer import bundled_tokenizer_path, open_mistral_tokenizer

    return open_mistral_tokenizer(bundled_tokenizer_path(kind), finetuning=True)


def image_bytes(mode: str = "RGB", size=(40, 24), fmt: str = "PNG", colour=None, **save) -> bytes:
    colour = colour if colour is not None else {"RGB": (200, 30, 30), "RGBA": (10, 200, 10, 128), "L": 90,
                                                 "LA": (90, 120), "CMYK": (0, 200, 200, 0)}.get(mode, 1)
    buf = io.BytesIO()
    Image.new(mode, size, colour).save(buf, fmt, **save)
    return buf.getvalue()


def turn(*parts, answer: str = "ok") -> list[dict]:
    """[user message of parts, assistant answer]; a part is text or {'path': ...} / {'url': ...}."""
    content = []
    for part in parts:
        if isinstance(part, str):
            content.append({"type": "text", "text": part})
        elif "url" in part:
            content.append({"type": "image_url", "image_url": {"url": part["url"]}})
        else:
            content.append({"type": "image", "path": part["path"]})
    return [{"role": "user", "content": content}, {"role": "assistant", "content": answer}]


def write_manifest(folder: Path, rows: list, images: dict[str, bytes] | None = None) -> Path:
    """folder/manifest.jsonl from rows (dicts are dumped, strings written verbatim) and folder/images/*."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for name, data in (images or {}).items():
        (folder / "images" / name).write_bytes(data)
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path = folder / "manifest.jsonl"
    path.write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")
    return path


def sample_row(sid: str, *parts, answer: str = "ok") -> dict:
    return {"id": sid, "messages": turn(*parts, answer=answer)}


def huge_jpeg(width: int, height: int) -> bytes:
    """A baseline greyscale JPEG whose 8×8 blocks are all flat mid-grey: 2 bits per block (DC diff 0, EOB),
    with one-code Huffman tables. 20000×20000 is 1.5 MB and was never a pixel array."""
    def segment(marker: int, payload: bytes) -> bytes:
        return b"\xff" + bytes([marker]) + struct.pack(">H", len(payload) + 2) + payload

    one_code = bytes([1] + [0] * 15)  # a single code of length 1 ("0") for symbol 0
    header = (segment(0xDB, b"\x00" + b"\x01" * 64)
              + segment(0xC0, struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00")
              + segment(0xC4, b"\x00" + one_code + b"\x00") + segment(0xC4, b"\x10" + one_code + b"\x00")
              + segment(0xDA, b"\x01\x01\x00\x00\x3f\x00"))
    blocks = ((width + 7) // 8) * ((height + 7) // 8)
    return b"\xff\xd8" + header + b"\x00" * ((2 * blocks + 7) // 8) + b"\xff\xd9"


def huge_png(width: int, height: int) -> bytes:
    """A 1-bit PNG of zeros compressed row by row (20000×20000 is ~50 KB)."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    comp, row = zlib.compressobj(9), b"\x00" * (1 + (width + 7) // 8)
    body = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
