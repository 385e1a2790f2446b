"""The tiny model's held-out image prompts through vLLM and through plain transformers, side by side.

Used by tests/test_vllm_run.py and scripts/report_vllm.py. Both engines get the same prompts: mistral-common's
encoding of each eval conversation cut after [/INST] (validate.outputs' generation prompt), the same images,
greedy decoding, the checkpoint's own dtype (bf16), one CPU thread each. The transformers side is validate's own
loader and greedy loop (validate/models.py load_converted, validate/outputs.py greedy). Scoring decodes the
generated ids (without </s>) with the Mistral tokenizer, as fixtures.evaluate.greedy_answer does, for both engines.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..assets import TINY_EVAL, TINY_MODEL
from ..calibration.encode import Encoded, encode
from ..fixtures.evalset import read_eval_set
from ..loading.tokenizer import open_mistral_tokenizer
from ..validate.models import load_converted
from ..validate.outputs import greedy, token_ids
from . import vllm as engine

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
    eos = token_ids(tokenizer())["eos"]
    ids = [r.before(eos) for r in run.results]
    return Generations(ids, run.timings["generate_s"], sum(len(r.token_ids) for r in run.results))


def from_transformers(model_dir, prompts: EvalPrompts, dtype=torch.bfloat16) -> Generations:
    """Plain transformers, as a user loads the checkpoint; greedy, one prompt at a time."""
    model, ids = load_converted(model_dir, dtype=dtype), token_ids(tokenizer())
    start = time.perf_counter()
    out = [greedy(model, enc, ids["inst_end"], ids["eos"], MAX_NEW_TOKENS) for enc in prompts.encoded]
    seconds = time.perf_counter() - start
    # A generation shorter than the cap stopped at </s>, which the engine computed too.
    return Generations(out, seconds, sum(len(g) + (len(g) < MAX_NEW_TOKENS) for g in out))


def accuracy(prompts: EvalPrompts, gens: Generations) -> float:
    """Share of generations whose decoded text is exactly the ground-truth answer."""
    inner = tokenizer().instruct_tokenizer.tokenizer
    hits = [inner.decode(ids).strip() == s.answer for ids, s in zip(gens.ids, prompts.samples)]
    return sum(hits) / len(hits)


def identical(a: Generations, b: Generations) -> float:
    """Share of prompts whose generated token ids are identical."""
    return sum(x == y for x, y in zip(a.ids, b.ids)) / len(a.ids)
