"""User datasets that are not manifests: a folder of images with a captions file, and a Hugging Face
`datasets` dataset saved with `save_to_disk`. Both become Samples of the shape

    user: [image, prompt]   assistant: caption

so calibration sees the image, a question and a reference answer like the built-in sets.

Captions files (first found of CAPTION_FILES, or `captions=`): JSONL lines {"file": "a.jpg", "caption": "..."}
(optional "prompt"), or TSV / CSV rows `file<sep>caption`. Every image in the folder needs a caption and
every caption an image; the error names the line.
"""

from __future__ import annotations

import csv
import functools
import json
from pathlib import Path

from ..errors import InputError, UsageError, require
from .refs import ImageRef, resolve_inside
from .sample import Sample

DEFAULT_PROMPT = "Describe this image."
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif"}
CAPTION_FILES = ("captions.jsonl", "captions.tsv", "captions.csv")


def read_folder(folder: str | Path, captions: str | Path | None = None, prompt: str = DEFAULT_PROMPT) -> list[Sample]:
    """Images in `folder` (sorted by name) paired with their captions."""
    folder = Path(folder)
    path = Path(captions) if captions else _find_captions(folder)
    rows = CAPTION_READERS[path.suffix.lower()](path)
    samples = [_caption_sample(folder, path, lineno, row, prompt) for lineno, row in rows]
    if not samples:
        raise InputError("the captions file lists no images", where=path, fix="add one line per image")
    _check_every_image_captioned(folder, path, samples)
    return samples


def _find_captions(folder: Path) -> Path:
    if not folder.is_dir():
        raise InputError("no such folder", where=folder, fix="pass a manifest .jsonl, a folder or hf:PATH")
    for name in CAPTION_FILES:
        if (folder / name).is_file():
            return folder / name
    raise InputError("the folder has no manifest.jsonl and no captions file", where=folder,
                     fix=f"add one of {list(CAPTION_FILES)} (file + caption per line), or a manifest.jsonl")


def _jsonl_rows(path: Path):
    for lineno, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"malformed JSON at column {exc.colno}: {exc.msg}", where=f"{path}:{lineno}",
                             fix='write {"file": "a.jpg", "caption": "..."} on each line') from None
        yield lineno, row if isinstance(row, dict) else {}


def _delimited_rows(path: Path, delimiter: str):
    with path.open(encoding="utf-8-sig", newline="") as fh:
        for lineno, cells in enumerate(csv.reader(fh, delimiter=delimiter), start=1):
            if cells and any(c.strip() for c in cells):
                yield lineno, {"file": cells[0].strip(), "caption": delimiter.join(cells[1:]).strip()}


CAPTION_READERS = {
    ".jsonl": _jsonl_rows,
    ".tsv": lambda p: _delimited_rows(p, "\t"),
    ".csv": lambda p: _delimited_rows(p, ","),
}


def _caption_sample(folder: Path, path: Path, lineno: int, row: dict, prompt: str) -> Sample:
    name, caption = row.get("file") or row.get("image"), row.get("caption") or row.get("text")
    where = f"{path}:{lineno}"
    if not isinstance(name, str) or not isinstance(caption, str) or not caption.strip():
        raise InputError("each line needs an image file name and a non-empty caption", where=where,
                         fix='write `a.jpg<TAB>caption` (TSV), `a.jpg,caption` (CSV) or {"file": ..., "caption": ...}')
    resolve_inside(folder, name, where)
    user = [{"type": "image", "ref": ImageRef("path", name, str(folder))},
            {"type": "text", "text": str(row.get("prompt") or prompt)}]
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": caption}]
    return Sample(name, f"{where} (image {name})", messages, task="caption", answer=caption)


