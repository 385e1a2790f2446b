"""Where the files shipped inside the package live (bundled tiny model, config-only copies of real models)."""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "assets"
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
