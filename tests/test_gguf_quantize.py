"""llama.cpp's quantizer on our GGUF files (pixtral_quant.export.gguf.quantize), checked against the Python port of
its per-tensor type choice (ktypes) and the byte-exact size prediction (size): the bundled tiny model, and a
synthesized one whose widths do not split into 256-blocks (320, 784: llama.cpp's shape fallbacks) and whose
attention has 4 query heads per KV head (its n_gqa ≥ 4 rules), 9 layers (its per-layer rules).

The tests that run llama.cpp's quantizer request conftest's `llama_cpp` fixture (llama-cpp-python, the `llamacpp`
extra): skipped without it, except under CI=true, where .ci/run installs it and a missing package fails. The type
tables, the sizes of the files the gguf package writes and the refusals before llama.cpp loads run without it.
"""

from __future__ import annotations

import json
import sys

import gguf
import numpy as np
import pytest

from pixtral_quant.errors import InputError, MissingDependencyError, UsageError
from pixtral_quant.export.gguf import ftypes, ktypes, quantize, size, writer
from pixtral_quant.loading import open_checkpoint
from pixtral_quant.synth import synthesize

needs_llama_cpp = pytest.mark.usefixtures("llama_cpp")  # for the tests that call llama.cpp's quantizer themselves
Q = gguf.GGMLQuantizationType
TINY_TYPES = ("q4_k_m", "q6_k", "q8_0", "q3_k_m")
# one type per fallback of llama.cpp's table (Q4_K → Q5_0, Q2_K/Q3_K → Q4_0, Q6_K → Q8_0, IQ4_XS → IQ4_NL, Q5_K → Q5_1,
# then F16) and per output rule; every type was checked the same way on the tiny model while porting (report)
ODD_TYPES = ("q4_k_m", "q2_k", "q6_k", "iq4_xs", "q3_k_m", "q8_0")


def tensors_of(path) -> dict:
    """GGUF name → (GGML type, data bytes) as llama.cpp wrote them."""
    return {t.name: (t.tensor_type, int(t.n_bytes)) for t in gguf.GGUFReader(path).tensors}


def shapes_of(path) -> list[tuple[str, tuple[int, ...]]]:
    """(name, PyTorch shape) of every tensor of a GGUF file (GGUF lists ne0 first)."""
    return [(t.name, tuple(int(d) for d in reversed(t.shape))) for t in gguf.GGUFReader(path).tensors]


def check_against_prediction(path, src_shapes, skeleton, type_name: str, has_imatrix: bool = False) -> dict:
    """Every tensor's type equals ktypes', the file size and per-tensor bytes equal size's, and general.file_type
    is the type's llama_ftype."""
    reader = gguf.GGUFReader(path)  # one read per file: it parses the 32768-token vocabulary (≈ 1 s)
    got = {t.name: (t.tensor_type, int(t.n_bytes)) for t in reader.tensors}
    want = ktypes.tensor_types(src_shapes, type_name, skeleton.n_layer, skeleton.n_head, skeleton.n_head_kv,
                               has_imatrix)
    assert {n: t for n, (t, _) in got.items()} == want, type_name
    predicted = skeleton.sizes(type_name, "f16", has_imatrix)
    assert {n: (t.name, b) for n, (t, b) in got.items()} == predicted.text_tensors, type_name
    assert path.stat().st_size == predicted.text_bytes, type_name
    assert reader.get_field("general.file_type").contents() == ftypes.FILE_TYPES[type_name]
    return got


# --- the tiny model --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ckpt(tiny_model_dir):
    return open_checkpoint(tiny_model_dir)


@pytest.fixture(scope="module")
def f16(ckpt, tmp_path_factory):
    return writer.write_text_gguf(ckpt, tmp_path_factory.mktemp("f16") / "model.gguf", "f16")


@pytest.fixture(scope="module")
def f16_shapes(f16):
    return shapes_of(f16)


@pytest.fixture(scope="module")
def skeleton(ckpt):
    """size's measurement of the tiny model's GGUF metadata, from its config and tokenizer only."""
    return size.skeleton(size.shapes_only(ckpt.config, ckpt.tokenizer))


@pytest.fixture(scope="module")
def quantized(llama_cpp, f16, tmp_path_factory):
    """The tiny model's F16 text GGUF quantized by llama.cpp to each of TINY_TYPES."""
    out = tmp_path_factory.mktemp("quantized")
    return {t: quantize.quantize_file(f16, out / f"{t}.gguf", t) for t in TINY_TYPES}


@pytest.fixture(scope="module")
def payload(f16_shapes):
    """A random positive imatrix for every quantized weight (llama-imatrix has no token_embd entry)."""
    rng = np.random.default_rng(0)
    return {n: rng.uniform(0.1, 10.0, s[-1]).astype(np.float32) for n, s in f16_shapes
            if len(s) == 2 and n != "token_embd.weight"}


