"""Run one model over the eval set and keep what the comparison needs (the stateful half of validate).

Per sample: the logits at the positions that predict the reference answer (teacher-forced on the eval set's
assistant turn, up to and including </s>), the answer token ids, the free greedy generation, and — for the
first `hidden_samples` samples — every decoder layer's output (for per-layer SQNR).

The generation prompt is the teacher-forced token sequence cut after the last [/INST]: mistral-common encodes
a conversation ending with the user to exactly that prefix, so both runs see the same images and tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..calibration.encode import Encoded, collate

INST_END = "[/INST]"


@dataclass
class TopK:
    """An engine's top-k log-probabilities at A answer positions (vLLM's prompt logprobs). ids: int64 [A, K]
    (id −1 pads rows that have fewer entries); logprobs: float32 [A, K] (−inf at padding); target: float32 [A],
    the log-probability of the reference answer token itself (always known, in the top-k or not)."""

    ids: torch.Tensor
    logprobs: torch.Tensor
    target: torch.Tensor


@dataclass
class SampleOutput:
    """answer_logits: float32 [A, V] (A answer positions, incl. the one predicting </s>), or None when the
    engine gives top-k log-probabilities instead (`topk`); answer_ids: int64 [A]; generated: int token ids of
    the greedy continuation (stopped at </s>, which is not included); hidden: float32 [L, T, H] decoder-layer
    outputs, or None."""

    answer_logits: torch.Tensor | None
    answer_ids: torch.Tensor
    generated: list[int]
    hidden: torch.Tensor | None = None
    topk: TopK | None = None

    @property
    def kind(self) -> str:
        """What the teacher-forced metrics are computed from: 'logits' (exact) or 'topk' (metrics.topk_kl)."""
        return "topk" if self.answer_logits is None else "logits"


@dataclass
class ModelOutputs:
    samples: list[SampleOutput] = field(default_factory=list)


def token_ids(tok) -> dict[str, int]:
    """{'inst_end', 'eos'}: the [/INST] and </s> ids of a mistral-common tokenizer (both Pixtral tokenizers)."""
    inner = tok.instruct_tokenizer.tokenizer
    return {"inst_end": inner.get_special_token(INST_END), "eos": inner.eos_id}


def answer_start(tokens: list[int], inst_end: int) -> int:
    """Index of the last [/INST] token: logits there predict the first answer token."""
    if inst_end not in tokens:
        raise ValueError("the conversation has no [/INST] token")
    return len(tokens) - 1 - tokens[::-1].index(inst_end)


def _to(batch: dict, device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


@torch.no_grad()
def teacher_forced(model, encoded: list[Encoded], inst_end: int, first_index: int, hidden_samples: int):
    """(answer_logits, answer_ids, hidden) per conversation of one batch; see SampleOutput for shapes."""
    device = next(model.parameters()).device
    want_hidden = first_index < hidden_samples
    out = model(**_to(collate(encoded), device), output_hidden_states=want_hidden)
    rows = []
    for row, e in enumerate(encoded):
        start, end = answer_start(e.tokens, inst_end), len(e.tokens) - 1
        logits = out.logits[row, start:end].float().cpu()
        ids = torch.tensor(e.tokens[start + 1:], dtype=torch.long)
        hidden = None
        if want_hidden and first_index + row < hidden_samples:
            # hidden_states[0] is the embedding output; [1:] are the decoder layers' outputs.
            hidden = torch.stack([h[row, : len(e.tokens)].float().cpu() for h in out.hidden_states[1:]])
        rows.append((logits, ids, hidden))
    return rows


@torch.no_grad()
def greedy(model, enc: Encoded, inst_end: int, eos: int, max_new_tokens: int) -> list[int]:
    """Greedy continuation of the prompt (tokens up to the last [/INST]), without the final </s>."""
    device = next(model.parameters()).device
    prompt = Encoded(enc.tokens[: answer_start(enc.tokens, inst_end) + 1], enc.images)
    batch = _to(collate([prompt]), device)
    out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos,
                         pad_token_id=eos)
    new = out[0, len(prompt.tokens):].tolist()
    return new[: new.index(eos)] if eos in new else new


def run_model(model, encode_sample: Callable[[int], Encoded], n: int, ids: dict[str, int], options,
              advance: Callable[[], None] = lambda: None) -> ModelOutputs:
    """Every sample through `model` (teacher-forced in batches, then greedy one by one). `ids`: {'inst_end',
    'eos'} token ids of the tokenizer; `encode_sample(i)` → Encoded of sample i with its answer; `options`: a
    config.ValidateConfig (batch_size, max_new_tokens, layer_sqnr_samples)."""
    result = ModelOutputs()
    for start in range(0, n, options.batch_size):
        encoded = [encode_sample(i) for i in range(start, min(n, start + options.batch_size))]
        rows = teacher_forced(model, encoded, ids["inst_end"], start, options.layer_sqnr_samples)
        for e, (logits, answer, hidden) in zip(encoded, rows):
            generated = greedy(model, e, ids["inst_end"], ids["eos"], options.max_new_tokens)
            result.samples.append(SampleOutput(logits, answer, generated, hidden))
            advance()
    return result
