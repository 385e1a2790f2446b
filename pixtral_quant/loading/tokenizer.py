"""Find and open the tokenizer a Pixtral directory carries, in whichever form it holds it.

Mistral-format files (tekken.json, tokenizer.model.v3/.v7/.v7m1) are opened with mistral-common,
which is what `encode_chat_completion` parity is defined against. A directory with only a Hugging Face
`tokenizer.json` is reported as such (transformers reads it); encoding calibration prompts needs the
Mistral file, and the error says so.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError

# Preference order when a directory holds several: the Mistral files are the reference.
MISTRAL_FILES = ("tekken.json", "tokenizer.model.v7m1", "tokenizer.model.v7", "tokenizer.model.v3")
HF_FILES = ("tokenizer.json",)

# mistral-common ships the real tokenizers; these are the names inside its data/ folder.
_BUNDLED = {"tekken": "tekken_240911.json", "v7m1": "mistral_instruct_tokenizer_241114.model.v7m1"}


def bundled_tokenizer_path(kind: str) -> Path:
    """Path of a real tokenizer installed with mistral-common ('tekken' = Pixtral-12B, 'v7m1' = Large)."""
    import mistral_common

    return Path(mistral_common.__file__).parent / "data" / _BUNDLED[kind]


def find_tokenizer(directory: Path) -> tuple[str, Path] | None:
    """('mistral' | 'hf', path) for the tokenizer in `directory`, or None when it holds none."""
    for name in MISTRAL_FILES:
        if (directory / name).is_file():
            return "mistral", directory / name
    for name in HF_FILES:
        if (directory / name).is_file():
            return "hf", directory / name
    return None


def require_mistral_tokenizer(directory: Path) -> Path:
    found = find_tokenizer(directory)
    if found is None:
        raise InputError(
            "no tokenizer file found",
            where=directory,
            fix=f"copy the model's tokenizer ({', '.join(MISTRAL_FILES + HF_FILES)}) into this directory",
        )
    kind, path = found
    if kind != "mistral":
        raise InputError(
            "only a Hugging Face tokenizer.json is here; prompts are encoded with the Mistral tokenizer file",
            where=directory,
            fix="copy tekken.json (Pixtral-12B) or tokenizer.model.v7m1 (Pixtral Large) from the original model",
        )
    return path


def open_mistral_tokenizer(path: Path, finetuning: bool = False):
    """A mistral_common MistralTokenizer. finetuning=True accepts a final assistant turn (training,
    teacher-forced scoring); the default serving mode wants the conversation to end with the user."""
    from mistral_common.exceptions import MistralCommonException
    from mistral_common.protocol.instruct.validator import ValidationMode
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    path = Path(path)
    if path.name in HF_FILES:
        raise InputError("this is a Hugging Face tokenizer.json; prompts are encoded with the Mistral tokenizer file",
                         where=path, fix="copy tekken.json (Pixtral-12B) or tokenizer.model.v7m1 (Pixtral Large) "
                                         "from the original model next to it")
    mode = ValidationMode.finetuning if finetuning else ValidationMode.test
    try:
        return MistralTokenizer.from_file(str(path), mode=mode)
    except (OSError, ValueError, KeyError, RuntimeError, MistralCommonException) as exc:
        raise InputError(f"cannot read the tokenizer ({exc})", where=path,
                         fix="replace it with the original file from the model repository") from None


def image_token_ids(path: Path) -> dict[str, int] | None:
    """{'image_token_id', 'image_break_token_id', 'image_end_token_id'} of a Mistral tokenizer file (what
    params.json records), or None for a tokenizer without image support or a Hugging Face tokenizer.json."""
    if path.name in HF_FILES:
        return None
    encoder = open_mistral_tokenizer(path).instruct_tokenizer.image_encoder
    if encoder is None:
        return None
    ids = encoder.special_ids
    return {"image_token_id": ids.img, "image_break_token_id": ids.img_break, "image_end_token_id": ids.img_end}
