"""Which engine runs the models of a validation: ENGINES maps `--engine` to the class that runs them.

- `transformers` (default): the reference through the project loader, each candidate through plain
  transformers, in this process and one model in memory at a time (outputs.run_model). Teacher-forced
  metrics come from the full logits at the answer positions: exact.
- `vllm`: reference and candidates through vLLM (pixtral_quant.engines.vllm runs a worker in vLLM's own
  environment), with vLLM's tensor / pipeline parallelism and distributed executor passed through — how a
  reference larger than one GPU is validated (Pixtral Large bf16 ≈ 248 GB: `--tensor-parallel-size 4` on
  80 GB cards, `--distributed-executor-backend ray` across nodes). Generations are vLLM's greedy ones, so
  exact match, task accuracy and recovery are exact. Teacher-forced metrics come from vLLM's prompt logprobs:
  the top `logprobs_k` tokens of every answer position plus the answer token's own log-probability. Top-1
  agreement and the perplexity ratio are exact from those; token KL is metrics.topk_kl (the tokens in both
  models' top-k plus one bucket for the rest: a lower bound of the full KL, see metrics.py for why not a
  renormalized top-k). reports/validate-engines.md measures the difference against the transformers engine.

- `llama.cpp`: the reference through transformers (as `transformers`, sharing its cache); each candidate a GGUF
  output folder (convert --scheme gguf-<type>) run by llama.cpp itself (pixtral_quant.engines.llamacpp,
  llama-cpp-python) on mistral-common's exact token ids, only the image blocks encoded by llama.cpp's mtmd.
  llama.cpp returns the full vocabulary's logits: every metric is exact. No per-layer outputs (--layer-sqnr).

An engine takes the shared run (pipeline.Run) and returns outputs.ModelOutputs, one SampleOutput per eval
sample; compare.TEACHER_FORCED turns those into metrics, whichever kind (logits / topk) they hold.
"""

from __future__ import annotations

from dataclasses import asdict

import torch

from ..config import EngineConfig
from ..errors import InputError, UsageError
from . import models
from .outputs import ModelOutputs, SampleOutput, TopK, answer_start


VLLM_ONLY = ("tensor_parallel_size", "pipeline_parallel_size", "distributed_executor_backend", "logprobs_k")


class TransformersEngine:
    """Today's path: full logits, exact metrics, the models loaded in this process."""

    teacher_forced = "exact: full logits at the answer positions"
    candidate_format = "checkpoint"

    def __init__(self, cfg: EngineConfig):
        self.cfg = cfg

    def check(self, cfg) -> None:
        """UsageError when a vLLM-only option was set (it would be ignored). cfg: the ValidateConfig."""
        defaults = EngineConfig(name=self.cfg.name)
        given = [f for f in VLLM_ONLY if getattr(self.cfg, f) != getattr(defaults, f)]
        if given:
            raise UsageError(f"{', '.join(given)} only apply to the vLLM engine", where="--engine transformers",
                             fix="add --engine vllm, or drop " + ", ".join("--" + f.replace("_", "-") for f in given))

    def cache_options(self) -> dict:
        return {"engine": "transformers"}

    def reference(self, ckpt, run) -> ModelOutputs:
        return run.outputs(models.load_reference(ckpt, run.device, run.dtype), "reference")

    def candidate(self, candidate, run) -> ModelOutputs:
        """The candidate's outputs (its model is freed on return: one model in memory at a time)."""
        return run.outputs(models.load_candidate(candidate, run.device, run.dtype), candidate.label)


