"""`load_set`: any calibration/evaluation source → a validated, deterministically sampled CalibrationSet.

Specs (first match wins, see SPEC_KINDS):
    calib | eval | builtin:calib | builtin:eval    the built-in sets (calibration/ at the repo root)
    hf:PATH                                          a `datasets` dataset saved to disk (+ columns)
    PATH.jsonl                                       a manifest
    FOLDER                                           manifest.jsonl inside it, else images + captions file

Every selected sample is read and decoded once up front (so a corrupt image fails now, naming its line,
not an hour into GPTQ), measured in tokens, and fitted to `max_tokens`. Decoded pixels are not kept:
`CalibrationSet.messages(i)` decodes again on demand, so a large set costs bytes, not gigabytes.

Token counts: text tokens come from encoding the sample with 1×1 placeholder images (exactly 2 tokens
each: [IMG][IMG_END]); image tokens from Pixtral's size rule (images.image_token_count). That is exact
(tests compare with full encodes) and skips mistral-common's float32 resize of every image.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..errors import InputError, UsageError
from .budget import Fit, fit
from .builtin import builtin_manifest, builtin_name
from .encode import Encoded, encode
from .fetch import read_bytes
from .images import decode, resize
from .manifest import read_manifest
from .sample import Sample, fill_images
from .sampling import content_hash, digest, rank, sample_hash
from .sources import read_folder, read_hf
from .stats import SampleStats, SetStats, summarize

PLACEHOLDER_TOKENS = 2  # a 1×1 image encodes to [IMG] [IMG_END]
TOKENIZER_NAMES = ("tekken", "v7m1")


@dataclass
class CalibrationSet:
    """Selected samples in calibration order, how each fits the token limit, their content hashes
    (sha256 hex), statistics, and the set's `content_hash` ('sha256:...')."""

    name: str
    samples: list[Sample]
    fits: list[Fit]
    hashes: list[str]
    stats: SetStats

    @property
    def content_hash(self) -> str:
        return self.stats.content_hash

    def __len__(self) -> int:
        return len(self.samples)

    def messages(self, i: int) -> list[dict]:
        """Sample i as chat messages with PIL RGB images, resized if the token budget said so —
        the input of calibration.encode.encode. The images are read again and must still match the
        content hash taken by load_set (the hash a checkpoint records must be what it was calibrated on)."""
        sample, fitted = self.samples[i], self.fits[i]
        refs = sample.image_refs()
        raw = [read_bytes(ref, sample.where) for ref in refs]
        if sample_hash(sample, [digest(b) for b in raw]) != self.hashes[i]:
            raise InputError("an image of this sample changed after the set was loaded", where=sample.where,
                             fix="load the set again (and do not edit its images during a run)")
        images = [decode(data, f"{sample.where} image {ref.label()}").image for data, ref in zip(raw, refs)]
        if fitted.action == "downsize":
            images = [resize(im, size) for im, size in zip(images, fitted.sizes)]
        return fill_images(sample.messages, images)

    def __iter__(self) -> Iterator[list[dict]]:
        return (self.messages(i) for i in range(len(self)))

    def encoded(self, tokenizer, i: int) -> Encoded:
        """Sample i encoded with `tokenizer` (token ids + normalised pixel arrays)."""
        return encode_checked(tokenizer, self.messages(i), self.samples[i].where)


def load_set(spec: str | Path, tokenizer=None, num_samples: int | None = None, seed: int = 0,
             max_tokens: int | None = None, *, image_column: str | None = None, text_column: str | None = None,
             prompt_column: str | None = None, split: str | None = None, captions: str | Path | None = None,
             progress: bool = False) -> CalibrationSet:
    """Read, validate, sample and measure a set. `tokenizer`: a MistralTokenizer opened with
    finetuning=True, or 'tekken' | 'v7m1' | a tokenizer file/dir (None = tekken). `num_samples`/`seed`:
    deterministic subset (None = all, file order). `max_tokens`: per-sample limit (downsize, else drop)."""
    name, samples = list_samples(str(spec), image_column=image_column, text_column=text_column,
                                 prompt_column=prompt_column, split=split, captions=captions)
    order = _order(samples, num_samples, seed)
    tok = open_tokenizer(tokenizer)
    want = len(samples) if num_samples is None else num_samples
    kept, dropped = [], []
    for i in _progress(order, min(want, len(order)), f"reading {name}", progress, stop=lambda: len(kept) >= want):
        prepared = _prepare(samples[i], tok, max_tokens)
        if prepared.fit.action == "drop":
            dropped.append((samples[i].where, prepared.fit.reason))
        else:
            kept.append(prepared)
    return _assemble(name, kept, dropped)


@dataclass(frozen=True)
class _Prepared:
    sample: Sample
    fit: Fit
    hash: str
    row: SampleStats
    notes: tuple[str, ...]


def _assemble(name: str, kept: list[_Prepared], dropped: list[tuple[str, str]]) -> CalibrationSet:
    if not kept:
        raise InputError("no sample is left after applying max_tokens", where=name,
                         fix="raise --max-tokens (first drop: " + (dropped[0][1] if dropped else "-") + ")")
    entries = [p.hash if p.fit.action == "keep" else f"{p.hash}\tcap={p.fit.cap}" for p in kept]
    notes = Counter(note for p in kept for note in p.notes)
    stats = summarize(name, [p.row for p in kept], dropped, notes, content_hash(entries))
    return CalibrationSet(name, [p.sample for p in kept], [p.fit for p in kept], [p.hash for p in kept], stats)


