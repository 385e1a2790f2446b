"""`pixtral-quant validate`: parse options, delegate to pixtral_quant.api.validate, print the summary; exit 0
pass, 1 a threshold or baseline check failed, 2 bad usage or input."""

from __future__ import annotations

import click

from .group import main


@main.command("validate")
@click.option("--reference", default="tiny", show_default=True,
              help="Reference model: directory (HF or Mistral-native), hub id or shipped name.")
@click.option("--candidate", "candidates", multiple=True, required=True,
              help="Converted checkpoint to check; repeat to validate several against one reference run.")
@click.option("--eval", "eval_set", help="Held-out set (JSONL manifest, folder, hf:PATH, built-in name). "
              "Default: the reference's own held-out set, else the built-in `eval`.")
@click.option("--num-samples", type=click.IntRange(min=1), help="Deterministic subset of the eval set.")
@click.option("--seed", type=int, help="Seed of that subset.")
@click.option("--thresholds", "thresholds_file", type=click.Path(dir_okay=False),
              help="YAML with max_mean_kl, min_top1_agreement, min_recovery, ... (see recipes/*.yaml).")
@click.option("--recipe", help="Take the thresholds of this recipe (file or shipped name).")
@click.option("--baseline", type=click.Path(), help="report.json of an earlier run: fail on regressions.")
@click.option("--report-dir", type=click.Path(file_okay=False),
              help="Write report.json, report.md and PNG plots here (replaced as a whole).")
@click.option("--layer-sqnr", type=click.IntRange(min=0), help="Compare every decoder layer's output on this many "
              "samples (per-layer SQNR: where the error enters).")
@click.option("--max-new-tokens", type=click.IntRange(min=1), help="Cap of the free greedy generation.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Teacher-forced batch size.")
@click.option("--engine", help="What runs the models: transformers (default; exact logits), vllm (several GPUs; KL "
              "from top-k prompt logprobs, a lower bound) or llama.cpp (GGUF output folders; exact full logits).")
@click.option("--tensor-parallel-size", type=click.IntRange(min=1), help="vLLM: GPUs per model (tensor parallel).")
@click.option("--pipeline-parallel-size", type=click.IntRange(min=1), help="vLLM: pipeline stages.")
@click.option("--distributed-executor-backend", help="vLLM's executor: mp, ray, uni, external_launcher.")
@click.option("--logprobs", "logprobs_k", type=click.IntRange(min=1),
              help="vLLM: prompt log-probabilities kept per answer position (top-k).")
@click.option("--update-card", is_flag=True, help="Write the result into each candidate's model card (its README.md) "
              "as a validation table.")
@click.option("--json", "as_json", is_flag=True, help="Print the report (report.json's content) on stdout instead "
              "of the table; the exit code is the same.")
def validate_cmd(reference, candidates, eval_set, num_samples, seed, thresholds_file, recipe, baseline, report_dir,
                 layer_sqnr, max_new_tokens, batch_size, engine, tensor_parallel_size, pipeline_parallel_size,
                 distributed_executor_backend, logprobs_k, update_card, as_json) -> None:
    """Check converted checkpoints against their reference on held-out image prompts (full multimodal model).

    Thresholds: --thresholds or --recipe; else those the candidate's recipe recorded in its manifest; else
    built-in defaults per bit width. Exit 0: every candidate passes; 1: a check failed (each is named with its
    margin); 2: bad usage or input.

    \b
    Examples:
      pixtral-quant validate --candidate out                       # vs the bundled tiny model
      pixtral-quant validate --reference /models/Pixtral-12B --candidate pixtral-12b-w4 --report-dir reports/w4
      pixtral-quant validate --candidate a --candidate b --report-dir reports/ab     # one reference run, a trade-off plot
      pixtral-quant validate --candidate new --baseline reports/w4/report.json      # regression gate in CI
      pixtral-quant validate --candidate out --thresholds my-bars.yaml --layer-sqnr 4
      pixtral-quant validate --engine vllm --tensor-parallel-size 8 --reference /models/Pixtral-Large --candidate w4
      pixtral-quant validate --engine llama.cpp --reference tiny --candidate tiny-gguf
    """
    import json

    from rich.console import Console

    from ..api import validate
    from .convert_report import RichReporter

    reporter = RichReporter()
    result = validate(list(candidates), reference, eval=eval_set, num_samples=num_samples, seed=seed,
                      thresholds=thresholds_file, recipe=recipe, baseline=baseline, report_dir=report_dir,
                      reporter=reporter, engine=engine, update_card=update_card, layer_sqnr_samples=layer_sqnr,
                      max_new_tokens=max_new_tokens,
                      batch_size=batch_size, tensor_parallel_size=tensor_parallel_size,
                      pipeline_parallel_size=pipeline_parallel_size,
                      distributed_executor_backend=distributed_executor_backend, logprobs_k=logprobs_k)
    # the verdict is the result: stdout, as plan's; a failed check is an answer (exit 1), not an `error:`
    out = Console()
    if as_json:
        click.echo(json.dumps(result.report, indent=2))
    else:
        out.print(_summary_table(result.report))
        if report_dir:
            out.print(f"report: {report_dir}/report.md")
        click.echo("PASS: every candidate meets its thresholds" if result.passed else
                   f"FAIL: {len(result.failures)} check(s) failed:\n  " + "\n  ".join(result.failures))
    if not result.passed:
        click.get_current_context().exit(1)


def _summary_table(report: dict):
    from ..validate.report import terminal_summary

    return terminal_summary(report)[0]
