"""GGUF export (pixtral_quant.export.gguf): the bundled tiny model written as a llama.cpp text GGUF and mmproj
(F16 and Q8_0) and read back with gguf.GGUFReader; names, keys, shapes, types and every weight checked against the
Hugging Face tensors; tokenizers (v7m1, tekken); importance-matrix math and file round trip.

llama.cpp itself is not run here (llama-cpp-python is a separate, later step); conventions are llama.cpp's
converter's at commit 0c1e57098 (docs/notes-gguf.md), copied below where a test needs an independent reference.
"""

from __future__ import annotations

import shutil

import gguf  # in the dev extra (CI installs it): a missing package fails here, never skips
import numpy as np
import pytest
import torch

from pixtral_quant.errors import InputError, UsageError
from pixtral_quant.export.gguf import dtypes, imatrix, metadata, names, writer
from pixtral_quant.export.processor import chat_template
from pixtral_quant.loading import open_checkpoint
from pixtral_quant.loading.tokenizer import bundled_tokenizer_path

Q = gguf.GGMLQuantizationType
V7M1_IMG_BREAK = 14  # [IMG_BREAK] in mistral-common's v7m1 tokenizer (12 in tekken_240911)


def llamacpp_permute(w: torch.Tensor, n_head: int, n_head_kv: int | None) -> torch.Tensor:
    """Copy of llama.cpp's LlamaModel.permute (conversion/llama.py): the independent reference."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Inverse of llamacpp_permute: interleaved pairs back to HF rotate-half rows."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


# --- fixtures: one checkpoint, its tensors, and the four files, written once ------------------------------------

@pytest.fixture(scope="module")
def ckpt(tiny_model_dir):
    return open_checkpoint(tiny_model_dir)


@pytest.fixture(scope="module")
def hf(ckpt):
    """Runtime name → tensor (bf16, HF layout)."""
    return dict(ckpt.iter_tensors())


@pytest.fixture(scope="module")
def files(ckpt, tmp_path_factory):
    out = tmp_path_factory.mktemp("gguf")
    return {(kind, dt): write(ckpt, out / f"{kind}-{dt}.gguf", dt)
            for kind, write in (("text", writer.write_text_gguf), ("mmproj", writer.write_mmproj_gguf))
            for dt in ("f16", "q8_0")}


def read(path):
    reader = gguf.GGUFReader(path)
    return reader, {t.name: t for t in reader.tensors}


def field(reader, key):
    f = reader.get_field(key)
    assert f is not None, f"{key} missing"
    return f.contents()


def expected_names(cfg) -> dict[str, tuple[str, str, str | None]]:
    """GGUF name → (file, runtime source, rope kind) for the tiny model: the table the brief and the notes give."""
    out = {"token_embd.weight": ("text", "model.language_model.embed_tokens.weight", None),
           "output_norm.weight": ("text", "model.language_model.norm.weight", None),
           "output.weight": ("text", "lm_head.weight", None),
           "v.patch_embd.weight": ("mmproj", "model.vision_tower.patch_conv.weight", None),
           "v.pre_ln.weight": ("mmproj", "model.vision_tower.ln_pre.weight", None),
           "v.token_embd.img_break": ("mmproj", "model.language_model.embed_tokens.weight", "row")}
    for i in (1, 2):
        for part in ("weight", "bias"):
            out[f"mm.{i}.{part}"] = ("mmproj", f"model.multi_modal_projector.linear_{i}.{part}", None)
    text = {"attn_q": ("self_attn.q_proj", "text_q"), "attn_k": ("self_attn.k_proj", "text_k"),
            "attn_v": ("self_attn.v_proj", None), "attn_output": ("self_attn.o_proj", None),
            "ffn_gate": ("mlp.gate_proj", None), "ffn_up": ("mlp.up_proj", None), "ffn_down": ("mlp.down_proj", None),
            "attn_norm": ("input_layernorm", None), "ffn_norm": ("post_attention_layernorm", None)}
    for b in range(cfg.text_config.num_hidden_layers):
        for g, (h, rope) in text.items():
            out[f"blk.{b}.{g}.weight"] = ("text", f"model.language_model.layers.{b}.{h}.weight", rope)
    vision = {"attn_q": ("attention.q_proj", "vision_q"), "attn_k": ("attention.k_proj", "vision_k"),
              "attn_v": ("attention.v_proj", None), "attn_out": ("attention.o_proj", None),
              "ffn_gate": ("feed_forward.gate_proj", None), "ffn_up": ("feed_forward.up_proj", None),
              "ffn_down": ("feed_forward.down_proj", None), "ln1": ("attention_norm", None),
              "ln2": ("ffn_norm", None)}
    for b in range(cfg.vision_config.num_hidden_layers):
        for g, (h, rope) in vision.items():
            out[f"v.blk.{b}.{g}.weight"] = ("mmproj", f"model.vision_tower.transformer.layers.{b}.{h}.weight", rope)
    return out


def heads(cfg, rope):
    return {"text_q": cfg.text_config.num_attention_heads, "text_k": cfg.text_config.num_key_value_heads,
            "vision_q": cfg.vision_config.num_attention_heads, "vision_k": cfg.vision_config.num_attention_heads}[rope]


def reference(hf, cfg, gname, spec) -> torch.Tensor:
    """The HF tensor a GGUF tensor must hold, in llama.cpp's layout (float32)."""
    _, source, rope = spec
    t = hf[source].to(torch.float32)
    if rope == "row":
        return t[V7M1_IMG_BREAK]
    if rope is not None:
        n = heads(cfg, rope)
        return llamacpp_permute(t, n, n)
    return t


