"""Read and validate a JSONL manifest: one sample per line, chat messages in content-chunk shape.

    {"id": "doc-0001", "task": "ocr", "answer": "42.50",
     "messages": [
       {"role": "system", "content": "Answer briefly."},                              (optional)
       {"role": "user", "content": [
          {"type": "image", "path": "images/receipt.png"},                          relative path
          {"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}},  data URL
          {"type": "image_url", "image_url": "https://example.org/a.jpg"},           http(s), or a path
          {"type": "text", "text": "What is the total?"}]},
       {"role": "assistant", "content": "The total is 42.50."}]}

Rules: user and assistant turns alternate, starting with the user and ending with the assistant (the
reference answer; calibration runs it teacher-forced); images only in user turns, any number, interleaved
with text, across turns; every message has text or an image. Paths resolve inside the manifest's folder.
Every error names `file:line` and the sample id.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import InputError
from .refs import ImageRef, classify, resolve_inside
from .sample import Sample

TOP_KEYS = {"id", "messages", "task", "answer", "meta"}
ROLES = ("system", "user", "assistant")
EXAMPLE = '{"role": "user", "content": [{"type": "image", "path": "images/a.png"}, {"type": "text", "text": "..."}]}'


def read_manifest(path: str | Path) -> list[Sample]:
    """All samples of a JSONL manifest, in file order. Blank lines are skipped; line numbers are 1-based."""
    path = Path(path)
    samples, seen = [], {}
    for lineno, line in _lines(path):
        if not line.strip():
            continue
        sample = parse_line(line, lineno, path)
        if sample.id in seen:
            raise InputError(f"sample id {sample.id!r} is also used on line {seen[sample.id]}", where=sample.where,
                             fix="give every sample a unique \"id\"")
        seen[sample.id] = lineno
        samples.append(sample)
    if not samples:
        raise InputError("the manifest has no samples", where=path,
                         fix=f"add one JSON object per line, e.g. {{\"messages\": [{EXAMPLE}, ...]}}")
    return samples


def parse_line(line: str, lineno: int, path: Path) -> Sample:
    """One manifest line → Sample, or InputError naming path:lineno."""
    where = f"{path}:{lineno}"
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(f"malformed JSON at column {exc.colno}: {exc.msg}", where=where,
                         fix="write one complete JSON object per line (check quotes, commas and brackets)") from None
    if not isinstance(record, dict):
        raise InputError(f"expected a JSON object, got {type(record).__name__}", where=where,
                         fix='write {"messages": [...]} on each line')
    sample_id = str(record.get("id") or f"{path.stem}-{lineno}")
    where = f"{where} (sample {sample_id})"
    unknown = sorted(set(record) - TOP_KEYS)
    if unknown:
        raise InputError(f"unknown key(s) {unknown}", where=where, fix=f"use only {sorted(TOP_KEYS)}")
    messages = parse_messages(record.get("messages"), path.parent, where)
    answer = record.get("answer")
    return Sample(sample_id, where, messages, _opt_str(record.get("task")), None if answer is None else str(answer))


def parse_messages(raw, root: Path, where: str) -> list[dict]:
    """A raw 'messages' list → normalised messages (see calibration.sample); validates turn order."""
    if not isinstance(raw, list) or not raw:
        raise InputError("the sample needs a non-empty \"messages\" list", where=where,
                         fix=f"add \"messages\": [{EXAMPLE}, {{\"role\": \"assistant\", \"content\": \"...\"}}]")
    messages = [_parse_message(msg, f"{where} messages[{i}]", root) for i, msg in enumerate(raw)]
    _check_turns([m["role"] for m in messages], where)
    return messages


def _parse_message(msg, where: str, root: Path) -> dict:
    if not isinstance(msg, dict) or msg.get("role") not in ROLES:
        role = msg.get("role") if isinstance(msg, dict) else msg
        raise InputError(f"a message needs a role in {ROLES}, got {role!r}", where=where, fix=f"e.g. {EXAMPLE}")
    role, content = msg["role"], msg.get("content")
    if isinstance(content, str):
        chunks = [{"type": "text", "text": content}]
    elif isinstance(content, list):
        chunks = [_parse_chunk(chunk, f"{where}.content[{j}]", root) for j, chunk in enumerate(content)]
    else:
        raise InputError("\"content\" must be a string or a list of chunks", where=where, fix=f"e.g. {EXAMPLE}")
    chunks = [c for c in chunks if c["type"] == "image" or c["text"]]  # empty strings add nothing
    if not chunks:
        raise InputError("the message has no text and no image", where=where,
                         fix="add a text chunk or an image to it, or delete the message")
    if role == "user":
        return {"role": role, "content": chunks}
    if any(c["type"] == "image" for c in chunks):
        raise InputError(f"a {role} message holds an image; Pixtral takes images in user messages only",
                         where=where, fix="move the image into the preceding user message")
    return {"role": role, "content": "".join(c["text"] for c in chunks)}


def _parse_chunk(chunk, where: str, root: Path) -> dict:
    kind = chunk.get("type") if isinstance(chunk, dict) else None
    parser = CHUNK_PARSERS.get(kind)
    if parser is None:
        raise InputError(f"unknown content chunk {chunk!r:.80}", where=where,
                         fix=f"use a chunk of type {sorted(CHUNK_PARSERS)}")
    return parser(chunk, where, root)


def _text_chunk(chunk: dict, where: str, root: Path) -> dict:
    text = chunk.get("text")
    if not isinstance(text, str):
        raise InputError("a text chunk needs a string \"text\"", where=where, fix='{"type": "text", "text": "..."}')
    return {"type": "text", "text": text}


def _image_url_chunk(chunk: dict, where: str, root: Path) -> dict:
    url = chunk.get("image_url")
    url = url.get("url") if isinstance(url, dict) else url
    if not isinstance(url, str) or not url:
        raise InputError("an image_url chunk needs a URL", where=where,
                         fix='{"type": "image_url", "image_url": {"url": "images/a.png or data:... or https://..."}}')
    return {"type": "image", "ref": _ref(url, where, root)}


def _image_chunk(chunk: dict, where: str, root: Path) -> dict:
    value = chunk.get("path") or chunk.get("url") or chunk.get("image")
    if not isinstance(value, str) or not value:
        raise InputError("an image chunk needs a \"path\" (relative to the manifest) or a \"url\"", where=where,
                         fix='{"type": "image", "path": "images/a.png"}')
    return {"type": "image", "ref": _ref(value, where, root)}


CHUNK_PARSERS = {"text": _text_chunk, "image_url": _image_url_chunk, "image": _image_chunk}


def _ref(value: str, where: str, root: Path) -> ImageRef:
    kind = classify(value)
    if kind == "path":
        resolve_inside(root, value, where)  # fail at read time, with the line, not mid-calibration
    return ImageRef(kind, value, str(root))


def _check_turns(roles: list[str], where: str) -> None:
    """Optional system first; then user, assistant, user, ... ending with the assistant."""
    turns = roles[1:] if roles[0] == "system" else roles
    expected = ["user", "assistant"] * (len(turns) // 2 + 1)
    if turns != expected[: len(turns)] or not turns:
        raise InputError(f"roles {roles} are out of order", where=where,
                         fix="start with a user message (after an optional system one) and alternate user/assistant")
    if turns[-1] != "assistant":
        raise InputError("the sample does not end with an assistant message (the reference answer)", where=where,
                         fix='append {"role": "assistant", "content": "<the expected answer>"}')


def _lines(path: Path):
    if not path.is_file():
        raise InputError("manifest file not found", where=path, fix="pass the path of a .jsonl manifest")
    try:
        with path.open(encoding="utf-8-sig") as fh:
            yield from enumerate(fh, start=1)
    except UnicodeDecodeError as exc:
        raise InputError(f"the manifest is not UTF-8 text ({exc.reason} at byte {exc.start})", where=path,
                         fix="save the manifest as UTF-8 JSON Lines") from None


def _opt_str(value) -> str | None:
    return None if value is None else str(value)
