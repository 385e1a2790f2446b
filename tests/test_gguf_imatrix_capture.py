"""The importance matrix gathered through capture.py's multimodal pipeline (export/gguf/calibrate.py), on the
bundled tiny model and 8 samples of its built-in calibration set: equal to an independent computation with plain
transformers and forward hooks, different (and on fewer tokens) with the images stripped, complete, and
round-tripping through the GGUF imatrix file."""

from __future__ import annotations

import pytest
import torch

from pixtral_quant.calibration.dataset import load_set, open_tokenizer
from pixtral_quant.calibration.encode import collate, encode
from pixtral_quant.capture import strip_images
from pixtral_quant.pipeline.runtime import Reporter
from pixtral_quant.export.gguf import imatrix
from pixtral_quant.export.gguf.calibrate import collect_imatrix
from pixtral_quant.loading import open_checkpoint

N_SAMPLES = 8
DATASET = "calib"
RTOL = 1e-4
# HF module (relative to a decoder layer) → llama.cpp tensor (llama.cpp's llama arch names, written out here
# as the independent reference; the code under test takes them from gguf's tables).
LINEAR_GGUF = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
               "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
               "mlp.down_proj": "ffn_down"}


class Recorder(Reporter):
    """Keeps each bar's (description, total, advances)."""

    def __init__(self):
        self.bars = []

    def task(self, description, total):
        bar = [description, total, 0]
        self.bars.append(bar)

        def advance():
            bar[2] += 1
        return advance


@pytest.fixture(scope="module")
def ckpt(tiny_model_dir):
    return open_checkpoint(tiny_model_dir)


@pytest.fixture(scope="module")
def tok(ckpt):
    return open_tokenizer(ckpt.tokenizer)


@pytest.fixture(scope="module")
def cset(ckpt, tok):
    return load_set(DATASET, tok, num_samples=N_SAMPLES, seed=0)


def collect(ckpt, cset, tok, text_only, budget_bytes=2**30, tmp=None):
    reporter = Recorder()
    im, stats = collect_imatrix(ckpt, cset, tok, dataset=DATASET, device=torch.device("cpu"), dtype=torch.float32,
                                text_only=text_only, reporter=reporter, budget_bytes=budget_bytes,
                                scratch_parent=tmp)
    return im, stats, reporter


@pytest.fixture(scope="module")
def images_in(ckpt, cset, tok):
    return collect(ckpt, cset, tok, text_only=False)


@pytest.fixture(scope="module")
def text_only(ckpt, cset, tok):
    return collect(ckpt, cset, tok, text_only=True)


@pytest.fixture(scope="module")
def hf_model(tiny_model_dir):
    from transformers import LlavaForConditionalGeneration

    return LlavaForConditionalGeneration.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


@torch.no_grad()
def reference(model, conversations, tok) -> tuple[dict[str, torch.Tensor], int]:
    """GGUF name → Σx² per input column (float64) over every token of every conversation, from hooks on the whole
    transformers model's decoder Linears and lm_head; and the number of tokens."""
    sums: dict[str, torch.Tensor] = {}

    def hook(name):
        def add(module, args, out):
            x = args[0].reshape(-1, args[0].shape[-1]).double()
            sums[name] = sums.get(name, 0) + x.square().sum(0)
        return add

    modules = {"output.weight": model.lm_head}
    for i, layer in enumerate(model.model.language_model.layers):
        modules.update({f"blk.{i}.{g}.weight": layer.get_submodule(m) for m, g in LINEAR_GGUF.items()})
    hooks = [m.register_forward_hook(hook(name)) for name, m in modules.items()]
    tokens = 0
    try:
        for messages in conversations:
            enc = encode(tok, messages)
            model(**collate([enc]), use_cache=False)
            tokens += len(enc.tokens)
    finally:
        for h in hooks:
            h.remove()
    return sums, tokens