# --- names and permutation -------------------------------------------------------------------------------------

def test_permutation_is_llamacpps():
    """names.llama_permute equals llama.cpp's LlamaModel.permute (q: all heads; k: the KV heads), and is not
    the identity or its own inverse (so a swapped direction would fail)."""
    torch.manual_seed(0)
    w = torch.randn(4 * 16, 24)
    k = torch.randn(2 * 16, 24)
    assert torch.equal(names.llama_permute(w, 4), llamacpp_permute(w, 4, 4))
    assert torch.equal(names.llama_permute(k, 2), llamacpp_permute(k, 4, 2))
    assert not torch.equal(names.llama_permute(w, 4), w)
    assert not torch.equal(names.llama_permute(names.llama_permute(w, 4), 4), w)
    assert torch.equal(unpermute(names.llama_permute(w, 4), 4), w)


def test_name_table(ckpt):
    """Every checkpoint tensor maps to the GGUF name the table says, in the right file, with the right rope kind."""
    want = expected_names(ckpt.config)
    maps = names.name_maps(ckpt.config)
    got = {}
    for runtime in ckpt.tensors:
        file, gname = names.gguf_name(runtime, maps)
        got[gname] = (file, runtime, names.rope_kind(runtime))
    got[names.img_break_name()] = want["v.token_embd.img_break"]
    assert got == want
    assert names.gguf_name("model.vision_tower.not_a_tensor.weight", maps) is None


def test_text_metadata_uses_head_dim(ckpt):
    """key/value length and RoPE dimension come from head_dim, not hidden / heads (Pixtral-12B: 128 ≠ 160)."""
    import copy

    cfg = copy.deepcopy(ckpt.config)
    cfg.text_config.head_dim = 32  # hidden 256 / 4 heads = 64
    values = {k: v.value for k, v in metadata.text_metadata(cfg, "f16").items()}
    assert [values[f"llama.{k}"] for k in ("attention.key_length", "attention.value_length",
                                           "rope.dimension_count")] == [32, 32, 32]


# --- text GGUF -------------------------------------------------------------------------------------------------

def test_text_keys(files, ckpt):
    t = ckpt.config.text_config
    want = {"general.architecture": "llama", "general.type": "model", "general.file_type": 1,
            "general.quantization_version": 2,
            "llama.context_length": t.max_position_embeddings, "llama.embedding_length": 256,
            "llama.block_count": 4, "llama.feed_forward_length": 768, "llama.attention.head_count": 4,
            "llama.attention.head_count_kv": 2, "llama.attention.key_length": 64,
            "llama.attention.value_length": 64, "llama.rope.dimension_count": 64,
            "llama.rope.freq_base": 1e6, "llama.attention.layer_norm_rms_epsilon": pytest.approx(1e-5),
            "llama.vocab_size": 32768,
            "tokenizer.ggml.model": "llama", "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2,
            "tokenizer.ggml.unknown_token_id": 0, "tokenizer.ggml.padding_token_id": 2,
            "tokenizer.ggml.add_bos_token": True, "tokenizer.ggml.add_eos_token": False,
            "tokenizer.chat_template": chat_template(ckpt.tokenizer)}
    reader, _ = read(files["text", "f16"])
    assert {k: field(reader, k) for k in want} == want
    assert reader.get_field("tokenizer.ggml.pre") is None  # SentencePiece: no pre-tokenizer
    assert field(read(files["text", "q8_0"])[0], "general.file_type") == 7  # LlamaFileType.MOSTLY_Q8_0