class VllmEngine:
    """Reference and candidates through vLLM: one vLLM run per model, teacher-forced and generation prompts
    together (so each model loads once)."""

    candidate_format = "checkpoint"

    def __init__(self, cfg: EngineConfig):
        self.cfg = cfg
        self.reexpanded = 0  # prompts of the last run whose image blocks vLLM sized differently from mistral-common
        self.teacher_forced = (f"top-{cfg.logprobs_k} prompt logprobs: KL on the shared top-k support plus one "
                               "tail bucket (a lower bound); top-1 and perplexity exact")

    def check(self, cfg) -> None:
        """Before any model runs: UsageError for what vLLM cannot measure (per-layer outputs),
        MissingDependencyError (exit 2, naming the install command) when vLLM is not installed."""
        if cfg.layer_sqnr_samples:
            raise UsageError("per-layer SQNR needs each decoder layer's output, which vLLM does not return",
                             where="--layer-sqnr", fix="drop --layer-sqnr, or use --engine transformers for it")
        from ..engines import vllm as engine

        engine.check_available()

    def cache_options(self) -> dict:
        return {"engine": "vllm", "logprobs_k": self.cfg.logprobs_k}

    def reference(self, ckpt, run) -> ModelOutputs:
        return self._run(ckpt.path, run, "reference")

    def candidate(self, candidate, run) -> ModelOutputs:
        return self._run(candidate.path, run, candidate.label)

    def _run(self, model_dir, run, label: str) -> ModelOutputs:
        from ..engines import vllm as engine

        n = len(run.eset)
        encoded = [run.eset.encoded(run.tok, i) for i in range(n)]
        images = [images_of(run.eset.messages(i)) for i in range(n)]
        starts = [answer_start(e.tokens, run.ids["inst_end"]) for e in encoded]
        # Teacher-forced requests (the whole conversation, for its prompt logprobs), then generation prompts.
        requests = [engine.Request(e.tokens, ims) for e, ims in zip(encoded, images)]
        requests += [engine.Request(e.tokens[: s + 1], ims) for e, s, ims in zip(encoded, starts, images)]
        advance = run.reporter.task(f"{label} (vLLM)", 1)
        results = engine.generate(
            model_dir, requests, max_tokens=run.cfg.max_new_tokens, prompt_logprobs=self.cfg.logprobs_k,
            tensor_parallel_size=self.cfg.tensor_parallel_size,
            pipeline_parallel_size=self.cfg.pipeline_parallel_size,
            distributed_executor_backend=self.cfg.distributed_executor_backend)
        advance()
        run.reporter.done()
        out = ModelOutputs()
        self.reexpanded = sum(r.prompt_ok is False for r in results[:n])
        for i, (e, s, forced, gen) in enumerate(zip(encoded, starts, results[:n], results[n:])):
            answer = e.tokens[s + 1:]
            # Counted from the end: the answer closes the prompt, whatever length vLLM's image processor gave
            # the image blocks (prompt_ok False: it resized differently from mistral-common; reference and
            # candidates still see the same vLLM input, so they stay comparable — the report counts them).
            if forced.prompt_token_ids[-len(answer):] != answer:
                raise UsageError(f"vLLM's prompt for eval sample {i} does not end with its answer tokens",
                                 where=model_dir, fix="report this: the vLLM worker changed the prompt's text")
            topk = topk_at(forced.prompt_logprobs[-len(answer):], answer, self.cfg.logprobs_k)
            answer = torch.tensor(answer, dtype=torch.long)
            out.samples.append(SampleOutput(None, answer, gen.before(run.ids["eos"]), None, topk))
        return out


class LlamaCppEngine:
    """Reference through transformers as in TransformersEngine; each candidate a GGUF output folder
    (export/gguf/layout.py: model.gguf + mmproj-model.gguf) run in llama.cpp by pixtral_quant.engines.llamacpp,
    on mistral-common's exact token ids (only the image blocks come from llama.cpp's mtmd). llama.cpp returns the
    full vocabulary's logits, so every metric is exact."""

    teacher_forced = "exact: full logits from llama.cpp"
    candidate_format = "gguf"

    def __init__(self, cfg: EngineConfig):
        self.cfg = cfg

    def check(self, cfg) -> None:
        """UsageError for vLLM-only options and --layer-sqnr (llama.cpp returns no per-layer outputs);
        MissingDependencyError naming the pip extra when llama-cpp-python is not installed."""
        if cfg.layer_sqnr_samples:
            raise UsageError("per-layer SQNR needs each decoder layer's output, which llama.cpp does not return",
                             where="--layer-sqnr", fix="drop --layer-sqnr, or use --engine transformers for it")
        TransformersEngine(self.cfg).check(cfg)
        from ..engines import llamacpp

        llamacpp.check_available()

    def cache_options(self) -> dict:
        return {"engine": "transformers"}  # the reference run is the transformers engine's: share its cache

    def reference(self, ckpt, run) -> ModelOutputs:
        return TransformersEngine(self.cfg).reference(ckpt, run)

    def candidate(self, candidate, run) -> ModelOutputs:
        """The GGUF folder's outputs: logits float32 [A, V] and the greedy generation per eval sample."""
        from ..engines import llamacpp
        from ..export.gguf import layout

        files = layout.files(candidate.path)
        inner = run.tok.instruct_tokenizer.tokenizer
        ids = llamacpp.ImageIds(*(inner.get_special_token(t) for t in ("[IMG]", "[IMG_BREAK]", "[IMG_END]")))
        encoded = [run.eset.encoded(run.tok, i) for i in range(len(run.eset))]
        n_ctx = max(len(e.tokens) for e in encoded) + run.cfg.max_new_tokens + 1
        out, advance = ModelOutputs(), run.reporter.task(f"{candidate.label} (llama.cpp)", len(encoded))
        with llamacpp.GgufModel(files[layout.TEXT], files.get(layout.MMPROJ), n_ctx, ids) as model:
            if model.n_vocab != inner.n_words:
                raise InputError(f"the GGUF model has {model.n_vocab} tokens but the reference's tokenizer "
                                 f"{inner.n_words}: not the same vocabulary", where=files[layout.TEXT],
                                 fix="validate a GGUF converted from this reference")
            for i, e in enumerate(encoded):
                start = answer_start(e.tokens, run.ids["inst_end"])
                logits, generated = model.run(e.tokens, images_of(run.eset.messages(i)), start,
                                              run.cfg.max_new_tokens, run.ids["eos"])
                out.samples.append(SampleOutput(torch.from_numpy(logits), torch.tensor(e.tokens[start + 1:]),
                                                generated))
                advance()
        run.reporter.done()
        return out


