"""Make reports/validate-tiny/: `pixtral-quant validate` of every tiny recipe's checkpoint, plus a broken one
(layer 1's output projections zeroed), against the bundled tiny Pixtral on its full held-out set.

    python scripts/report_validate.py [--out reports/validate-tiny] [--work /tmp/validate-report]

One reference run (cached by content), then each candidate in turn; each candidate is held to the thresholds
its recipe recorded in its manifest (the broken one: those of gptq-int8, the checkpoint it was made from).
Also gptq-int4 with the INT4 lm_head that the pixtral-12b-int4 recipe ships with.
The run's verdict is expected to be FAIL because of the broken candidate; the others must pass.

    python scripts/report_validate.py --engines [--out reports/validate-engines.md]

writes the engine comparison instead: the INT4 checkpoints vLLM's CPU build runs (gptq-int4, rtn-int4) and a
broken one (gptq-int4, layer 1 zeroed) validated by the transformers engine and by the vLLM engine (the same
candidates, thresholds, eval set), side by side; plus the top-k approximation alone (metrics.topk_kl on the
transformers engine's own logits, truncated to the vLLM engine's k, vs the exact KL on the same logits).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import torch

from pixtral_quant.cli.convert_report import RichReporter
from pixtral_quant.config import ValidateConfig, with_overrides
from pixtral_quant.convert import convert
from pixtral_quant.fixtures.broken import zero_layer
from pixtral_quant.recipes import load_recipe
from pixtral_quant.validate import compare, engines, evalset, metrics, models, pipeline
from pixtral_quant.validate.outputs import SampleOutput, TopK
from pixtral_quant.validate.pipeline import validate
from pixtral_quant.validate.report import failure_lines, fmt

SCHEMES = ("gptq-int8", "rtn-int8", "bnb-int8", "gptq-int4", "rtn-int4", "bnb-nf4")
# Variants (folder name → recipe and overrides): the INT4 lm_head that pixtral-12b-int4 ships with.
VARIANTS = {"gptq-int4-lm_head-int4": ("tiny-gptq-int4", {"targets.lm_head": "int4"})}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("reports/validate-tiny"))
    p.add_argument("--work", type=Path, default=Path("/tmp/validate-report"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--layer-sqnr", type=int, default=8, help="samples for the per-layer SQNR plot")
    p.add_argument("--engines", action="store_true", help="write the transformers-vs-vLLM engine comparison")
    p.add_argument("--num-samples", type=int, help="subset of the eval set (--engines only; default all)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.engines:
        return engine_comparison(args)
    args.work.mkdir(parents=True, exist_ok=True)
    candidates = []
    jobs = {s: (f"tiny-{s}", {}) for s in SCHEMES} | VARIANTS
    for folder, (recipe, overrides) in jobs.items():
        out = args.work / folder
        if not (out / "manifest.json").is_file():
            shutil.rmtree(out, ignore_errors=True)
            convert("tiny", with_overrides(load_recipe(recipe), overrides) if overrides else load_recipe(recipe), out)
        candidates.append(out)
    candidates.append(zero_layer(args.work / "gptq-int8", args.work / "gptq-int8-layer1-zeroed", 1))
    shutil.rmtree(args.out, ignore_errors=True)
    cfg = ValidateConfig(layer_sqnr_samples=args.layer_sqnr)
    report = validate("tiny", candidates, cfg, report_dir=args.out, reporter=RichReporter())
    print((args.out / "report.md").read_text())
    print("\n".join(failure_lines(report)))


ENGINE_CANDIDATES = ("gptq-int4", "rtn-int4")  # what vLLM's CPU build loads (CPUWNA16: 4-bit GPTQ only)


def engine_comparison(args) -> None:
    """reports/validate-engines.md: the same candidates through both engines, and the top-k approximation alone."""
    out = args.out if args.out.suffix == ".md" else Path("reports/validate-engines.md")
    args.work.mkdir(parents=True, exist_ok=True)
    cands = []
    for scheme in ENGINE_CANDIDATES:
        folder = args.work / scheme
        if not (folder / "manifest.json").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            convert("tiny", load_recipe(f"tiny-{scheme}"), folder)
        cands.append(folder)
    cands.append(zero_layer(args.work / "gptq-int4", args.work / "gptq-int4-layer1-zeroed", 1))
    cfg = ValidateConfig(num_samples=args.num_samples)
    reports, seconds = {}, {}
    for name in engines.ENGINES:
        start = time.perf_counter()
        reports[name] = validate("tiny", cands, cfg, reporter=RichReporter(), engine=engines.EngineConfig(name=name))
        seconds[name] = time.perf_counter() - start
    k = engines.EngineConfig().logprobs_k
    approx = truncation_error(cands, cfg, k)
    text = engines_markdown(reports, seconds, approx, k)
    out.write_text(text)
    print(text)


def as_topk(s: SampleOutput, k: int) -> SampleOutput:
    """A transformers-engine sample seen as the vLLM engine sees it: its logits cut to the top k (plus the
    answer token's own log-probability, which vLLM always returns)."""
    ids, lp = metrics.topk_of(s.answer_logits, k)
    target = s.answer_logits.double().log_softmax(-1).gather(-1, s.answer_ids[:, None]).squeeze(-1).float()
    return SampleOutput(None, s.answer_ids, s.generated, None, TopK(ids, lp, target))


def truncation_error(cands: list[Path], cfg: ValidateConfig, k: int) -> dict[str, dict]:
    """Per candidate: mean KL exact vs top-k on the transformers engine's own logits (same numbers: only the
    approximation differs), the largest per-sample ratio, and whether top-1 agreement changed."""
    from pixtral_quant.calibration.dataset import open_tokenizer
    from pixtral_quant.pipeline.runtime import Reporter, compute_setup
    from pixtral_quant.loading import open_checkpoint

    ckpt = open_checkpoint("tiny")
    tok = open_tokenizer(ckpt.tokenizer)
    eset = evalset.load_eval(evalset.eval_spec(ckpt.path, cfg.eval_set), tok, cfg.num_samples, cfg.seed)
    device, dtype = compute_setup()
    run = pipeline.Run(eset, tok, pipeline.token_ids(tok), cfg, device, dtype, Reporter())
    engine = engines.engine_for(engines.EngineConfig())
    ref, _ = pipeline.reference_outputs(ckpt, run, engine)  # cached by the validate run above
    ref_k = [as_topk(s, k) for s in ref.samples]
    result = {}
    for path in cands:
        cand = engine.candidate(models.open_candidate(path), run)
        exact = [compare.from_logits(r, c) for r, c in zip(ref.samples, cand.samples)]
        approx = [compare.from_topk(r, as_topk(c, k)) for r, c in zip(ref_k, cand.samples)]
        kl_exact = torch.tensor([float(e[0].mean()) for e in exact], dtype=torch.float64)
        kl_topk = torch.tensor([float(a[0].mean()) for a in approx], dtype=torch.float64)
        result[path.name] = {
            "mean_kl_exact": float(kl_exact.mean()), "mean_kl_topk": float(kl_topk.mean()),
            "max_abs_diff": float((kl_exact - kl_topk).abs().max()),
            "min_ratio": float((kl_topk / kl_exact.clamp_min(1e-300)).min()),
            "top1_same": all(bool((e[1] == a[1]).all()) for e, a in zip(exact, approx)),
        }
    return result


def engines_markdown(reports: dict, seconds: dict, approx: dict, k: int) -> str:
    t, v = reports["transformers"], reports["vllm"]
    lines = ["# validate: transformers engine vs vLLM engine on the tiny model", "",
             f"Generated by `python scripts/report_validate.py --engines`. Reference `tiny`, eval set "
             f"`{t['eval']['set']}` ({t['eval']['samples']} samples), the same candidates and thresholds (each "
             "candidate's recipe, from its manifest) under both engines. transformers engine: float32 on the CPU, "
             f"full logits (exact KL), {seconds['transformers']:.0f} s. vLLM engine: {v['engine']['teacher_forced']}; "
             f"vLLM's CPU build, {seconds['vllm']:.0f} s (both include the reference run; vLLM loads each model "
             "in its own worker).", "",
             "| candidate | engine | mean KL | p95 KL | samples with KL 0 | top-1 agree | ppl ratio | same output | "
             "recovery | verdict | broken thresholds |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |"]
    for ct, cv in zip(t["candidates"], v["candidates"]):
        for name, c in (("transformers", ct), ("vllm", cv)):
            m = c["metrics"]["overall"]
            broken = ", ".join(r["threshold"] for r in c["checks"] if r["passed"] is False) or "–"
            zero = sum(r["kl_mean"] == 0 for r in c["samples"])
            lines.append(f"| {c['label']} | {name} | {fmt(m['mean_kl'], '{:.3e}')} | {fmt(m['p95_kl'], '{:.3e}')} | "
                         f"{zero} / {m['samples']} | "
                         f"{fmt(m['top1_agreement'], '{:.4f}')} | {fmt(m['ppl_ratio'], '{:.4f}')} | "
                         f"{fmt(m['exact_match'], '{:.3f}')} | {fmt(m['recovery'], '{:.3f}')} | "
                         f"{'PASS' if c['passed'] else 'FAIL'} | {broken} |")
    lines += ["", f"## The top-{k} approximation alone", "",
              f"The transformers engine's own float32 logits, KL exact vs metrics.topk_kl on their top {k} (+ the "
              "answer token): the same numbers, so this is the approximation's error without any engine difference. "
              "topk_kl is a lower bound by construction (min ratio ≤ 1).", "",
              "| candidate | mean KL exact | mean KL top-k | max abs diff per sample | min ratio top-k / exact "
              "| top-1 identical |", "| --- | ---: | ---: | ---: | ---: | --- |"]
    for label, a in approx.items():
        lines.append(f"| {label} | {a['mean_kl_exact']:.4e} | {a['mean_kl_topk']:.4e} | {a['max_abs_diff']:.2e} | "
                     f"{a['min_ratio']:.6f} | {'yes' if a['top1_same'] else 'no'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
