"""GGUF key/value sets for Pixtral: the text model (arch `llama`), the mmproj (arch `clip`) and the tokenizer.

Each function takes the config (or the tokenizer file) and returns {key: gguf GGUFValue}. The values are set
through the `gguf` package's own GGUFWriter setters on a writer with no file, so key spellings and value types
are the package's (what llama.cpp's converter writes with the same calls); nothing is opened or written.
Which keys, and from which config field, follows llama.cpp's converter (conversion/base.py TextModel /
MmprojModel.set_gguf_parameters, conversion/llama.py, conversion/llava.py; docs/notes-gguf.md):
- text: head_dim is written as key/value length and RoPE dimension (Pixtral-12B: 128 ≠ 5120 / 32);
- mmproj: projector type `pixtral`, the image mean/std mistral-common normalises with (as export/processor.py);
- tokenizer: gguf.vocab.MistralVocab for tekken.json and SentencePiece tokenizer.model.v*, pre-tokenizer `tekken`
  for tekken, add_bos on, plus mistral-common's chat template (the one export/processor.py writes).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ...errors import InputError, require
from .dtypes import file_type

TEXT_ARCH = "llama"
# Pixtral's vision RMSNorm eps: not in the HF config, hard-coded 1e-5 in transformers' modeling_pixtral (and the
# value llama.cpp's converter falls back to).
PIXTRAL_VISION_NORM_EPS = 1e-5
# vision hidden_act → the GGUFWriter setter that records it (clip.use_silu / clip.use_gelu)
TEKKEN_NAME = "tekken.json"  # the only .json name mistral-common accepts as a tokenizer in a directory
ACTIVATION_SETTERS = {"silu": "add_vision_use_silu", "gelu": "add_vision_use_gelu"}


def _gguf():
    return require("gguf", "gguf")


def _values(arch: str, fill) -> dict:
    """Run `fill(writer)` on a GGUFWriter that has no file and return its key/values, general.architecture
    excluded (the real writer sets it from its arch). GGUFWriter keeps them in kv_data[0] (gguf 0.19.0)."""
    writer = _gguf().GGUFWriter(None, arch)
    fill(writer)
    values = dict(writer.kv_data[0])
    values.pop(_gguf().Keys.General.ARCHITECTURE)
    return values


def text_metadata(config, output: str) -> dict:
    """llama.* keys of the decoder. config: LlavaConfig; output: an output type name (general.file_type)."""
    gguf = _gguf()
    text = config.text_config

    def fill(w):
        w.add_type(gguf.GGUFType.MODEL)
        w.add_file_type(file_type(output))
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        w.add_context_length(text.max_position_embeddings)
        w.add_embedding_length(text.hidden_size)
        w.add_block_count(text.num_hidden_layers)
        w.add_feed_forward_length(text.intermediate_size)
        w.add_head_count(text.num_attention_heads)
        w.add_head_count_kv(text.num_key_value_heads)
        w.add_key_length(text.head_dim)
        w.add_value_length(text.head_dim)
        w.add_rope_dimension_count(text.head_dim)
        w.add_rope_freq_base(float(text.rope_parameters["rope_theta"]))
        w.add_layer_norm_rms_eps(float(text.rms_norm_eps))
        w.add_vocab_size(text.vocab_size)

    return _values(TEXT_ARCH, fill)


def mmproj_metadata(config, output: str) -> dict:
    """clip.* keys of the vision tower + projector. config: LlavaConfig; output: an output type name."""
    from mistral_common.tokens.tokenizers.image import DATASET_MEAN, DATASET_STD

    gguf = _gguf()
    vision = config.vision_config
    setter = ACTIVATION_SETTERS.get(vision.hidden_act)
    if setter is None:
        raise InputError(f"vision_config.hidden_act {vision.hidden_act!r} has no llama.cpp equivalent",
                         where="config.json", fix=f"llama.cpp's clip supports {', '.join(ACTIVATION_SETTERS)}")
    merge = getattr(config, "spatial_merge_size", None)

    def fill(w):
        w.add_type(gguf.GGUFType.MMPROJ)
        w.add_file_type(file_type(output))
        w.add_clip_has_vision_encoder(True)
        w.add_clip_projector_type(gguf.VisionProjectorType.PIXTRAL)
        w.add_vision_projection_dim(config.text_config.hidden_size)
        w.add_vision_image_size(vision.image_size)
        w.add_vision_patch_size(vision.patch_size)
        w.add_vision_embedding_length(vision.hidden_size)
        w.add_vision_feed_forward_length(vision.intermediate_size)
        w.add_vision_block_count(vision.num_hidden_layers)
        w.add_vision_head_count(vision.num_attention_heads)
        w.add_vision_attention_layernorm_eps(float(getattr(vision, "layer_norm_eps", PIXTRAL_VISION_NORM_EPS)))
        w.add_vision_image_mean(list(DATASET_MEAN))
        w.add_vision_image_std(list(DATASET_STD))
        getattr(w, setter)(True)
        if merge is not None:  # only Mistral3-style configs have one; Pixtral's llava config does not
            w.add_vision_spatial_merge_size(merge)

    return _values(_gguf().MODEL_ARCH_NAMES[gguf.MODEL_ARCH.MMPROJ], fill)


def mistral_vocab(tokenizer_path: Path):
    """gguf.vocab.MistralVocab of one Mistral tokenizer file (tekken.json or tokenizer.model.v*).

    MistralVocab takes a directory and picks a file itself (mistral-common's rules: `tekken.json` or a name ending
    in `.model.v*`); a directory holding only a link to `tokenizer_path`, under a name those rules accept, makes it
    read exactly this file. The vocabulary is read in the constructor."""
    gguf = _gguf()
    path = Path(tokenizer_path).resolve()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / (TEKKEN_NAME if path.suffix == ".json" else path.name)).symlink_to(path)
        try:
            return gguf.vocab.MistralVocab(Path(tmp))
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(f"gguf cannot read this tokenizer ({exc})", where=tokenizer_path,
                             fix="pass the original tekken.json or tokenizer.model.v* of the model") from None


def tokenizer_metadata(tokenizer_path: Path) -> dict:
    """tokenizer.* keys (tokens, scores, types, merges for tekken, special ids, chat template) for a Mistral
    tokenizer file, as llama.cpp's `_set_vocab_mistral` writes them. The token list has vocab_size entries."""
    from ..processor import chat_template

    vocab = mistral_vocab(tokenizer_path)
    tokens, scores, types = zip(*vocab.all_tokens())
    tekken = vocab.gguf_tokenizer_model == "gpt2"  # MistralVocab: "gpt2" for tekken, "llama" for SentencePiece

    def fill(w):
        w.add_tokenizer_model(vocab.gguf_tokenizer_model)
        if tekken:
            w.add_tokenizer_pre("tekken")
            w.add_token_merges(vocab.extract_vocab_merges_from_model())
        w.add_bos_token_id(vocab.bos_id)
        w.add_eos_token_id(vocab.eos_id)
        w.add_unk_token_id(vocab.unk_id)
        w.add_pad_token_id(vocab.pad_id)
        w.add_token_list(list(tokens))
        w.add_token_scores([float(s) for s in scores])  # tekken yields int 0s; llama.cpp reads floats
        w.add_token_types(list(types))
        w.add_add_bos_token(True)
        w.add_add_eos_token(False)
        w.add_chat_template(chat_template(Path(tokenizer_path)))

    return _values(TEXT_ARCH, fill)


def vocab_size(values: dict) -> int:
    """Number of tokens in a `tokenizer_metadata` result."""
    return len(values[_gguf().Keys.Tokenizer.LIST].value)