ENGINES = {"transformers": TransformersEngine, "vllm": VllmEngine, "llama.cpp": LlamaCppEngine}


# Candidate format → the engine that runs it, for the error naming the right one.
ENGINE_OF_FORMAT = {"checkpoint": "transformers", "gguf": "llama.cpp"}


def check_candidates(engine, candidates) -> None:
    """UsageError (before any model runs) for a candidate this engine cannot run: GGUF folders run in llama.cpp,
    safetensors checkpoints in transformers or vLLM."""
    for c in candidates:
        if c.format != engine.candidate_format:
            raise UsageError(f"{c.label} is a {c.format} output, which --engine {engine.cfg.name} does not run",
                             where=c.path, fix=f"use --engine {ENGINE_OF_FORMAT[c.format]} for it")


def engine_for(cfg: EngineConfig):
    """The engine named by cfg.name; UsageError listing the known ones otherwise."""
    if cfg.name not in ENGINES:
        raise UsageError(f"unknown engine {cfg.name!r}", where="--engine", fix=f"pick one of {sorted(ENGINES)}")
    return ENGINES[cfg.name](cfg)


def describe(engine) -> dict:
    """The report's `engine` section: options, what the teacher-forced metrics are computed from, and (vLLM)
    how many prompts' image blocks vLLM sized differently from mistral-common in the last run."""
    return {**asdict(engine.cfg), "teacher_forced": engine.teacher_forced,
            "prompts_reexpanded": getattr(engine, "reexpanded", None)}


def images_of(messages: list[dict]) -> list:
    """The PIL images of a conversation in the order their [IMG] blocks appear (calibration.encode's order)."""
    return [part["image"] for m in messages if isinstance(m.get("content"), list)
            for part in m["content"] if isinstance(part, dict) and part.get("type") == "image"]


def topk_at(positions: list[dict], targets: list[int], k: int) -> TopK:
    """vLLM's prompt logprobs at the answer positions → TopK. positions: one {token_id: logprob} per answer
    position (vLLM returns the top k plus the prompt token there); targets: the answer token ids. Every entry is
    kept (the prompt token, when outside the top k, joins the shared support of topk_kl: it is known exactly)."""
    width = max((len(p) for p in positions), default=k)
    ids = torch.full((len(positions), width), -1, dtype=torch.long)
    logprobs = torch.full((len(positions), width), float("-inf"), dtype=torch.float32)
    positions = [{int(t): float(lp) for t, lp in entries.items()} for entries in positions]  # JSON keys: str
    for row, entries in enumerate(positions):
        ranked = sorted(entries.items(), key=lambda kv: -kv[1])
        ids[row, : len(ranked)] = torch.tensor([int(t) for t, _ in ranked], dtype=torch.long)
        logprobs[row, : len(ranked)] = torch.tensor([lp for _, lp in ranked], dtype=torch.float32)
    target = torch.tensor([positions[j][t] for j, t in enumerate(targets)], dtype=torch.float32)
    return TopK(ids, logprobs, target)
