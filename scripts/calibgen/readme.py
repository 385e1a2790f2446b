"""calibration/README.md: what the sets are, where every image comes from, licences, statistics."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from PIL import Image

HEADER = """# Built-in calibration and evaluation sets

Written by `scripts/make_calibration_sets.py` — edit the generator, not this file.

| set | folder | samples | use |
|---|---|---:|---|
| `calib` (`builtin:calib`) | `calib/` | {n_calib} | GPTQ calibration (`--calibration calib --num-samples N --seed S`) |
| `eval` (`builtin:eval`) | `eval/` | {n_eval} | held-out validation; disjoint from `calib` (checked by content hash of image bytes + text) |

Each folder holds `manifest.jsonl` (one chat sample per line, format in `pixtral_quant/calibration/manifest.py`)
and `images/`. Every sample ends with an assistant turn (the reference answer); most also carry a short
`answer` for scoring and a `task`. Inspect them with `pixtral-quant calib inspect calib`; load them with
`pixtral_quant.calibration.dataset.load_set("calib", tokenizer)`.

Size on disk: {mib:.1f} MiB in total (limit 20 MiB).

## Tasks

| task | what the images are | questions |
|---|---|---|
| document | notices, letters and 16:9 slides rendered with DejaVu/STIX fonts; a third photographed-looking (rotated, blurred, JPEG or greyscale); some pages 1240×1754 (resized by Pixtral's rule) | transcription, title, date, signer, summary, bullet points |
| receipt | till receipts from invented shops in monospace; a quarter as phone photos, some stored sideways with an EXIF orientation tag | total, tax, item prices, item list, shop, date, transcription |
| chart | matplotlib bar, horizontal bar, line, pie, grouped bar and scatter charts in six styles, plus tiny sparklines (≥ 16 px) sent as `data:` URLs; some 1200–1500 px wide | value reading, max/min, trends, shares, point counts |
| photo | real photographs from scikit-image (below) with captions written for these sets: full, scaled, cropped and as 16–48 px thumbnails | captions, questions about content, colours, counts |
| code | editor screenshots (light/dark/solarized, line numbers, syntax colours) of Python, JS/TS, SQL, Rust, Go, C, Java, Bash, and terminal screenshots | what the code does, transcription, language, names, command output |
| table | tables rendered as grid, zebra or plain layouts | cell look-up, max row, column sums, row counts, conversion to Markdown |
| multi_image | 2–4 images per prompt, images interleaved with text, images in several user turns, a system prompt | comparisons across charts/receipts/pages/code, picking one of several photos, multi-turn |

## Image formats exercised

{formats}

Decoding follows mistral-common (`pixtral_quant/calibration/images.py`): RGBA/LA/P/L/CMYK → RGB over white,
first GIF frame (animated ones are noted), EXIF orientation applied, longest edge capped at 1024 with Pixtral's
rounding, 16-px patches.

## Provenance and licences

- **Synthetic images** (documents, receipts, charts, code, tables and the compositions in multi_image) and all
  text (questions, answers, captions, document prose, code snippets) were made for these sets by
  `scripts/make_calibration_sets.py`; names of people, firms, shops and towns are invented. They are released under
  the project's licence (Apache-2.0).
- **Fonts** used to render them are the DejaVu fonts (Bitstream Vera licence / public domain) and STIX fonts
  (SIL Open Font License 1.1) shipped with matplotlib; no font files are redistributed here.
- **Photographs** come from `skimage.data` in scikit-image {skimage} (only images its documentation marks as public
  domain, CC0 or with no known copyright restrictions). Each is used as is, cropped, scaled or re-encoded:

| photograph | source | licence | set |
|---|---|---|---|
{photo_rows}

## Statistics

Token counts with the Pixtral-12B tokenizer (`tekken`); image tokens are [IMG], [IMG_BREAK] and [IMG_END].
With the Pixtral Large tokenizer (`v7m1`): calib {v7_calib:,} tokens ({v7_calib_share:.1%} image), eval
{v7_eval:,} tokens ({v7_eval_share:.1%} image).

### calib

{calib_stats}
### eval

{eval_stats}
## Rebuilding

    pip install -e '.[calibgen]'
    python scripts/make_calibration_sets.py          # rewrites calib/, eval/ and this README
    python scripts/make_calibration_sets.py --check  # rebuilds in a temp dir and compares byte for byte

Byte-identical output needs the same versions as this build: {versions}.
"""


def _formats(root: Path) -> str:
    counts = Counter()
    for path in sorted(root.glob("*/images/*")):
        with Image.open(path) as im:
            animated = " animated" if getattr(im, "n_frames", 1) > 1 else ""
            exif = " + EXIF orientation" if im.getexif().get(0x0112, 1) != 1 else ""
            counts[f"{im.format} {im.mode}{animated}{exif}"] += 1
    inline = sum(line.count("data:image/") for m in root.glob("*/manifest.jsonl") for line in m.open())
    rows = [f"| {k} | {v} |" for k, v in sorted(counts.items())] + [f"| inline `data:` URL (PNG) | {inline} |"]
    return "| format and mode | images |\n|---|---:|\n" + "\n".join(rows)


def _versions() -> str:
    import importlib.metadata as md

    names = ("pillow", "matplotlib", "scikit-image", "numpy")
    return ", ".join(f"{n} {md.version(n)}" for n in names)


def render_readme(report: dict, calib_photos, eval_photos) -> str:
    import importlib.metadata as md

    from pixtral_quant.calibration.stats import to_markdown

    stats, v7 = report["stats"], report["v7m1"]
    rows = [f"| `{p.file}` | {p.source} | {p.licence} | {s} |" for s, ps in (("calib", calib_photos),
                                                                          ("eval", eval_photos)) for p in ps]
    return HEADER.format(
        n_calib=stats["calib"].samples, n_eval=stats["eval"].samples, mib=report["bytes"] / 2**20,
        formats=_formats(Path(report["root"])), skimage=md.version("scikit-image"), photo_rows="\n".join(rows),
        v7_calib=v7["calib"].total_tokens, v7_calib_share=v7["calib"].image_token_share,
        v7_eval=v7["eval"].total_tokens, v7_eval_share=v7["eval"].image_token_share,
        calib_stats=to_markdown(stats["calib"]), eval_stats=to_markdown(stats["eval"]), versions=_versions(),
    )