def _check_every_image_captioned(folder: Path, path: Path, samples: list[Sample]) -> None:
    listed = {(folder / s.image_refs()[0].value).resolve() for s in samples}
    images = (p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    missing = sorted(p.name for p in images if p.resolve() not in listed)
    if missing:
        raise InputError(f"{len(missing)} image(s) have no caption: {missing[:5]}", where=path,
                         fix="add a caption line for each, or move them out of the folder")


# --- Hugging Face datasets saved to disk ------------------------------------------------------------------

def read_hf(path: str | Path, image_column: str | None, text_column: str | None,
            prompt_column: str | None = None, split: str | None = None, prompt: str = DEFAULT_PROMPT) -> list[Sample]:
    """Rows of a `save_to_disk` dataset: image from `image_column`, reference answer from `text_column`,
    question from `prompt_column` (or `prompt`). Images are read lazily, row by row."""
    if not image_column or not text_column:
        raise UsageError("a hf: dataset needs --image-column and --text-column", where=path,
                         fix="e.g. pixtral-quant calib inspect hf:./my_ds --image-column image --text-column caption")
    ds = _hf_dataset(str(path), split)
    _check_columns(ds, path, [c for c in (image_column, text_column, prompt_column) if c])
    texts = ds[text_column]
    prompts = ds[prompt_column] if prompt_column else [prompt] * len(texts)
    samples = []
    for row, (text, question) in enumerate(zip(texts, prompts)):
        where = f"{path} row {row}"
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"column {text_column!r} is empty or not text", where=where, fix="drop or fill the row")
        user = [{"type": "image", "ref": ImageRef("hf", f"{image_column}/{row}", _hf_key(path, split))},
                {"type": "text", "text": str(question)}]
        messages = [{"role": "user", "content": user}, {"role": "assistant", "content": text}]
        samples.append(Sample(f"row-{row}", where, messages, task="hf", answer=text))
    if not samples:
        raise InputError("the dataset has no rows", where=path, fix="point hf: at a non-empty dataset")
    return samples


def read_hf_image(ref: ImageRef, where: str) -> bytes:
    """Encoded bytes of one dataset image cell (an `Image` feature, raw bytes, or a file path)."""
    column, row = ref.value.rsplit("/", 1)
    path, _, split = ref.root.partition("::")
    cell = _hf_undecoded(path, split or None, column)[int(row)][column]
    if isinstance(cell, dict):  # datasets.Image(decode=False): {"bytes": ..., "path": ...}
        if cell.get("bytes"):
            return cell["bytes"]
        cell = cell.get("path")
    if isinstance(cell, (bytes, bytearray)):
        return bytes(cell)
    if isinstance(cell, str) and cell:
        return resolve_inside(Path(path), cell, where).read_bytes()
    raise InputError(f"column {column!r} holds {type(cell).__name__}, not an image", where=where,
                     fix="pick the image column with --image-column")


def _hf_key(path, split) -> str:
    return f"{path}::{split}" if split else str(path)


@functools.lru_cache(maxsize=4)
def _hf_dataset(path: str, split: str | None):
    datasets = require("datasets", "datasets")
    if not Path(path).is_dir():
        raise InputError("no such dataset directory", where=path, fix="pass the folder given to save_to_disk")
    try:
        ds = datasets.load_from_disk(path)
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise InputError(f"not a dataset saved with save_to_disk ({exc})", where=path,
                         fix="save it with Dataset.save_to_disk(PATH), or convert it to a JSONL manifest") from None
    if isinstance(ds, datasets.DatasetDict):
        split = split or (next(iter(ds)) if len(ds) == 1 else None)  # one split: no need to name it
        if split not in ds:
            raise UsageError(f"the dataset has splits {sorted(ds)}", where=path, fix="choose one with --split NAME")
        ds = ds[split]
    return ds


@functools.lru_cache(maxsize=4)
def _hf_undecoded(path: str, split: str | None, column: str):
    """The dataset with `column` left as encoded bytes (decoding happens in images.decode, like files)."""
    datasets = require("datasets", "datasets")
    ds = _hf_dataset(path, split)
    if isinstance(ds.features.get(column), datasets.Image):
        ds = ds.cast_column(column, datasets.Image(decode=False))
    return ds


def _check_columns(ds, path, wanted: list[str]) -> None:
    missing = [c for c in wanted if c not in ds.column_names]
    if missing:
        raise UsageError(f"column(s) {missing} not in the dataset", where=path,
                         fix=f"choose among {ds.column_names} with --image-column / --text-column")