def test_file_types_are_llamacpps(llama_cpp):
    """ftypes.FILE_TYPES equals llama.cpp's LLAMA_FTYPE_MOSTLY_* (and ALL_F32) values."""
    for name, value in ftypes.FILE_TYPES.items():
        const = "LLAMA_FTYPE_ALL_F32" if name == "f32" else f"LLAMA_FTYPE_MOSTLY_{name.upper()}"
        assert getattr(llama_cpp, const) == value, name
    assert set(ktypes.checked_types()) == set(ftypes.FILE_TYPES)


def test_use_more_bits():
    """llama.cpp's layer selection for the Q4_K_M / Q5_K_M upgrades, for 9 and 40 (Pixtral-12B) layers."""
    assert [i for i in range(9) if ktypes.use_more_bits(i, 9)] == [0, 3, 6, 7, 8]
    assert [i for i in range(40) if ktypes.use_more_bits(i, 40)] == [0, 1, 2, 3, 4, 7, 10, 13, 16, 19, 22, 25,
                                                                     28, 31, 34, 35, 36, 37, 38, 39]


def test_text_f16_and_mmproj_sizes(ckpt, f16, tmp_path):
    """Files writer.py writes are exactly as large as size predicts from the config and tokenizer alone."""
    for mm in ("f16", "q8_0"):
        predicted = size.gguf_sizes(ckpt.config, ckpt.tokenizer, "f16", mm)
        path = writer.write_mmproj_gguf(ckpt, tmp_path / f"mmproj-{mm}.gguf", mm)
        assert path.stat().st_size == predicted.mmproj_bytes, mm
        assert {n: (t.name, b) for n, (t, b) in tensors_of(path).items()} == predicted.mmproj_tensors, mm
    assert f16.stat().st_size == predicted.text_bytes == 40_609_344


@pytest.mark.parametrize("type_name", TINY_TYPES)
def test_quantized_tiny(quantized, f16_shapes, skeleton, type_name):
    out = quantized[type_name]
    check_against_prediction(out, f16_shapes, skeleton, type_name)
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(f"{t}.gguf" for t in TINY_TYPES)  # no .partial


def test_q4_k_m_mix(quantized):
    """The Q4_K_M mix on 4 layers, spelled out: output Q6_K; attn_v and ffn_down Q6_K in layers 2, 3 (llama.cpp's
    use_more_bits); everything else quantized Q4_K; 1-D F32."""
    got = {n: t for n, (t, _) in tensors_of(quantized["q4_k_m"]).items()}
    upgraded = {f"blk.{i}.{w}.weight" for i in (2, 3) for w in ("attn_v", "ffn_down")}
    for name, qt in got.items():
        want = (Q.F32 if "norm" in name else Q.Q6_K if name == "output.weight" or name in upgraded else Q.Q4_K)
        assert qt == want, name


@needs_llama_cpp
def test_imatrix_changes_the_weights_deterministically(f16, quantized, payload, tmp_path):
    """With an imatrix the quantized bytes differ from without one (same types, same size) and are the same in
    two runs."""
    plain = quantized["q4_k_m"]
    first = quantize.quantize_file(f16, tmp_path / "a.gguf", "q4_k_m", imatrix=payload)
    second = quantize.quantize_file(f16, tmp_path / "b.gguf", "q4_k_m", imatrix=payload)
    assert first.read_bytes() == second.read_bytes()
    a, p = gguf.GGUFReader(first), gguf.GGUFReader(plain)
    assert first.stat().st_size == plain.stat().st_size
    by_name = {t.name: t for t in p.tensors}
    changed = {t.name for t in a.tensors if not np.array_equal(np.array(t.data), np.array(by_name[t.name].data))}
    assert changed == set(payload)  # every weight with an entry, nothing else (token_embd has none)


@needs_llama_cpp
def test_quantize_is_quiet(f16, tmp_path, capfd):
    """llama.cpp logs a line per tensor; none of it reaches stdout/stderr."""
    quantize.quantize_file(f16, tmp_path / "m.gguf", "q4_0")
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


# --- bad input -------------------------------------------------------------------------------------------------

def test_unknown_type(f16, tmp_path):
    with pytest.raises(UsageError, match="q4_k_s, q4_k_m, q5_k_s") as exc:
        quantize.quantize_file(f16, tmp_path / "m.gguf", "q4_k_x")
    assert "unknown GGUF type 'q4_k_x'" in str(exc.value)
    assert list(tmp_path.iterdir()) == []


def test_iq_type_needs_an_imatrix(f16, tmp_path):
    with pytest.raises(UsageError, match="iq2_xxs only with an importance matrix"):
        quantize.quantize_file(f16, tmp_path / "m.gguf", "iq2_xxs")
    assert list(tmp_path.iterdir()) == []


