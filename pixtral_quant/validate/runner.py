"""Run a reference and a converted model on the same held-out image prompts: accuracy and mean token KL.

Prompts are the eval conversations with their reference answers, teacher-forced; KL is taken at every
position whose input token is not an image token (text of the question, the answer and the end), so the
quantized decoder is compared where it reads the merged image features and produces text."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..calibration.encode import collate, encode
from ..fixtures.evaluate import accuracy_by_task, answer_hits
from .metrics import token_kl

IMAGE_TOKENS = (10, 14, 15)  # [IMG], [IMG_BREAK], [IMG_END] of the v7m1 tokenizer (the tiny model's)


@dataclass
class Measured:
    accuracy: dict[str, float]
    mean_kl: float | None


def load_converted(path, device="cpu", dtype=torch.float32):
    """A converted checkpoint through plain transformers (no project code), computing in `dtype` like the
    reference: transformers' bitsandbytes loader keeps every unquantized module in bf16 whatever dtype is
    asked for, so those are cast here (bitsandbytes modules cast their inputs to their own compute dtype)."""
    from transformers import LlavaForConditionalGeneration

    model = LlavaForConditionalGeneration.from_pretrained(path, dtype=dtype, device_map=str(device)).eval()
    if dtype != torch.float32:
        return model
    for module in model.modules():
        if type(module).__module__.startswith("bitsandbytes"):
            continue
        for tensor in [*module.parameters(recurse=False), *module.buffers(recurse=False)]:
            if tensor.dtype == torch.bfloat16:
                tensor.data = tensor.data.float()
    return model


@torch.no_grad()
def logits_on(model, tokenizer, samples, batch_size: int = 16) -> list[torch.Tensor]:
    """Per batch: float32 logits [N, V] at the N positions KL is taken at (non-padding, non-image inputs)."""
    out = []
    for start in range(0, len(samples), batch_size):
        encoded = [encode(tokenizer, s.messages(with_answer=True)) for s in samples[start:start + batch_size]]
        batch = collate(encoded)
        logits = model(**batch).logits.float()
        mask = batch["attention_mask"].bool() & ~torch.isin(batch["input_ids"], torch.tensor(IMAGE_TOKENS))
        out.append(logits[mask])
    return out


def mean_kl(ref: list, quant: list) -> float:
    """Mean of token_kl over every masked position of every batch."""
    kls = [token_kl(r, q) for r, q in zip(ref, quant)]
    return float(torch.cat(kls).mean())


def measure(model, tokenizer, samples, reference_logits=None) -> tuple[Measured, list]:
    """Accuracy by task and (given the reference's logits_on output) mean KL; returns this model's logits too."""
    acc = accuracy_by_task(samples, answer_hits(model, tokenizer, samples))
    logits = logits_on(model, tokenizer, samples)
    kl = mean_kl(reference_logits, logits) if reference_logits is not None else None
    return Measured(acc, kl), logits