def test_text_tokens_v7m1(files):
    reader, _ = read(files["text", "f16"])
    tokens = field(reader, "tokenizer.ggml.tokens")
    types = field(reader, "tokenizer.ggml.token_type")
    assert len(tokens) == len(types) == len(field(reader, "tokenizer.ggml.scores")) == 32768
    assert (tokens[0], tokens[1], tokens[2], tokens[V7M1_IMG_BREAK]) == ("<unk>", "<s>", "</s>", "[IMG_BREAK]")
    # UNKNOWN, CONTROL ×748 (specials), BYTE ×256 (<0x00>..<0xFF>), NORMAL
    assert (types[0], types[1], types[V7M1_IMG_BREAK], types[1000], types[5000]) == (2, 3, 3, 6, 1)
    assert [types.count(k) for k in (2, 3, 6, 1)] == [1, 748, 256, 32768 - 1005]


@pytest.mark.parametrize("dt", ["f16", "q8_0"])
def test_text_tensors(files, ckpt, hf, dt):
    """Names, GGUF (reversed) shapes, types and values of every text tensor; F16 exact vs the bf16 → f16 cast,
    Q8_0 within half a quantization step of each 32-block (its f16 scale adds ≤ 2^-11 relative)."""
    want = {k: v for k, v in expected_names(ckpt.config).items() if v[0] == "text"}
    _, tensors = read(files["text", dt])
    assert set(tensors) == set(want)
    for gname, spec in want.items():
        t, ref = tensors[gname], reference(hf, ckpt.config, gname, spec)
        assert [int(d) for d in t.shape] == list(reversed(ref.shape)), gname
        if ref.dim() == 1:
            assert t.tensor_type == Q.F32, gname
            assert torch.equal(torch.from_numpy(np.array(t.data)), ref), gname
        elif dt == "f16":
            assert t.tensor_type == Q.F16, gname
            assert torch.equal(torch.from_numpy(np.array(t.data)), ref.to(torch.float16)), gname
        else:
            assert t.tensor_type == Q.Q8_0, gname
            check_q8_0(t, ref, gname)


def check_q8_0(t, ref: torch.Tensor, gname: str) -> None:
    back = torch.from_numpy(gguf.quants.dequantize(np.array(t.data), Q.Q8_0)).reshape(ref.shape)
    err = (back - ref).abs()
    step = ref.reshape(ref.shape[0], -1, 32).abs().amax(-1, keepdim=True) / 127
    bound = (0.5 + 127 * 2.0 ** -11) * step.expand(-1, -1, 32).reshape(ref.shape) + 1e-12
    assert bool((err <= bound).all()), (gname, float((err - bound).max()))
    assert float(err.max()) > 0, gname  # really quantized


# --- mmproj ----------------------------------------------------------------------------------------------------

def test_mmproj_keys(files, ckpt):
    from mistral_common.tokens.tokenizers.image import DATASET_MEAN, DATASET_STD

    want = {"general.architecture": "clip", "general.type": "mmproj", "general.file_type": 1,
            "clip.has_vision_encoder": True, "clip.projector_type": "pixtral", "clip.use_silu": True,
            "clip.vision.projection_dim": 256, "clip.vision.image_size": 1024, "clip.vision.patch_size": 16,
            "clip.vision.embedding_length": 128, "clip.vision.feed_forward_length": 512,
            "clip.vision.block_count": 2, "clip.vision.attention.head_count": 4,
            "clip.vision.attention.layer_norm_epsilon": pytest.approx(1e-5),
            "clip.vision.image_mean": pytest.approx(list(DATASET_MEAN)),
            "clip.vision.image_std": pytest.approx(list(DATASET_STD))}
    reader, _ = read(files["mmproj", "f16"])
    assert {k: field(reader, k) for k in want} == want
    assert reader.get_field("clip.use_gelu") is None and reader.get_field("clip.vision.spatial_merge_size") is None
    assert field(read(files["mmproj", "q8_0"])[0], "general.file_type") == 7


