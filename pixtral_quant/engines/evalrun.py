"""The tiny model's held-out image prompts through vLLM and through plain transformers, side by side.

Used by tests/test_vllm_run.py and scripts/report_vllm.py. Both engines get the same prompts: mistral-common's
encoding of each eval conversation cut after [/INST] (validate.outputs' generation prompt), the same images,
greedy decoding, the checkpoint's own dtype (bf16), one CPU thread each. Scoring decodes the generated ids
(without </s>) with the Mistral tokenizer, as fixtures.evaluate.greedy_answer does, for both engines.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..assets import TINY_EVAL, TINY_MODEL
from ..calibration.encode import Encoded, collate, encode
from ..fixtures.evalset import read_eval_set
from ..loading.tokenizer import open_mistral_tokenizer
from . import vllm as engine

EOS = 2  # </s> of the tiny model's v7m1 tokenizer
MAX_NEW_TOKENS = 8  # the longest tiny answer is 3 tokens + </s>


@dataclass(frozen=True)
class EvalPrompts:
    """samples: fixtures.tasks.Sample (answer, task); encoded: Encoded generation prompts; requests: the same
    prompts for vLLM."""

    samples: list
    encoded: list[Encoded]
    requests: list[engine.Request]


@dataclass(frozen=True)
class Generations:
    """ids: generated token ids per prompt, </s> dropped; seconds: generation wall time (all prompts);
    tokens: generated tokens counted with the final </s> (what each engine computed)."""

    ids: list[list[int]]
    seconds: float
    tokens: int

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


def tokenizer():
    return open_mistral_tokenizer(TINY_MODEL / "tokenizer.model.v7m1")


def eval_prompts(n: int) -> EvalPrompts:
    """The first n samples of the tiny model's held-out set (tasks interleave, so every task is in)."""
    samples = read_eval_set(TINY_EVAL)[:n]
    tok = tokenizer()
    encoded = [encode(tok, s.messages(with_answer=False)) for s in samples]
    requests = [engine.Request(e.tokens, list(s.images)) for e, s in zip(encoded, samples)]
    return EvalPrompts(samples, encoded, requests)


def from_vllm(run: engine.ModelRun) -> Generations:
    ids = [r.before(EOS) for r in run.results]
    return Generations(ids, run.timings["generate_s"], sum(len(r.token_ids) for r in run.results))


@torch.no_grad()
def from_transformers(model_dir, prompts: EvalPrompts, dtype=torch.bfloat16) -> Generations:
    """Plain transformers, as a user loads the checkpoint; greedy, one prompt at a time."""
    from transformers import LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(model_dir, dtype=dtype).eval()
    out, tokens = [], 0
    start = time.perf_counter()
    for enc in prompts.encoded:
        generated = model.generate(**collate([enc]), max_new_tokens=MAX_NEW_TOKENS, do_sample=False,
                                   eos_token_id=EOS, pad_token_id=EOS)[0, len(enc.tokens):].tolist()
        stop = generated.index(EOS) + 1 if EOS in generated else len(generated)
        tokens += stop
        out.append(generated[: stop - 1] if EOS in generated else generated)
    seconds = time.perf_counter() - start
    return Generations(out, seconds, tokens)


def accuracy(prompts: EvalPrompts, gens: Generations) -> float:
    """Share of generations whose decoded text is exactly the ground-truth answer."""
    inner = tokenizer().instruct_tokenizer.tokenizer
    hits = [inner.decode(ids).strip() == s.answer for ids, s in zip(gens.ids, prompts.samples)]
    return sum(hits) / len(hits)


def identical(a: Generations, b: Generations) -> float:
    """Share of prompts whose generated token ids are identical."""
    return sum(x == y for x, y in zip(a.ids, b.ids)) / len(a.ids)