@needs_llama_cpp
def test_wrong_size_imatrix_is_one_clear_error(f16, payload, tmp_path, capfd):
    """llama.cpp refuses the entry; the error quotes its reason, nothing is left and nothing was printed."""
    bad = dict(payload, **{"blk.1.attn_q.weight": np.ones(3, dtype=np.float32)})
    with pytest.raises(InputError) as exc:
        quantize.quantize_file(f16, tmp_path / "m.gguf", "q4_k_m", imatrix=bad)
    assert "imatrix size 3 is different from tensor size 256 for blk.1.attn_q.weight" in str(exc.value)
    message = str(exc.value)  # llama.cpp's error lines only, not its log of the tensors before
    assert "llama_model_loader" not in message and "converting to" not in message
    assert list(tmp_path.iterdir()) == []
    assert capfd.readouterr() == ("", "")


def test_without_llama_cpp_python(f16, tmp_path, monkeypatch):
    """No llama-cpp-python: one error naming the pip extra, nothing written."""
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import llama_cpp now raises ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'pixtral-quant\[llamacpp\]'"):
        quantize.quantize_file(f16, tmp_path / "m.gguf", "q4_k_m")
    assert list(tmp_path.iterdir()) == []


@needs_llama_cpp  # quantize_file loads llama-cpp-python before it looks at the source
def test_missing_source(tmp_path):
    with pytest.raises(InputError, match="no such GGUF file"):
        quantize.quantize_file(tmp_path / "none.gguf", tmp_path / "m.gguf", "q4_k_m")


# --- shapes that need llama.cpp's fallbacks --------------------------------------------------------------------

@pytest.fixture(scope="module")
def odd(tmp_path_factory):
    """A random model: hidden 320 and ffn 784 (neither a multiple of 256; 784 not of 32 either), head_dim 68
    (attention width 272, not a multiple of 32; attn_k/v tensors whose bytes are not a multiple of the 32-byte
    alignment), 4 query heads per KV head, 9 layers; its F16 text GGUF, shapes and size.skeleton."""
    root = tmp_path_factory.mktemp("odd")
    config = open_checkpoint("tiny").config
    text = config.text_config
    text.hidden_size, text.head_dim, text.intermediate_size = 320, 68, 784
    text.num_attention_heads, text.num_key_value_heads, text.num_hidden_layers = 4, 1, 9
    config.save_pretrained(root / "cfg")
    synthesize(root / "cfg", root / "model")
    ckpt = open_checkpoint(root / "model")
    assert json.loads((root / "model" / "config.json").read_text())["text_config"]["hidden_size"] == 320
    f16 = writer.write_text_gguf(ckpt, root / "f16.gguf", "f16")
    return f16, shapes_of(f16), size.skeleton(size.shapes_only(ckpt.config, ckpt.tokenizer))


@needs_llama_cpp
def test_odd_shapes(odd, tmp_path):
    f16, f16_shapes, skeleton = odd
    fallbacks, unaligned = set(), 0
    for type_name in ODD_TYPES:
        out = quantize.quantize_file(f16, tmp_path / f"{type_name}.gguf", type_name)
        got = check_against_prediction(out, f16_shapes, skeleton, type_name)
        unaligned += sum(b % 32 != 0 for _, b in got.values())  # tensors after which the file is padded
        fallbacks |= {(type_name, n, t.name) for n, (t, _) in got.items()
                      if n in ("token_embd.weight", "output.weight", "blk.0.ffn_down.weight", "blk.1.attn_v.weight",
                               "blk.0.attn_output.weight")}
    # the fallbacks themselves: 320 is not a multiple of 256 (K-quants → a 32-block type, output → Q8_0), 784 not
    # of 32 (→ F16); attn_v shows the n_gqa ≥ 4 rules through them (q2_k: Q4_K → Q5_0, not Q3_K → Q4_0; iq4_xs:
    # Q5_K → Q5_1, not IQ4_XS → IQ4_NL)
    assert {("q4_k_m", "token_embd.weight", "Q5_0"), ("q4_k_m", "output.weight", "Q8_0"),
            ("q4_k_m", "blk.0.ffn_down.weight", "F16"), ("q2_k", "token_embd.weight", "Q4_0"),
            ("q6_k", "token_embd.weight", "Q8_0"), ("iq4_xs", "token_embd.weight", "IQ4_NL"),
            ("q8_0", "blk.0.ffn_down.weight", "F16"), ("q2_k", "blk.1.attn_v.weight", "Q5_0"),
            ("iq4_xs", "blk.1.attn_v.weight", "Q5_1"), ("q3_k_m", "blk.1.attn_v.weight", "Q5_1"),
            ("q4_k_m", "blk.0.attn_output.weight", "F16")} <= fallbacks
    assert unaligned > 0

