#!/usr/bin/env python
"""Rebuild the built-in calibration (calibration/calib) and evaluation (calibration/eval) sets.

    python scripts/make_calibration_sets.py            # writes calibration/, then checks and measures it
    python scripts/make_calibration_sets.py --check    # rebuild into a temp dir and compare bytes

Deterministic: every generator draws from random.Random seeded with "<split>:<task>", so the same library
versions (recorded in calibration/README.md) give byte-identical files. Needs matplotlib and scikit-image
(`pip install -e '.[calibgen]'`). The evaluation set only uses held-out material (other photographs, code
snippets, documents and terminals) and is checked disjoint from the calibration set by content hash.
"""

from __future__ import annotations

import argparse
import base64
import filecmp
import io
import json
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from calibgen import charts, code, documents, multi, photos, tables  # noqa: E402
from calibgen import text as T  # noqa: E402
from calibgen.common import Item, Pic, seeded  # noqa: E402
from calibgen.readme import render_readme  # noqa: E402

PLAN = {
    "calib": {"document": 40, "receipt": 32, "chart": 48, "photo": 40, "code": 36, "table": 32, "multi_image": 42},
    "eval": {"document": 10, "receipt": 8, "chart": 12, "photo": 10, "code": 9, "table": 8, "multi_image": 11},
}
BANKS = {  # held-out material for eval
    "calib": {"docs": T.DOCUMENTS[:9], "slides": T.SLIDES[:6], "photos": photos.CALIB_PHOTOS,
              "snippets": code.SNIPPETS, "terminals": code.TERMINALS[:4],
              "shops": {k: T.SHOPS[k] for k in ("grocery", "cafe", "hardware", "pharmacy")}},
    "eval": {"docs": T.DOCUMENTS[9:], "slides": T.SLIDES[6:], "photos": photos.EVAL_PHOTOS,
             "snippets": code.EVAL_SNIPPETS, "terminals": code.TERMINALS[4:],
             "shops": {k: T.SHOPS[k] for k in ("books", "grocery")}},
}
MAKERS = {
    "document": lambda rng, n, b: documents.make_documents(rng, n, b["docs"], b["slides"]),
    "receipt": lambda rng, n, b: documents.make_receipts(rng, n, b["shops"]),
    "chart": lambda rng, n, b: charts.make_charts(rng, n),
    "photo": lambda rng, n, b: photos.make_photos(rng, n, b["photos"]),
    "code": lambda rng, n, b: code.make_code(rng, n, b["snippets"], b["terminals"]),
    "table": lambda rng, n, b: tables.make_tables(rng, n),
    "multi_image": lambda rng, n, b: multi.make_multi(rng, n, b),
}
PIL_FORMAT = {"png": ("PNG", "png", {"optimize": True}), "jpeg": ("JPEG", "jpg", {"quality": 85, "optimize": True}),
              "webp": ("WEBP", "webp", {"quality": 80, "method": 4}), "gif": ("GIF", "gif", {})}
MAX_TOTAL_BYTES = 20 * 1024 * 1024


def encode_pic(pic: Pic) -> tuple[bytes, str]:
    """(file bytes, extension)."""
    name, ext, defaults = PIL_FORMAT[pic.fmt]
    buf = io.BytesIO()
    if pic.frames:
        pic.image.save(buf, name, save_all=True, append_images=pic.frames, duration=600, loop=0)
    else:
        pic.image.save(buf, name, **{**defaults, **pic.save})
    return buf.getvalue(), ext


def chunk_for(pic: Pic, sid: str, j: int, images: Path) -> dict:
    """Write the image (unless inline) and return its manifest chunk."""
    data, ext = encode_pic(pic)
    if pic.how == "data":
        return {"type": "image_url", "image_url": {"url": f"data:image/{ext};base64,{base64.b64encode(data).decode()}"}}
    rel = f"images/{sid}-{j}.{ext}"
    (images.parent / rel).write_bytes(data)
    if pic.how == "image_url":
        return {"type": "image_url", "image_url": {"url": rel}}
    return {"type": "image", "path": rel}


def record(item: Item, sid: str, images: Path) -> dict:
    messages = [{"role": "system", "content": item.system}] if item.system else []
    j = 0
    for parts, reply in item.turns:
        content = []
        for part in parts:
            if isinstance(part, str):
                content.append({"type": "text", "text": part})
            else:
                content.append(chunk_for(part, sid, j, images))
                j += 1
        messages += [{"role": "user", "content": content}, {"role": "assistant", "content": reply}]
    out = {"id": sid, "task": item.task, "messages": messages}
    return out | ({"answer": item.answer} if item.answer is not None else {})


def build_split(split: str, root: Path) -> int:
    """Write root/split/{manifest.jsonl, images/}; returns the number of samples."""
    out = root / split
    if (out / "images").exists():
        shutil.rmtree(out / "images")
    (out / "images").mkdir(parents=True)
    from rich.progress import track

    lines = []
    for task, n in track(PLAN[split].items(), description=f"rendering {split}", transient=True):
        items = MAKERS[task](seeded(split, task), n, BANKS[split])
        lines += [json.dumps(record(item, f"{split}-{task}-{k:03d}", out / "images"), ensure_ascii=False)
                  for k, item in enumerate(items)]
    (out / "manifest.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines)


def measure(root: Path) -> dict:
    """Statistics of both sets with both tokenizers, the disjointness check and the size on disk."""
    import os

    from pixtral_quant.calibration.dataset import load_set
    from pixtral_quant.calibration.sampling import check_disjoint

    os.environ["PIXTRAL_QUANT_CALIBRATION"] = str(root)
    sets = {s: load_set(f"builtin:{s}", "tekken", progress=True) for s in PLAN}
    check_disjoint(sets["calib"], sets["eval"])
    v7m1 = {s: load_set(f"builtin:{s}", "v7m1").stats for s in PLAN}
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and p.name != "README.md")
    return {"stats": {s: c.stats for s, c in sets.items()}, "v7m1": v7m1, "bytes": size, "root": root}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "calibration")
    parser.add_argument("--check", action="store_true", help="rebuild in a temp dir and compare with --out")
    args = parser.parse_args()
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            for split in PLAN:
                build_split(split, Path(tmp))
            diff = filecmp.dircmp(tmp, args.out)
            same = all(filecmp.cmp(p, args.out / p.relative_to(tmp), shallow=False)
                       for p in Path(tmp).rglob("*") if p.is_file())
            print("identical" if same else f"differs: {diff.diff_files}")
            return 0 if same else 1
    counts = {split: build_split(split, args.out) for split in PLAN}
    report = measure(args.out)
    if report["bytes"] > MAX_TOTAL_BYTES:
        print(f"built-in sets are {report['bytes'] / 2**20:.1f} MiB > 20 MiB", file=sys.stderr)
        return 1
    readme = render_readme(report, photos.CALIB_PHOTOS, photos.EVAL_PHOTOS)
    (args.out / "README.md").write_text(readme, encoding="utf-8")
    print(f"wrote {counts} samples, {report['bytes'] / 2**20:.1f} MiB, to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