@pytest.mark.parametrize("dt", ["f16", "q8_0"])
def test_mmproj_tensors(files, ckpt, hf, dt):
    """Vision q/k permuted with the vision heads; patch_embd F16 in F16 files, F32 otherwise; 1-D tensors F32;
    v.token_embd.img_break = the [IMG_BREAK] row of the text embeddings."""
    want = {k: v for k, v in expected_names(ckpt.config).items() if v[0] == "mmproj"}
    _, tensors = read(files["mmproj", dt])
    assert set(tensors) == set(want)
    for gname, spec in want.items():
        t, ref = tensors[gname], reference(hf, ckpt.config, gname, spec)
        assert [int(d) for d in t.shape] == list(reversed(ref.shape)), gname
        data = np.array(t.data)
        if ref.dim() == 1:
            assert t.tensor_type == Q.F32 and torch.equal(torch.from_numpy(data), ref), gname
        elif gname == "v.patch_embd.weight":
            assert t.tensor_type == (Q.F16 if dt == "f16" else Q.F32), gname
            assert torch.equal(torch.from_numpy(data).float(), ref.to(torch.float16 if dt == "f16" else torch.float32)
                               .float()), gname
        elif dt == "f16":
            assert t.tensor_type == Q.F16 and torch.equal(torch.from_numpy(data), ref.to(torch.float16)), gname
        else:
            assert t.tensor_type == Q.Q8_0, gname
            check_q8_0(t, ref, gname)
    row = torch.from_numpy(np.array(tensors["v.token_embd.img_break"].data))
    embed = hf["model.language_model.embed_tokens.weight"].float()
    assert torch.equal(row, embed[V7M1_IMG_BREAK]) and not torch.equal(row, embed[V7M1_IMG_BREAK + 1])


def test_native_twin_gives_the_same_files(native_twin_dir, files, tmp_path):
    """A Mistral-native source (interleaved q/k on disk) gives tensors identical to the HF source's."""
    twin = open_checkpoint(native_twin_dir)
    for kind, write in (("text", writer.write_text_gguf), ("mmproj", writer.write_mmproj_gguf)):
        _, got = read(write(twin, tmp_path / f"{kind}.gguf", "f16"))
        _, want = read(files[kind, "f16"])
        assert set(got) == set(want)
        for name in want:
            assert np.array_equal(np.array(got[name].data), np.array(want[name].data)), name


# --- tokenizers ------------------------------------------------------------------------------------------------

def test_tekken_tokenizer_keys():
    """Pixtral-12B's tekken.json (mistral-common's bundled copy): gpt2 model, pre-tokenizer tekken, merges,
    131072 tokens with the special ones first and CONTROL."""
    path = bundled_tokenizer_path("tekken")
    values = {k: v.value for k, v in metadata.tokenizer_metadata(path).items()}
    assert values["tokenizer.ggml.model"] == "gpt2" and values["tokenizer.ggml.pre"] == "tekken"
    tokens, types = values["tokenizer.ggml.tokens"], values["tokenizer.ggml.token_type"]
    assert len(tokens) == len(types) == len(values["tokenizer.ggml.scores"]) == 131072
    assert (tokens[1], tokens[2], tokens[12]) == (b"<s>", b"</s>", b"[IMG_BREAK]")
    assert types[12] == gguf.TokenType.CONTROL and types[2000] == gguf.TokenType.NORMAL
    assert (values["tokenizer.ggml.bos_token_id"], values["tokenizer.ggml.eos_token_id"]) == (1, 2)
    assert len(values["tokenizer.ggml.merges"]) > 100_000
    assert values["tokenizer.chat_template"] == chat_template(path)


def test_tokenizer_size_mismatch_is_refused(tiny_model_dir, tmp_path):
    """A tekken.json (131072 tokens) next to the tiny model (32768 rows): one InputError, nothing written."""
    src = tmp_path / "model"
    shutil.copytree(tiny_model_dir, src)
    shutil.copyfile(bundled_tokenizer_path("tekken"), src / "tekken.json")
    out = tmp_path / "text.gguf"
    with pytest.raises(InputError, match="131072 tokens but the model's vocab_size is 32768"):
        writer.write_text_gguf(open_checkpoint(src), out, "f16")
    assert list(tmp_path.iterdir()) == [src]


