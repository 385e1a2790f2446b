"""`validate --engine llama.cpp`: GGUF outputs run in llama.cpp itself (llama-cpp-python's mtmd + llama APIs, no
project code inside llama.cpp), on mistral-common's exact token ids, against the transformers reference.

Numbers on the bundled tiny model written as F16 GGUF (measured 2026-11-29, llama-cpp-python 0.3.36):
- text only, 60 prompts / 758 positions: max |Δlogit| 0.0057 (logits up to 17.2), top-1 agreement 1.0;
- image prompts, all 300 held-out samples, against validate's CPU reference (float32 compute on the bf16 weights):
  teacher-forced top-1 agreement 0.9986 (699/700 answer positions), mean KL 1.9e-8, greedy outputs identical on
  299/300; accuracy 0.9967 (llama.cpp) vs 0.9933 (float32) and 0.9967 (bf16 compute, outputs identical 300/300);
- the image embeddings mtmd makes (vision tower + projector, F16 mmproj) differ from transformers' by 4e-4
  relative (L2), with tanh or erf GELU in the projector alike.
The bounds below leave room for other CPUs' kernels (an F16 model: each logit differs by float rounding only).

Needs llama-cpp-python (the `llama_cpp` fixture: skipped locally without it, a failure under CI=true), except the
missing-dependency and option checks, which run everywhere.
"""

from __future__ import annotations

import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pixtral_quant.calibration.dataset import open_tokenizer
from pixtral_quant.calibration.encode import collate, encode
from pixtral_quant.config import ValidateConfig
from pixtral_quant.pipeline.runtime import Reporter
from pixtral_quant.errors import MissingDependencyError, UsageError
from pixtral_quant.export.gguf import layout, writer
from pixtral_quant.loading import open_checkpoint, load_model
from pixtral_quant.validate import compare, engines, evalset, pipeline

TEXT_PROMPTS = 50
IMAGE_SAMPLES = 100
MAX_ABS_LOGIT_DIFF = 0.05  # measured 0.0057
MIN_TEXT_TOP1 = 0.995  # measured 1.0 (758 positions)
MIN_IMAGE_TOP1 = 0.99  # measured 0.9986 (300 samples)
MAX_MEAN_KL = 1e-5  # measured 1.9e-8
MIN_SAME_OUTPUT = 0.98  # greedy outputs identical to transformers': measured 0.9967


def llama_engine(**options):
    return engines.engine_for(engines.EngineConfig(name="llama.cpp", **options))


@pytest.fixture(scope="module")
def gguf_dir(llama_cpp, tiny_model_dir, tmp_path_factory):
    """The tiny model as an F16 GGUF output folder (layout.FILES names)."""
    out = tmp_path_factory.mktemp("gguf-f16")
    ckpt = open_checkpoint(tiny_model_dir)
    writer.write_text_gguf(ckpt, out / layout.FILES[layout.TEXT], "f16")
    writer.write_mmproj_gguf(ckpt, out / layout.FILES[layout.MMPROJ], "f16")
    return out


@pytest.fixture(scope="module")
def setting(tiny_model_dir):
    ckpt = open_checkpoint(tiny_model_dir)
    tok = open_tokenizer(ckpt.tokenizer)
    inner = tok.instruct_tokenizer.tokenizer
    from pixtral_quant.engines.llamacpp import ImageIds

    ids = ImageIds(*(inner.get_special_token(t) for t in ("[IMG]", "[IMG_BREAK]", "[IMG_END]")))
    return SimpleNamespace(ckpt=ckpt, tok=tok, ids=ids)


# --- pure helpers ----------------------------------------------------------------------------------------------


def test_image_spans_cover_the_block_without_img_end():
    from pixtral_quant.engines.llamacpp import ImageIds, grid, image_spans

    ids = ImageIds(img=10, brk=14, end=15)
    # BOS [INST] | 2×2 block | text | 3×1 block | [/INST]
    tokens = [1, 3, 10, 10, 14, 10, 10, 15, 42, 10, 10, 10, 15, 4]
    assert image_spans(tokens, ids) == [(2, 7), (9, 12)]
    assert grid(tokens[2:7], ids) == (2, 2) and grid(tokens[9:12], ids) == (3, 1)
    with pytest.raises(ValueError, match="does not end with \\[IMG_END\\]"):
        image_spans([1, 10, 10, 4], ids)


# --- engine checks (no llama.cpp needed) -----------------------------------------------------------------------


def test_missing_llama_cpp_names_the_pip_extra(monkeypatch):
    # None in sys.modules makes every import of it raise ImportError, as when it is not installed.
    for name in ("llama_cpp", "llama_cpp.mtmd_cpp"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MissingDependencyError, match="llama_cpp") as e:
        llama_engine().check(ValidateConfig())
    assert "pip install 'pixtral-quant[llamacpp]'" in e.value.fix


