"""Where the files shipped inside the package live (bundled tiny model, config-only copies of real models)."""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
ASSETS = PACKAGE / "assets"
TINY_MODEL = ASSETS / "tiny-pixtral"
TINY_EVAL = ASSETS / "tiny-pixtral-eval"
CONFIGS = ASSETS / "configs"

# Names accepted wherever a model path is, e.g. `pixtral-quant inspect pixtral-12b`.
# Each maps to a directory holding only a config (no weights): enough for inspect and plan.
SHIPPED = {
    "tiny": TINY_MODEL,
    "pixtral-12b": CONFIGS / "pixtral-12b",
    "pixtral-12b-native": CONFIGS / "pixtral-12b-native",
    "pixtral-large": CONFIGS / "pixtral-large",
}


# The tokenizer each config-only copy's model ships with, as the mistral-common file of that name
# (loading.tokenizer.bundled_tokenizer_path): what the GGUF sizes need, since the token list is in the file.
SHIPPED_TOKENIZERS = {"pixtral-12b": "tekken", "pixtral-12b-native": "tekken", "pixtral-large": "v7m1"}


def resolve_shipped(name_or_path: str | Path) -> Path | None:
    """The shipped directory a short name refers to, or None when it is not a shipped name."""
    return SHIPPED.get(str(name_or_path))


# Folders kept at the repository root (the source of truth) that a wheel or sdist also carries: setup.py's
# build_py copies them to pixtral_quant/_shipped/ in the built package; a source checkout or an editable install
# reads them where they are.
SHIPPED_FOLDERS = ("recipes", "calibration")
PACKAGED = PACKAGE / "_shipped"


def shipped_folder(name: str) -> Path:
    """recipes/ or calibration/: the installed package's copy when there is one, else the checkout's folder.
    One lookup for every install: wheel, sdist, editable, or a plain checkout on sys.path."""
    if name not in SHIPPED_FOLDERS:
        raise ValueError(f"{name!r} is not one of {SHIPPED_FOLDERS}")
    packaged = PACKAGED / name
    return packaged if packaged.is_dir() else PACKAGE.parent / name