@pytest.mark.parametrize("mode", ["images", "text"])
def test_matches_plain_transformers(mode, images_in, text_only, hf_model, cset, tok):
    """Every in_sum2 equals the independent hooks' Σx² (relative 1e-4); every count is the tokens of all samples."""
    im, stats, _ = images_in if mode == "images" else text_only
    conversations = [strip_images(m) if mode == "text" else m for m in cset]
    ref, tokens = reference(hf_model, conversations, tok)
    assert set(im.entries) == set(ref)
    assert tokens == sum(stats.tokens)
    worst = 0.0
    for name, entry in im.entries.items():
        assert entry.count == tokens, name
        assert entry.in_sum2.shape == ref[name].shape, name
        worst = max(worst, float(((entry.in_sum2 - ref[name]).abs() / ref[name]).max()))
    print(f"{mode}: max relative difference {worst:.2e} over {len(ref)} weights, {tokens} tokens")
    assert worst < RTOL


def test_text_only_differs_and_counts_fewer_tokens(images_in, text_only, cset):
    im, stats, _ = images_in
    im_t, stats_t, _ = text_only
    assert sum(stats.images) > 0 and sum(stats.vision_images) == sum(stats.images)
    assert sum(stats_t.images) == sum(stats_t.vision_images) == 0
    assert im.chunk_count == im_t.chunk_count == N_SAMPLES
    assert (im.chunk_size, im_t.chunk_size) == (max(stats.tokens), max(stats_t.tokens))
    # every sample loses exactly its image tokens: fewer tokens per sample and per weight
    assert all(t < i for t, i in zip(stats_t.tokens, stats.tokens))
    assert {e.count for e in im_t.entries.values()} == {sum(stats_t.tokens)}
    assert sum(stats_t.tokens) < sum(stats.tokens) == im.entries["output.weight"].count
    # the statistics themselves differ: mean-square per column (what llama.cpp uses) moves by > 10 % somewhere in
    # every weight
    for name, entry in im.entries.items():
        a = entry.in_sum2 / entry.count
        b = im_t.entries[name].in_sum2 / im_t.entries[name].count
        assert float(((a - b).abs() / b).max()) > 0.1, name


def test_every_decoder_linear_and_the_head(images_in, ckpt):
    im, _, reporter = images_in
    n = ckpt.config.text_config.num_hidden_layers
    expected = {f"blk.{i}.{g}.weight" for i in range(n) for g in LINEAR_GGUF.values()} | {"output.weight"}
    assert set(im.entries) == expected and len(im.entries) == 7 * n + 1
    assert not any(name.startswith("token_embd") for name in im.entries)
    assert im.datasets == (DATASET,)
    assert all(e.in_sum2.dtype == torch.float64 and e.in_sum2.device.type == "cpu" for e in im.entries.values())
    # one bar for the vision pass, one per layer, one for the head, each run to its end
    assert [b[0] for b in reporter.bars] == (["imatrix: vision tower + projector"]
                                            + [f"imatrix: layer {i + 1}/{n}" for i in range(n)]
                                            + ["imatrix: lm_head"])
    assert all(b[1] == b[2] == N_SAMPLES for b in reporter.bars)


def test_file_round_trip(images_in, tmp_path):
    im, _, _ = images_in
    back = imatrix.read_imatrix(imatrix.write_imatrix(im, tmp_path / "imatrix.gguf"))
    assert back.datasets == im.datasets
    assert (back.chunk_count, back.chunk_size) == (im.chunk_count, im.chunk_size)
    assert set(back.entries) == set(im.entries)
    for name, entry in im.entries.items():
        # the file holds float32, like llama-imatrix's
        assert torch.equal(back.entries[name].in_sum2, entry.in_sum2.float().double()), name
        assert back.entries[name].count == entry.count, name


def test_spilled_activations_give_the_same_matrix(images_in, ckpt, cset, tok, tmp_path, monkeypatch):
    """With no memory budget every activation goes through the scratch folder: identical results, folder gone."""
    from pixtral_quant import capture

    stores = []

    class Watched(capture.ActivationStore):
        def __init__(self, *args):
            super().__init__(*args)
            stores.append(self)

    monkeypatch.setattr(capture, "ActivationStore", Watched)
    im, _, _ = images_in
    spilled, _, _ = collect(ckpt, cset, tok, text_only=False, budget_bytes=0, tmp=tmp_path)
    assert len(stores) == 1 and stores[0].spilled == N_SAMPLES
    for name, entry in im.entries.items():
        assert torch.equal(spilled.entries[name].in_sum2, entry.in_sum2) and spilled.entries[name].count == entry.count
    assert list(tmp_path.iterdir()) == []