def _prepare(sample: Sample, tokenizer, max_tokens: int | None) -> _Prepared:
    """Read and decode every image once; measure tokens; fit the budget; hash the content."""
    refs = sample.image_refs()
    raw = [read_bytes(ref, sample.where) for ref in refs]
    decoded = [decode(data, f"{sample.where} image {ref.label()}") for data, ref in zip(raw, refs)]
    text = count_text_tokens(tokenizer, sample)
    fitted = fit(text, [d.image.size for d in decoded], max_tokens)
    row = SampleStats(sample.id, sample.task or "-", tuple(d.size for d in decoded), text, fitted.tokens - text,
                      fitted.action == "downsize")
    notes = tuple(note for d in decoded for note in d.notes)
    return _Prepared(sample, fitted, sample_hash(sample, [digest(b) for b in raw]), row, notes)


def count_text_tokens(tokenizer, sample: Sample) -> int:
    """Tokens of everything but the images: the sample encoded with 1×1 placeholders, minus theirs."""
    n = len(sample.image_refs())
    dot = Image.new("RGB", (1, 1), "white")
    enc = encode_checked(tokenizer, fill_images(sample.messages, [dot] * n), sample.where)
    return len(enc.tokens) - PLACEHOLDER_TOKENS * n


def encode_checked(tokenizer, messages: list[dict], where: str) -> Encoded:
    """calibration.encode.encode, with mistral-common's validation errors turned into InputError."""
    from mistral_common.exceptions import MistralCommonException

    try:
        return encode(tokenizer, messages, where)
    except MistralCommonException as exc:
        raise InputError(f"mistral-common rejects this conversation ({exc})", where=where,
                         fix="alternate user/assistant turns and end with the assistant's reference answer; "
                             "open the tokenizer with finetuning=True") from None


def open_tokenizer(spec=None):
    """A MistralTokenizer in finetuning mode from 'tekken' | 'v7m1' | a file | a model dir; an already
    opened tokenizer is returned as is."""
    from ..loading.tokenizer import bundled_tokenizer_path, open_mistral_tokenizer, require_mistral_tokenizer

    if spec is not None and not isinstance(spec, (str, Path)):
        return spec
    spec = str(spec or "tekken")
    if spec in TOKENIZER_NAMES:
        return open_mistral_tokenizer(bundled_tokenizer_path(spec), finetuning=True)
    path = Path(spec)
    if path.is_dir():
        path = require_mistral_tokenizer(path)
    elif not path.is_file():
        raise InputError("no such tokenizer", where=spec,
                         fix=f"use {' or '.join(TOKENIZER_NAMES)}, a tekken.json / tokenizer.model.v7m1 file, "
                             "or a model directory holding one")
    return open_mistral_tokenizer(path, finetuning=True)


def list_samples(spec: str, *, image_column=None, text_column=None, prompt_column=None, split=None,
                 captions=None) -> tuple[str, list[Sample]]:
    """(display name, samples in file order) for a spec; images are not read yet."""
    hf_opts = {"image_column": image_column, "text_column": text_column, "prompt_column": prompt_column,
               "split": split}
    for kind, matches, reader in SPEC_KINDS:
        if matches(spec):
            _check_options(kind, spec, hf_opts, captions)
            return reader(spec, hf_opts, captions)
    raise InputError("no such calibration set", where=spec,
                     fix="use calib, eval, a manifest .jsonl, a folder of images with captions.tsv, or hf:PATH")


def _check_options(kind: str, spec: str, hf_opts: dict, captions) -> None:
    if kind != "hf" and any(hf_opts.values()):
        raise UsageError("--image-column/--text-column/--prompt-column/--split apply to hf: datasets only",
                         where=spec, fix=f"write hf:{spec} if it is a saved dataset, or drop those options")
    if kind != "folder" and captions:
        raise UsageError("--captions applies to a folder of images only", where=spec, fix="drop --captions")


def _read_folder_spec(spec: str, hf_opts: dict, captions):
    folder = Path(spec)
    if (folder / "manifest.jsonl").is_file() and not captions:
        return spec, read_manifest(folder / "manifest.jsonl")
    return spec, read_folder(folder, captions)


SPEC_KINDS = (
    ("hf", lambda s: s.startswith("hf:"), lambda s, o, c: (s, read_hf(s[3:], **o))),
    ("builtin", lambda s: builtin_name(s) is not None,
     lambda s, o, c: (f"builtin:{builtin_name(s)}", read_manifest(builtin_manifest(builtin_name(s))))),
    ("manifest", lambda s: Path(s).is_file(), lambda s, o, c: (s, read_manifest(s))),
    ("folder", lambda s: Path(s).is_dir(), _read_folder_spec),
)


def _order(samples: list[Sample], num_samples: int | None, seed: int) -> list[int]:
    if num_samples is None:
        return list(range(len(samples)))
    if not 0 < num_samples <= len(samples):
        raise UsageError(f"--num-samples {num_samples} but the set has {len(samples)} samples",
                         fix=f"choose 1 ≤ N ≤ {len(samples)}")
    return rank(samples, seed)


def _progress(items: list[int], total: int, description: str, enabled: bool, stop):
    """Yield items until `stop()` is true; with a rich progress bar on stderr when enabled."""
    if not enabled:
        yield from _until(items, stop)
        return
    from rich.console import Console
    from rich.progress import Progress

    console = Console(stderr=True)
    with Progress(console=console, transient=True, disable=not console.is_terminal) as bar:  # no bar in logs
        task = bar.add_task(description, total=total)
        for i in _until(items, stop):
            yield i
            bar.advance(task)


def _until(items: list[int], stop):
    for i in items:
        if stop():
            return
        yield i
