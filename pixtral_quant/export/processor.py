"""Hugging Face processor and tokenizer files generated from a Mistral tokenizer file.

A Mistral-format Pixtral (and the bundled tiny model) carries only `tekken.json` or `tokenizer.model.v7m1`;
`AutoProcessor.from_pretrained` and vLLM's Pixtral HF processor need `tokenizer.json`, `tokenizer_config.json`,
a chat template and the image processor's settings. Everything here is built by transformers and
mistral-common (no hand-written tokenizer):

- tokenizer: tekken.json → transformers' `convert_tekken_tokenizer` (byte-level BPE); a SentencePiece
  `tokenizer.model.v*` → transformers' SentencePiece extraction into `LlamaTokenizer` (BPE, byte fallback,
  Metaspace), with its merges ordered by the SentencePiece piece scores — see `_sentencepiece_tokenizer`;
- chat template: mistral-common's own generator (`convert_tokenizer_to_chat_template`), which matches the
  tokenizer's version and backend ([INST] spacing differs between SentencePiece and tekken);
- images: `PixtralImageProcessor` with the vision tower's patch size and longest edge, mistral-common's
  normalisation constants; `PixtralProcessor` ties them ([IMG] rows, [IMG_BREAK], [IMG_END]).

Parity with mistral-common's `encode_chat_completion` (tests/test_processor_files.py): token ids equal for
chats with images; pixel values equal (≤ 1e-6) for images whose sides are multiples of 16 and ≤ the longest
edge. Images that need resizing differ in pixel values (transformers resamples with another bicubic, and floors
where mistral-common rounds above the longest edge): see calibration/encode.py's docstring.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

# Written by write_processor_files, by group; a source that has a group's key file keeps its own copy.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
IMAGE_FILES = ("preprocessor_config.json", "processor_config.json")
GENERATED_FILES = TOKENIZER_FILES + IMAGE_FILES
# Keys transformers' save_pretrained records about where the tokenizer was read from, not what it is:
# dropped so that the same tokenizer file always gives byte-identical files.
_LOAD_KEYS = ("is_local", "local_files_only", "vocab_file", "name_or_path")


def missing_groups(source: Path) -> tuple[str, ...]:
    """Which generated groups ('tokenizer', 'image') the source directory lacks.

    A source with its own tokenizer.json keeps its tokenizer files; one with a preprocessor_config.json or
    processor_config.json keeps its image settings (copied by export.checkpoint)."""
    groups = []
    if not (source / "tokenizer.json").is_file():
        groups.append("tokenizer")
    if not any((source / name).is_file() for name in IMAGE_FILES):
        groups.append("image")
    return tuple(groups)


def write_processor_files(out_dir: Path, config, tokenizer_path: Path,
                          groups: tuple[str, ...] = ("tokenizer", "image")) -> list[str]:
    """Write the HF files of `groups` for the Mistral tokenizer at `tokenizer_path` into `out_dir`.

    config: the LlavaConfig (vision_config.patch_size / image_size, spatial_merge_size when present).
    Returns the names written, sorted. The files are deterministic (sorted keys, no paths or versions that
    depend on where the tokenizer was read from)."""
    wanted = {"tokenizer": TOKENIZER_FILES, "image": IMAGE_FILES}
    names = sorted(name for group in groups for name in wanted[group])
    if not names:
        return []
    processor = build_processor(config, tokenizer_path)
    with tempfile.TemporaryDirectory() as tmp:
        processor.save_pretrained(tmp)
        # transformers 5 nests the image settings in processor_config.json; vLLM's loader (and transformers 4)
        # look for preprocessor_config.json, so it is written too.
        processor.image_processor.save_pretrained(tmp)
        for name in names:
            _copy_normalised(Path(tmp) / name, out_dir / name)
    return names


def build_processor(config, tokenizer_path: Path):
    """A transformers PixtralProcessor for the Mistral tokenizer file and the model's vision config."""
    from transformers import PixtralProcessor

    template = chat_template(tokenizer_path)
    vision = config.vision_config
    return PixtralProcessor(
        image_processor=image_processor(vision.patch_size, vision.image_size),
        tokenizer=hf_tokenizer(tokenizer_path, template),
        patch_size=vision.patch_size,
        spatial_merge_size=getattr(config, "spatial_merge_size", 1),
        chat_template=template,
    )


def chat_template(tokenizer_path: Path) -> str:
    """mistral-common's Jinja chat template for this tokenizer file (its version, backend, image support)."""
    from mistral_common.integrations.chat_templates.chat_templates import convert_tokenizer_to_chat_template

    return convert_tokenizer_to_chat_template(str(tokenizer_path))


def image_processor(patch_size: int, longest_edge: int):
    """PixtralImageProcessor: resize to ≤ longest_edge, sides up to multiples of patch_size, normalised with
    the constants mistral-common's image encoder uses (CLIP's)."""
    from mistral_common.tokens.tokenizers.image import DATASET_MEAN, DATASET_STD
    from transformers import PixtralImageProcessor

    return PixtralImageProcessor(patch_size={"height": patch_size, "width": patch_size},
                                 size={"longest_edge": longest_edge},
                                 image_mean=list(DATASET_MEAN), image_std=list(DATASET_STD))


def hf_tokenizer(tokenizer_path: Path, template: str):
    """The transformers tokenizer equivalent to the Mistral file (tekken.json or tokenizer.model.v*)."""
    if tokenizer_path.suffix == ".json":
        from transformers.integrations.mistral.tokenizer import convert_tekken_tokenizer

        return convert_tekken_tokenizer(str(tokenizer_path), chat_template=template)
    return _sentencepiece_tokenizer(tokenizer_path, template)


def _sentencepiece_tokenizer(path: Path, template: str):
    """LlamaTokenizer from transformers' SentencePiece extraction of `path`.

    Why the merges are regenerated: transformers 5's extraction orders BPE merges by vocabulary id, but
    SentencePiece's BPE merges the best-scoring piece first, and Mistral's whitespace pieces (▁▁, ▁▁▁ ...) sit
    early in the vocabulary with the lowest score; ordered by id, runs of spaces (code indentation, aligned
    receipts) tokenize differently. transformers' own `generate_merges` with the piece scores gives
    SentencePiece's order. legacy=False: no ▁ is prepended after special tokens; mistral-common's
    SentencePiece chat template writes those spaces itself."""
    from tokenizers.models import BPE
    from transformers import LlamaTokenizer
    from transformers.convert_slow_tokenizer import SentencePieceExtractor, generate_merges

    extractor = SentencePieceExtractor(str(path))
    kwargs = extractor.extract(BPE)
    kwargs.pop("_spm_precompiled_charsmap", None)  # Mistral's models use the identity normaliser
    scores = [(piece.piece, piece.score) for piece in extractor.proto.pieces]
    kwargs["merges"] = generate_merges(kwargs["vocab"], scores)
    return LlamaTokenizer(**kwargs, legacy=False, add_prefix_space=True, chat_template=template)


def _copy_normalised(src: Path, dst: Path) -> None:
    """Copy one saved file; JSON configs get sorted keys and lose the load-location keys (_LOAD_KEYS);
    tokenizer.json is rewritten by `tokenizers` without indentation (a third of the size, same content)."""
    if src.name == "tokenizer.json":
        from tokenizers import Tokenizer

        Tokenizer.from_file(str(src)).save(str(dst), pretty=False)
        return
    if src.suffix != ".json":
        shutil.copyfile(src, dst)
        return
    data = json.loads(src.read_text(encoding="utf-8"))
    for key in _LOAD_KEYS:
        data.pop(key, None)
    dst.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