def test_bad_output_type():
    with pytest.raises(UsageError, match="f32, f16, bf16, q8_0"):
        dtypes.check_output_type("q4_k_m")


def test_tensors_are_streamed(ckpt, tmp_path, monkeypatch):
    """GGUFWriter.add_tensor keeps every array until the end; the writer must never call it (one tensor at a
    time through write_tensor_data instead)."""
    def hold_all(*args, **kwargs):
        raise AssertionError("GGUFWriter.add_tensor buffers the whole model")

    monkeypatch.setattr(gguf.GGUFWriter, "add_tensor", hold_all)
    assert writer.write_mmproj_gguf(ckpt, tmp_path / "mmproj.gguf", "q8_0").is_file()


def test_failed_write_leaves_nothing(ckpt, tmp_path, monkeypatch):
    calls = []

    def failing(tensor, qt):
        calls.append(1)
        if len(calls) == 5:
            raise RuntimeError("disk full")
        return gguf.quants.quantize(tensor.float().numpy(), qt)

    monkeypatch.setattr(dtypes, "encode", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        writer.write_mmproj_gguf(ckpt, tmp_path / "mmproj.gguf", "f16")
    assert list(tmp_path.iterdir()) == []


# --- importance matrix -----------------------------------------------------------------------------------------

def test_imatrix_accumulation_and_payload():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    entry = imatrix.accumulate(imatrix.accumulate(None, x), torch.ones(2, 2, 3, dtype=torch.bfloat16))
    assert entry.in_sum2.dtype == torch.float64
    assert entry.in_sum2.tolist() == [21.0, 33.0, 49.0] and entry.count == 6
    assert imatrix.quantize_payload(entry).tolist() == pytest.approx([3.5, 5.5, 49 / 6])
    assert imatrix.quantize_payload(imatrix.ImatrixEntry(torch.zeros(3, dtype=torch.float64), 0)).tolist() == [1, 1, 1]
    # batches add up to the whole
    torch.manual_seed(1)
    a = torch.randn(5, 7, 16)
    split = imatrix.accumulate(imatrix.accumulate(None, a[:2]), a[2:])
    whole = imatrix.accumulate(None, a)
    assert split.count == whole.count == 35
    assert torch.allclose(split.in_sum2, whole.in_sum2, rtol=1e-12)


def test_imatrix_file_round_trip(tmp_path):
    entries = {"blk.0.attn_q.weight": imatrix.ImatrixEntry(torch.tensor([21.0, 33.0, 49.0], dtype=torch.float64), 6),
               "output.weight": imatrix.ImatrixEntry(torch.tensor([0.5, 8.0], dtype=torch.float64), 1)}
    im = imatrix.Imatrix(entries, ("calibration/tiny", "images"), 7, 512)
    path = imatrix.write_imatrix(im, tmp_path / "imatrix.gguf")
    reader, tensors = read(path)
    # the layout llama-imatrix writes: general.type, imatrix.* keys, no architecture; [in, 1] and [1, 1] F32
    assert field(reader, "general.type") == "imatrix" and reader.get_field("general.architecture") is None
    assert (field(reader, "imatrix.chunk_count"), field(reader, "imatrix.chunk_size")) == (7, 512)
    assert field(reader, "imatrix.datasets") == ["calibration/tiny", "images"]
    assert [int(d) for d in tensors["blk.0.attn_q.weight.in_sum2"].shape] == [3, 1]
    assert [int(d) for d in tensors["blk.0.attn_q.weight.counts"].shape] == [1, 1]
    assert {t.tensor_type for t in tensors.values()} == {Q.F32}
    back = imatrix.read_imatrix(path)
    assert back.datasets == im.datasets and (back.chunk_count, back.chunk_size) == (7, 512)
    assert set(back.entries) == set(entries)
    for name, entry in entries.items():
        assert torch.equal(back.entries[name].in_sum2, entry.in_sum2) and back.entries[name].count == entry.count
    payload = imatrix.payloads(back)
    assert payload["blk.0.attn_q.weight"].tolist() == pytest.approx([3.5, 5.5, 49 / 6])
    assert payload["output.weight"].tolist() == [0.5, 8.0]


def test_read_imatrix_refuses_a_model_file(files):
    with pytest.raises(InputError, match="not a GGUF importance matrix"):
        imatrix.read_imatrix(files["mmproj", "f16"])
