"""The built-in sets: coverage, size, README statistics, and parity with mistral-common's
`encode_chat_completion` — the reference request is built here straight from the manifest JSON with
mistral-common's own chunk types, independently of pixtral_quant's reader and decoder."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from calibration_helpers import tokenizer
from PIL import Image, ImageOps

from pixtral_quant.calibration.builtin import builtin_manifest, calibration_root
from pixtral_quant.calibration.dataset import count_text_tokens, load_set
from pixtral_quant.calibration.encode import encode
from pixtral_quant.calibration.stats import to_markdown

TASKS = {"document", "receipt", "chart", "photo", "code", "table", "multi_image"}


@pytest.fixture(scope="module")
def calib():
    return load_set("calib", tokenizer("tekken"))


def _rows(name: str) -> list[dict]:
    return [json.loads(line) for line in builtin_manifest(name).read_text(encoding="utf-8").splitlines()]


def _image_parts(row: dict) -> list[dict]:
    return [c for m in row["messages"] if isinstance(m["content"], list) for c in m["content"] if c["type"] != "text"]


def _file(part: dict) -> str | None:
    url = part.get("path") or part["image_url"]["url"]
    return None if url.startswith("data:") else url


def _header(folder: Path, part: dict) -> tuple:
    """(format, mode, animated, EXIF-turned, longest edge) of an image part, from its header."""
    rel = _file(part)
    if rel is None:
        return ("data", "", False, False, 0)
    with Image.open(folder / rel) as im:
        return (im.format, im.mode, getattr(im, "n_frames", 1) > 1, im.getexif().get(0x0112, 1) != 1, max(im.size))


def parity_ids(rows: list[dict], folder: Path) -> list[str]:
    """Three samples per task, plus the first sample showing each image format/mode/feature."""
    picked, tasks, features = [], {}, set()
    for row in rows:
        heads = [_header(folder, p) for p in _image_parts(row)]
        new = {h[:4] for h in heads} | {("big",) for h in heads if h[4] > 1024}
        new |= {("tiny",) for h in heads if 0 < h[4] < 32}
        new |= {("system",)} if row["messages"][0]["role"] == "system" else set()
        new |= {("image_url",)} if any("image_url" in p and _file(p) for p in _image_parts(row)) else set()
        if tasks.get(row["task"], 0) < 3 or new - features:
            picked.append(row["id"])
            tasks[row["task"]] = tasks.get(row["task"], 0) + 1
            features |= new
    return picked


def reference_request(row: dict, folder: Path):
    """mistral-common's ChatCompletionRequest for a manifest row. EXIF orientation is the one documented
    difference (mistral-common does not apply it; pixtral_quant does), so the reference applies it too."""
    from mistral_common.protocol.instruct.messages import (AssistantMessage, ImageChunk, ImageURLChunk,
                                                           SystemMessage, TextChunk, UserMessage)
    from mistral_common.protocol.instruct.request import ChatCompletionRequest

    def image(part):
        rel = _file(part)
        if rel is None:
            return ImageURLChunk(image_url=part["image_url"]["url"])
        im = Image.open(folder / rel)
        return ImageChunk(image=ImageOps.exif_transpose(im) if im.getexif().get(0x0112, 1) != 1 else im)

    out = []
    for m in row["messages"]:
        if m["role"] == "user":
            out.append(UserMessage(content=[TextChunk(text=c["text"]) if c["type"] == "text" else image(c)
                                            for c in m["content"]]))
        else:
            out.append({"system": SystemMessage, "assistant": AssistantMessage}[m["role"]](content=m["content"]))
    return ChatCompletionRequest(messages=out)


@pytest.mark.parametrize("kind", ["tekken", "v7m1"])
def test_parity_with_encode_chat_completion(calib, kind):
    tok = tokenizer(kind)
    folder = builtin_manifest("calib").parent
    rows = {r["id"]: r for r in _rows("calib")}
    index = {s.id: i for i, s in enumerate(calib.samples)}
    ids = parity_ids(list(rows.values()), folder)
    assert len(ids) >= 20 and {rows[i]["task"] for i in ids} == TASKS
    for sid in ids:
        ours = encode(tok, calib.messages(index[sid]), sid)
        ref = tok.encode_chat_completion(reference_request(rows[sid], folder))
        assert ours.tokens == list(ref.tokens), sid
        assert len(ours.images) == len(ref.images) >= 1 or not _image_parts(rows[sid])
        for a, b in zip(ours.images, ref.images):
            assert a.shape == b.shape and np.array_equal(a, np.asarray(b, dtype=np.float32)), sid
        sample = calib.samples[index[sid]]
        ids_ = tok.instruct_tokenizer.image_encoder.special_ids
        image_tokens = sum(t in (ids_.img, ids_.img_break, ids_.img_end) for t in ref.tokens)
        assert count_text_tokens(tok, sample) == len(ref.tokens) - image_tokens, sid


def test_stats_count_tokens_exactly(calib):
    """The cheap token count (placeholders + size rule) equals full encodes, per sample (tekken)."""
    tok = tokenizer("tekken")
    for i in range(0, len(calib), 37):
        encoded = calib.encoded(tok, i)
        assert len(encoded.tokens) == calib.fits[i].tokens


def test_builtin_coverage():
    rows, eval_rows = _rows("calib"), _rows("eval")
    assert len(rows) >= 256 and len(eval_rows) >= 64
    assert {r["task"] for r in rows} == {r["task"] for r in eval_rows} == TASKS
    heads = [_header(builtin_manifest("calib").parent, p) for r in rows for p in _image_parts(r)]
    edges = [h[4] for h in heads if h[0] != "data"]
    assert sum(e > 1024 for e in edges) >= 5 and min(edges) >= 16 and sum(e <= 32 for e in edges) >= 2
    assert {h[0] for h in heads} >= {"JPEG", "PNG", "WEBP", "GIF", "data"}
    assert {h[1] for h in heads} >= {"RGB", "RGBA", "LA", "L", "P", "CMYK"}
    assert any(h[2] for h in heads) and any(h[3] for h in heads)  # animated GIF, EXIF orientation
    per_sample = [len(_image_parts(r)) for r in rows]
    assert max(per_sample) >= 3 and sum(n >= 2 for n in per_sample) >= 20
    assert any(sum(m["role"] == "user" and any(c["type"] != "text" for c in m["content"])
                   for m in r["messages"]) >= 2 for r in rows)  # images in several turns


def test_builtin_size_limit():
    total = sum(p.stat().st_size for p in calibration_root().rglob("*") if p.is_file())
    assert total <= 20 * 1024 * 1024


def test_readme_statistics_are_current(calib):
    readme = (calibration_root() / "README.md").read_text(encoding="utf-8")
    assert to_markdown(calib.stats) in readme
    assert to_markdown(load_set("eval", tokenizer("tekken")).stats) in readme
    assert "Provenance and licences" in readme


def test_generator_is_deterministic():
    pytest.importorskip("matplotlib")
    scripts = Path(__file__).resolve().parents[1] / "scripts"
    sys.path.insert(0, str(scripts))
    try:
        from calibgen import charts, documents, tables
        from calibgen import text as T
        from calibgen.common import seeded
        from make_calibration_sets import encode_pic
    finally:
        sys.path.remove(str(scripts))

    def build() -> list[bytes]:
        items = (documents.make_receipts(seeded("t", "r"), 3, T.SHOPS) + tables.make_tables(seeded("t", "t"), 3)
                 + charts.make_charts(seeded("t", "c"), 2))
        return [encode_pic(part)[0] for item in items for parts, _ in item.turns for part in parts
                if not isinstance(part, str)]

    assert build() == build()
