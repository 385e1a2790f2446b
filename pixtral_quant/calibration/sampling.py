"""Deterministic sample selection and content hashes.

Selection ranks samples by sha256(seed, sample id) and walks that order: the same set, N and seed pick the
same samples on any machine and Python version (no dependence on `random`'s algorithm), and adding a sample
to a set never reshuffles the others' relative order.

Hashes cover what the model sees, not file names: a sample's hash is sha256 of its messages as canonical
JSON with every image replaced by sha256 of its encoded bytes; a set's hash is sha256 of its samples'
hashes in calibration order (plus any token-budget resize). `content_hash` is what the converted
checkpoint's manifest records.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence

from ..errors import InputError
from .fetch import read_bytes
from .sample import Sample, skeleton


def rank(samples: Sequence[Sample], seed: int) -> list[int]:
    """Indices of `samples` in the seed's order (a deterministic shuffle keyed on sample ids)."""
    def key(i: int) -> str:
        return hashlib.sha256(f"{seed}\x00{samples[i].id}".encode()).hexdigest()

    return sorted(range(len(samples)), key=key)


def digest(data: bytes) -> str:
    """sha256 hex of bytes (an image file's encoded content)."""
    return hashlib.sha256(data).hexdigest()


def sample_hash(sample: Sample, image_digests: Sequence[str]) -> str:
    """sha256 hex of the sample's text and image content (ids, paths and file names do not count)."""
    shape = skeleton(sample.messages)
    for msg in shape:
        if not isinstance(msg["content"], str):
            msg["content"] = [{"type": "image", "sha256": image_digests[c["index"]]} if c["type"] == "image" else c
                              for c in msg["content"]]
    canonical = json.dumps(shape, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def content_hash(entries: Iterable[str]) -> str:
    """'sha256:<hex>' over per-sample entries (sample hash, plus resize note) in calibration order."""
    return "sha256:" + hashlib.sha256("\n".join(entries).encode()).hexdigest()


def hash_sample(sample: Sample) -> tuple[str, list[str]]:
    """(sample hash, image digests) read from the sample's image sources; no decoding."""
    images = [digest(read_bytes(ref, sample.where)) for ref in sample.image_refs()]
    return sample_hash(sample, images), images


def check_disjoint(a, b, names: tuple[str, str] = ("calibration", "evaluation")) -> None:
    """InputError when sets `a` and `b` (CalibrationSets or sequences of Samples) share a sample or an
    image, compared by content. Evaluating on calibration data would flatter the quantized model."""
    first, second = _index(_samples(a)), _index(_samples(b))
    clash = [(first[h], s) for h, s in second.items() if h in first]
    if clash:
        listed = "; ".join(f"{x.where} = {y.where}" for x, y in clash[:5])
        raise InputError(f"{len(clash)} {names[1]} item(s) also in the {names[0]} set: {listed}",
                         where=f"{names[0]} vs {names[1]}",
                         fix=f"remove them from one set (the {names[1]} set must be held out)")


def _samples(obj) -> Sequence[Sample]:
    return obj.samples if hasattr(obj, "samples") else obj


def _index(samples: Sequence[Sample]) -> dict[str, Sample]:
    """Content key → sample, for whole samples ('s:') and for each of their images ('i:')."""
    out = {}
    for sample in samples:
        whole, images = hash_sample(sample)
        out[f"s:{whole}"] = sample
        out.update({f"i:{d}": sample for d in images})
    return out