def test_options_llama_cpp_cannot_honour_are_usage_errors():
    with pytest.raises(UsageError, match="per-layer SQNR"):
        llama_engine().check(ValidateConfig(layer_sqnr_samples=2))
    with pytest.raises(UsageError, match="tensor_parallel_size only apply to the vLLM engine"):
        llama_engine(tensor_parallel_size=2).check(ValidateConfig())
    assert isinstance(llama_engine(), engines.LlamaCppEngine)
    assert engines.describe(llama_engine())["teacher_forced"] == "exact: full logits from llama.cpp"


# --- llama.cpp against transformers ------------------------------------------------------------------------------


def test_text_logits_match_transformers(gguf_dir, setting):
    """Text-only conversations (the eval questions without their images): every position's logits."""
    from pixtral_quant.engines.llamacpp import GgufModel

    eset = evalset.load_eval(evalset.eval_spec(setting.ckpt.path, None), setting.tok, TEXT_PROMPTS, 0)
    model = load_model(setting.ckpt, dtype=torch.float32)
    worst, agree, total = 0.0, 0, 0
    with GgufModel(gguf_dir / layout.FILES[layout.TEXT], None, 256, setting.ids) as gguf:
        for i in range(len(eset)):
            msgs = eset.messages(i)
            question = " ".join(p["text"] for p in msgs[0]["content"] if p.get("type") == "text")
            enc = encode(setting.tok, [{"role": "user", "content": question}, msgs[-1]])
            ours = torch.from_numpy(gguf.logits(enc.tokens, [], range(len(enc.tokens))))
            with torch.no_grad():
                ref = model(**collate([enc])).logits[0].float()
            assert ours.shape == ref.shape == (len(enc.tokens), 32768)
            worst = max(worst, float((ours - ref).abs().max()))
            agree += int((ours.argmax(-1) == ref.argmax(-1)).sum())
            total += len(enc.tokens)
    assert total > 500
    assert worst < MAX_ABS_LOGIT_DIFF, worst
    assert agree / total >= MIN_TEXT_TOP1, agree / total


def test_image_prompts_through_the_engine_match_transformers(gguf_dir, setting):
    """IMAGE_SAMPLES held-out image prompts: the engine's candidate outputs against its transformers reference,
    through validate's own comparison (compare.rows_for / aggregate)."""
    cfg = ValidateConfig(max_new_tokens=8)
    eset = evalset.load_eval(evalset.eval_spec(setting.ckpt.path, None), setting.tok, IMAGE_SAMPLES, 0)
    run = pipeline.Run(eset, setting.tok, pipeline.token_ids(setting.tok), cfg, torch.device("cpu"), torch.float32,
                       Reporter())
    engine = llama_engine()
    engine.check(cfg)
    ref = engine.reference(setting.ckpt, run)
    out = engine.candidate(SimpleNamespace(path=gguf_dir, label="f16"), run)
    assert len(out.samples) == len(eset) == IMAGE_SAMPLES
    for r, c in zip(ref.samples, out.samples):
        assert c.kind == "logits" and c.answer_logits.dtype == torch.float32
        assert c.answer_logits.shape == r.answer_logits.shape and c.answer_ids.tolist() == r.answer_ids.tolist()
    labels = [{"id": s.id, "task": s.task, "answer": s.answer, "bucket": None} for s in eset.samples]
    overall = compare.aggregate(compare.rows_for(ref, out, labels, run.decode))
    assert overall["top1_agreement"] >= MIN_IMAGE_TOP1, overall
    assert overall["mean_kl"] < MAX_MEAN_KL, overall
    assert overall["exact_match"] >= MIN_SAME_OUTPUT, overall
    assert overall["accuracy_ref"] >= 0.95 and overall["accuracy_cand"] >= overall["accuracy_ref"] - 0.02, overall


def test_small_images_keep_mistral_commons_grid_and_others_are_refused(gguf_dir, setting):
    """A 32×32 image is 2×2 patches for mistral-common; llama.cpp's default minimum (8 tokens) would upscale it,
    which the engine turns off. A 36×36 image is 3×3 for mistral-common (sides rounded up) but 2×2 for llama.cpp
    (nearest): a clear ImageGridError, not a silently different prompt."""
    from PIL import Image

    from pixtral_quant.engines.llamacpp import GgufModel, ImageGridError

    def conversation(side):
        image = Image.fromarray(np.full((side, side, 3), 200, np.uint8))
        return encode(setting.tok, [{"role": "user", "content": [{"type": "image", "image": image},
                                                                  {"type": "text", "text": "What colour?"}]},
                                    {"role": "assistant", "content": "red"}]), image

    files = layout.files(gguf_dir)
    with GgufModel(files[layout.TEXT], files[layout.MMPROJ], 256, setting.ids) as gguf:
        enc, image = conversation(32)
        assert enc.tokens.count(setting.ids.img) == 4
        logits = gguf.logits(enc.tokens, [image], [len(enc.tokens) - 2])
        assert logits.shape == (1, 32768) and np.isfinite(logits).all()
        enc, image = conversation(36)
        with pytest.raises(ImageGridError, match=r"36×36 image 5 image tokens; mistral-common's block has 11 "
                                                 r"\(a \(3, 3\) patch grid"):
            gguf.logits(enc.tokens, [image], [len(enc.tokens) - 2])
