"""One calibration/evaluation sample as listed in a set, before its images are read.

`messages` is a list of {"role": "system"|"user"|"assistant", "content": str | list[chunk]} where a chunk
is {"type": "text", "text": str} or {"type": "image", "ref": ImageRef}. `fill_images` swaps each ref for a
PIL image, giving the shape `calibration.encode.encode` takes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from .refs import ImageRef


@dataclass(frozen=True)
class Sample:
    """id: unique in its set; where: 'file:line (sample id)', used in every error about it;
    task/answer: optional labels for per-task statistics and scoring."""

    id: str
    where: str
    messages: list[dict] = field(hash=False)
    task: str | None = None
    answer: str | None = None

    def image_refs(self) -> list[ImageRef]:
        """Every image reference in conversation order (the order their [IMG] tokens appear)."""
        return [chunk["ref"] for chunk in _chunks(self.messages) if chunk["type"] == "image"]

    def text_parts(self) -> list[tuple[str, str]]:
        """(role, text) for every text chunk, in order."""
        return [(role, chunk["text"]) for role, chunk in _role_chunks(self.messages) if chunk["type"] == "text"]


def fill_images(messages: list[dict], images: list) -> list[dict]:
    """A copy of `messages` with the i-th image ref replaced by {"type": "image", "image": images[i]}."""
    supply = iter(images)
    out = []
    for msg in messages:
        content = msg["content"]
        if not isinstance(content, str):
            content = [{"type": "image", "image": next(supply)} if c["type"] == "image" else c for c in content]
        out.append({"role": msg["role"], "content": content})
    return out


def skeleton(messages: list[dict]) -> list[dict]:
    """messages with every image ref replaced by its position (for hashing and printing)."""
    counter = iter(range(1 << 30))
    out = []
    for msg in messages:
        content = msg["content"]
        if not isinstance(content, str):
            content = [{"type": "image", "index": next(counter)} if c["type"] == "image" else c for c in content]
        out.append({"role": msg["role"], "content": content})
    return out


def _role_chunks(messages: list[dict]) -> Iterator[tuple[str, dict]]:
    for msg in messages:
        content = msg["content"]
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        for chunk in parts:
            yield msg["role"], chunk


def _chunks(messages: list[dict]) -> Iterator[dict]:
    return (chunk for _, chunk in _role_chunks(messages))
