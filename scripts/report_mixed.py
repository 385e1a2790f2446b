"""Make reports/mixed-tiny.md (issue 14): gptq-mixed against the uniform schemes, on the bundled tiny Pixtral and
its outlier twin, measured against each model's bf16 reference.

    python scripts/report_mixed.py [--out reports/mixed-tiny.md] [--work /tmp/mixed-report]
    python scripts/report_mixed.py --num-samples 8 --budgets 2 --out /tmp/mixed-report/quick.md   (a quick try)

One run. For each model (clean, then its outlier twin): the uniform tiny-rtn-int4 / gptq-int4 / gptq-int8 /
bnb-nf4 recipes, then tiny-gptq-mixed at several `scheme.max_size` budgets spread from just above its smallest
allocation to its all-INT8 allocation (exact bytes from mixed/budget.py), one of them exactly halfway in bytes
between this run's uniform gptq-int4 and gptq-int8 checkpoints. Every conversion is timed, reloaded with plain
transformers and scored in one `validate` run per model (held-out accuracy, validate's mean token KL(ref‖quant):
pixtral_quant/diagnostics/scoring.py, as scripts/report_convert.py). Writes the
.md, a .json of every number, and a KL-vs-bytes PNG next to the .md; numbers are written as measured.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from pixtral_quant.assets import TINY_EVAL, TINY_MODEL
from pixtral_quant.config import with_overrides
from pixtral_quant.diagnostics.machine import cpu_name
from pixtral_quant.diagnostics.scoring import converted, scored
from pixtral_quant.mixed.choose import candidates_for, smallest_allocation
from pixtral_quant.fixtures.twin import make_outlier_twin
from pixtral_quant.loading import open_checkpoint
from pixtral_quant.loading.names import LAYERS
from pixtral_quant.memory.inventory import model_shapes
from pixtral_quant.mixed.budget import budget_for
from pixtral_quant.plan import make_plan
from pixtral_quant.recipes import load_recipe

UNIFORM = ("rtn-int4", "gptq-int4", "gptq-int8", "bnb-nf4")
MIXED = "gptq-mixed"
GPTQ = ("gptq-int4", "gptq-int8", MIXED)  # the calibrated recipes (--num-samples applies to these)
LOW = 0.02  # the lowest budget: this fraction of the way from the smallest to the all-INT8 allocation


def recipe_for(scheme: str, num_samples: int | None, max_size: int | None = None):
    """The shipped tiny-* recipe, with the calibration size overridden (quick tries) and a byte budget (mixed)."""
    overrides = {}
    if num_samples is not None and scheme in GPTQ:
        overrides["calibration.num_samples"] = num_samples
    if max_size is not None:
        overrides["scheme.max_size"] = f"{max_size}B"
    recipe = load_recipe(f"tiny-{scheme}")
    return with_overrides(recipe, overrides) if overrides else recipe


def allocation_range(model_dir: Path, recipe) -> tuple[int, int]:
    """Checkpoint bytes (exact, mixed/budget.py) of the smallest allocation and of the largest (every fused group
    at its largest candidate: all INT8 with the default candidates)."""
    ckpt = open_checkpoint(model_dir)
    shapes = model_shapes(ckpt.config)
    cands = candidates_for(make_plan(ckpt.config, recipe), shapes, recipe.scheme)
    budget = budget_for(ckpt.config, shapes, recipe)
    largest = cands.expand([max(zip(sizes, labels))[1] for labels, sizes in zip(cands.labels, cands.nbytes)])
    return budget.measure(smallest_allocation(cands)), budget.measure(largest)


def budgets_for(lo: int, hi: int, halfway: int, n: int) -> list[int]:
    """n budgets: halfway, and n - 1 spread evenly from just above lo (LOW of the way) to hi."""
    if not lo < halfway <= hi:
        raise SystemExit(f"the halfway budget {halfway} B is outside the allocations' range ({lo} .. {hi} B)")
    steps = max(n - 1, 1)
    spread = [hi] if steps == 1 else [round(lo + (LOW + (1 - LOW) * k / (steps - 1)) * (hi - lo))
                                      for k in range(steps)]
    return sorted(set(spread) | {halfway})


def run_model(name, model_dir, args) -> dict:
    """Every conversion of one model, then one validate run scoring them all: {'reference', 'uniform', 'mixed',
    'halfway', 'range'}."""
    outs, uniform = {}, {}
    for s in UNIFORM:
        outs[s] = args.work / f"{name}-{s}"
        uniform[s] = converted(model_dir, recipe_for(s, args.num_samples), outs[s])
    halfway = (uniform["gptq-int4"]["bytes"] + uniform["gptq-int8"]["bytes"]) // 2
    lo, hi = allocation_range(model_dir, recipe_for(MIXED, args.num_samples))
    mixed = []
    for limit in budgets_for(lo, hi, halfway, args.budgets):
        out = outs[limit] = args.work / f"{name}-mixed-{limit}"
        row = converted(model_dir, recipe_for(MIXED, args.num_samples, limit), out)
        body = json.loads((out / "manifest.json").read_text())
        row.update(budget=limit, manifest_budget=body["budget"],
                   allocation={m: a["setting"] for m, a in body["allocation"].items()},
                   sensitivity={m: a["sensitivity"] for m, a in body["allocation"].items()},
                   groups={m: a["group"] for m, a in body["allocation"].items()})
        mixed.append(row)
    ref, scores = scored(model_dir, outs, str(args.eval))
    for s, row in uniform.items():
        row.update(scores[s])
        print(f"[{name}] {s}: {fmt_row(row)}", flush=True)
    for row in mixed:
        row.update(scores[row["budget"]])
        print(f"[{name}] {MIXED} @ {row['budget']} B: {fmt_row(row)}", flush=True)
    size = sum(f.stat().st_size for f in open_checkpoint(model_dir).weight_files)
    return {"reference": {"accuracy": ref["accuracy"], "bytes": size, "samples": ref["samples"]},
            "uniform": uniform, "mixed": mixed, "halfway": halfway,
            "range": {"smallest_allocation": lo, "largest_allocation": hi}}


def fmt_row(r) -> str:
    return f"acc {r['accuracy']:.4f}  KL {r['kl']:.3e}  {r['bytes']} B  {r['seconds']:.1f} s"


def outlier_channels(clean_dir: Path, twin_dir: Path, modules) -> dict[str, dict[str, int]]:
    """Per Linear (runtime name), measured from the two checkpoints: input columns the twin scales up (its
    outliers) and output rows it scales down, i.e. where max |w| differs by more than 2x."""
    from safetensors import safe_open

    out = {}
    with safe_open(clean_dir / "model.safetensors", "pt") as a, safe_open(twin_dir / "model.safetensors", "pt") as b:
        names = set(a.keys())
        for m in modules:
            key = m.replace("model.language_model.", "language_model.model.") + ".weight"
            if key not in names:
                key = "language_model." + m + ".weight"
            wa, wb = a.get_tensor(key).float().abs(), b.get_tensor(key).float().abs()
            out[m] = {"columns_up": int((wb.amax(0) > 2 * wa.amax(0)).sum()),
                      "rows_down": int((wb.amax(1) < wa.amax(1) / 2).sum())}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("reports/mixed-tiny.md"))
    p.add_argument("--work", type=Path, default=Path("/tmp/mixed-report"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--budgets", type=int, default=6, help="gptq-mixed budgets per model (≥ 5 for the issue)")
    p.add_argument("--num-samples", type=int, default=None,
                   help="calibration samples of every GPTQ recipe (default: the recipes' own, for quick tries)")
    p.add_argument("--eval", type=Path, default=TINY_EVAL / "manifest.jsonl")
    args = p.parse_args()
    t0 = time.perf_counter()
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    twin_dir = make_outlier_twin(TINY_MODEL, args.work / "twin-model")
    models = {"clean": run_model("clean", TINY_MODEL, args), "twin": run_model("twin", twin_dir, args)}
    modules = list(models["twin"]["mixed"][0]["allocation"])
    outliers = outlier_channels(TINY_MODEL, twin_dir, modules)
    wall = time.perf_counter() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    png = args.out.with_name(args.out.stem + "-kl-vs-bytes.png")
    plot(models, png)
    meta = {"machine": cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "eval_samples": models["clean"]["reference"]["samples"], "num_samples": args.num_samples or recipe_for(MIXED, None).calibration
            .num_samples, "wall_seconds": wall}
    args.out.write_text(render(models, outliers, meta, png.name))
    raw = {"meta": meta, "models": models, "twin_outliers": outliers,
           "checks": [{"check": t, "pass": ok} for t, ok in checks(models)]}
    args.out.with_suffix(".json").write_text(json.dumps(raw, indent=2, sort_keys=True) + "\n")
    print(args.out.read_text())


def at_halfway(model: dict) -> dict:
    return next(r for r in model["mixed"] if r["budget"] == model["halfway"])


def plot(models: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    markers = {"rtn-int4": "s", "gptq-int4": "o", "gptq-int8": "D", "bnb-nf4": "^"}
    for (name, model), color in zip(models.items(), ("tab:blue", "tab:red")):
        for s, r in model["uniform"].items():
            ax.scatter(r["bytes"] / 1e6, r["kl"], marker=markers[s], color=color, zorder=3)
            ax.annotate(f"{s} ({name})", (r["bytes"] / 1e6, r["kl"]), textcoords="offset points",
                        xytext=(5, -10) if s == "bnb-nf4" else (5, 4),
                        fontsize=7, color=color)
        mixed = sorted(model["mixed"], key=lambda r: r["bytes"])
        ax.plot([r["bytes"] / 1e6 for r in mixed], [r["kl"] for r in mixed], "-x", color=color,
                label=f"{MIXED} ({name}), {len(mixed)} budgets")
        h = at_halfway(model)
        ax.scatter(h["bytes"] / 1e6, h["kl"], s=120, facecolors="none", edgecolors=color, zorder=4)
    for half in sorted({m["halfway"] for m in models.values()}):
        ax.axvline(half / 1e6, ls=":", color="gray", label=f"halfway budget {half / 1e6:.3f} MB")
    ax.set_yscale("log")
    ax.set_xlabel("checkpoint weights on disk (MB, sum of *.safetensors)")
    ax.set_ylabel("mean token KL(ref‖quant), nats (log)")
    ax.set_title("Tiny Pixtral: KL vs bytes (circled: gptq-mixed at the halfway budget)")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def checks(models: dict) -> list[tuple[str, bool]]:
    out = []
    for name in ("twin", "clean"):
        m = models[name]
        g4, h = m["uniform"]["gptq-int4"], at_halfway(m)
        out += [((f"{name}: gptq-mixed @ halfway KL {h['kl']:.2e} ≤ 0.5 × uniform gptq-int4 {g4['kl']:.2e} "
                 f"(ratio {h['kl'] / g4['kl']:.3g})"), h["kl"] <= 0.5 * g4["kl"]),
                (f"{name}: gptq-mixed @ halfway size {h['bytes']} B ≤ budget {m['halfway']} B",
                 h["bytes"] <= m["halfway"])]
    for name, m in models.items():
        over = [r["budget"] for r in m["mixed"] if r["bytes"] > r["budget"]]
        out.append((f"{name}: every gptq-mixed checkpoint within its budget (over: {over or 'none'})", not over))
        off = [(r["manifest_budget"]["measured_bytes"], r["bytes"]) for r in m["mixed"]
               if r["manifest_budget"]["measured_bytes"] != r["bytes"]]
        out.append(((f"{name}: the budget's predicted size equals the bytes on disk for every budget "
                    f"(differences: {off or 'none'})"), not off))
    return out


def render(models: dict, outliers: dict, meta: dict, png: str) -> str:
    lines = ["# gptq-mixed (measured-sensitivity mixed precision) on the bundled tiny Pixtral and its outlier twin",
             "", ("Made by `python scripts/report_mixed.py` (one run; rerun: `python scripts/report_mixed.py`). "
             f"Machine: {meta['machine']}, {meta['threads']} CPU threads, no GPU; torch {meta['torch']}. "
             f"Whole run: {meta['wall_seconds'] / 60:.1f} min wall clock. Held-out set: {meta['eval_samples']} "
             "samples of `pixtral_quant/assets/tiny-pixtral-eval/` (never trained or calibrated on). Accuracy and KL "
             "are `validate`'s own (pixtral_quant/diagnostics/scoring.py runs validate): accuracy = the greedy answer "
             "equal to the label; KL = validate's `mean_kl`, KL(ref‖quant) in nats at the positions of the "
             "teacher-forced reference answer (before 2026-12-07 this report took KL over every non-image position: "
             "older numbers are not comparable), against each model's own bf16 reference (fp32 compute). Size: the sum of the checkpoint's "
             "`*.safetensors` files. Every GPTQ scheme uses the same calibration: the tiny-* recipes' "
             f"`calibration/tiny`, {meta['num_samples']} samples, seed 0. The outlier twin "
             "(`fixtures/twin.py`, k = 8 channels per layer, s = 32) computes the same bf16 function. "
             "Uniform gptq-int4/int8 are written as GPTQ v1, gptq-mixed as compressed-tensors: "
             "the same setting can differ by a few bytes between the two; sizes are as measured. Conversion "
             "time is wall clock on a 2-core machine shared with other jobs (it varies run to run)."), "",
             ("The gptq-mixed budgets (`scheme.max_size`, bytes) per model: one exactly halfway (integer floor) "
             f"between that model's uniform gptq-int4 and gptq-int8 sizes, the others spread from {LOW:.0%} of "
             "the way above the smallest allocation to the all-INT8 allocation (exact sizes from "
             "`pixtral_quant.mixed.budget`). Recipe: `tiny-gptq-mixed` (decoder Linears; candidates int4-g128, "
             "int4-g64, int4-g32, int8-g128; q/k/v and gate/up share one setting)."), "",
             f"![KL vs bytes]({png})", ""]
    for name, title in (("twin", "Outlier twin"), ("clean", "Clean tiny model")):
        lines += section(models[name], title)
    lines += ["## Checks", ""] + [f"- {'PASS' if ok else 'FAIL'}: {t}" for t, ok in checks(models)]
    lines += ["", "## Observations", ""] + observations(models)
    lines += [""] + allocation_section(models, outliers)
    return "\n".join(lines) + "\n"


def section(model: dict, title: str) -> list[str]:
    base = model["reference"]["accuracy"]["overall"]
    g4 = model["uniform"]["gptq-int4"]["kl"]
    rng = model["range"]
    lines = [f"## {title}", "",
             (f"Smallest allocation {rng['smallest_allocation']} B, all-INT8 allocation "
             f"{rng['largest_allocation']} B, halfway budget {model['halfway']} B."), "",
             ("| scheme | budget (B) | size on disk (B) | size (MB) | mean KL | KL / gptq-int4 | accuracy | vs bf16 | "
             "conversion time |"), "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
             (f"| bf16 reference | – | {model['reference']['bytes']} | {model['reference']['bytes'] / 1e6:.3f} | 0 | "
             f"– | {base:.4f} | 100.0 % | – |")]
    rows = [(s, "–", r) for s, r in model["uniform"].items()]
    rows += [(MIXED + (" **(halfway)**" if r["budget"] == model["halfway"] else ""), str(r["budget"]), r)
             for r in model["mixed"]]
    for label, budget, r in rows:
        lines.append(f"| {label} | {budget} | {r['bytes']} | {r['bytes'] / 1e6:.3f} | {r['kl']:.3e} | "
                     f"{r['kl'] / g4:.3g} | {r['accuracy']:.4f} | {100 * r['accuracy'] / base:.1f} % | "
                     f"{r['seconds']:.1f} s |")
    return lines + [""]


def observations(models: dict) -> list[str]:
    """Measured comparisons worth a line: the all-INT8 gptq-mixed checkpoint against uniform gptq-int8 (the same
    setting, int8-g128 everywhere; compressed-tensors with bf16 weight_scale vs GPTQ v1 with fp16 scales)."""
    out = []
    for name, m in models.items():
        top = max(m["mixed"], key=lambda r: r["budget"])
        g8 = m["uniform"]["gptq-int8"]
        if top["budget"] != m["range"]["largest_allocation"]:
            continue
        settings = sorted(set(top["allocation"].values()))
        out.append(f"- {name}: gptq-mixed at the all-INT8 budget ({', '.join(settings)} on every Linear) has KL "
                   f"{top['kl']:.3e}, uniform gptq-int8 {g8['kl']:.3e} (ratio {top['kl'] / g8['kl']:.3g}); sizes "
                   f"{top['bytes']} B vs {g8['bytes']} B. Same setting, different scale storage: compressed-tensors "
                   "weight_scale in bf16 (export/compressed.py, 'Scale dtype') vs GPTQ v1's fp16 scales.")
    return out


def short(module: str) -> tuple[str, str]:
    """(layer, Linear) of a runtime name: ('0', 'mlp.down_proj'); ('–', 'lm_head') outside the layers."""
    if not module.startswith(LAYERS):
        return "–", module
    layer, _, rest = module[len(LAYERS):].partition(".")
    return layer, rest


def kind(group: list[str]) -> str:
    """A fused group's label: 'q/k/v', 'gate/up', 'o', 'down', 'lm_head'."""
    return "/".join(short(m)[1].rsplit(".", 1)[-1].removesuffix("_proj") for m in group)


def allocation_section(models: dict, outliers: dict) -> list[str]:
    halves = {name: at_halfway(m) for name, m in models.items()}
    settings = sorted({s for h in halves.values() for s in h["allocation"].values()})
    lines = ["## The halfway allocation", "",
             "Linears (not fused groups) per setting at the halfway budget:", "",
             "| model | " + " | ".join(settings) + " |", "| --- |" + " ---: |" * len(settings)]
    for name, h in halves.items():
        counts = [sum(v == s for v in h["allocation"].values()) for s in settings]
        lines.append(f"| {name} | " + " | ".join(map(str, counts)) + " |")
    groups, seen = [], set()
    for m, g in halves["twin"]["groups"].items():
        if g[0] not in seen:
            seen.add(g[0])
            groups.append(g)
    kinds = list(dict.fromkeys(kind(g) for g in groups))
    layers = list(dict.fromkeys(short(g[0])[0] for g in groups))
    lines += ["", "Setting per layer and Linear type (clean / twin):", "",
              "| layer | " + " | ".join(kinds) + " |", "| --- |" + " --- |" * len(kinds)]
    for layer in layers:
        cells = []
        for k in kinds:
            g = next((g for g in groups if short(g[0])[0] == layer and kind(g) == k), None)
            cells.append("–" if g is None else " / ".join(halves[n]["allocation"][g[0]] for n in ("clean", "twin")))
        lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    lines += ["", ("Twin, per Linear: the outlier channels the twin planted (measured from the two checkpoints: input "
              "columns whose max |w| the twin raised > 2×, output rows it lowered > 2×), the sensitivity at "
              "int4-g128 and int8-g128 on both models (manifest: Fisher-weighted output error), and the "
              "halfway setting:"), "",
              ("| Linear | outlier input columns | shrunk rows | sens. int4-g128 clean | twin | sens. int8-g128 "
              "clean | twin | setting clean | setting twin |"), "| --- |" + " ---: |" * 6 + " --- | --- |"]
    c, t = halves["clean"], halves["twin"]
    for m in t["allocation"]:
        o = outliers[m]
        layer, lin = short(m)
        lines.append(f"| {layer}.{lin} | {o['columns_up']} | {o['rows_down']} | "
                     f"{c['sensitivity'][m]['int4-g128']:.2e} | {t['sensitivity'][m]['int4-g128']:.2e} | "
                     f"{c['sensitivity'][m]['int8-g128']:.2e} | {t['sensitivity'][m]['int8-g128']:.2e} | "
                     f"{c['allocation'][m]} | {t['allocation'][m]} |")
    return lines + [""] + follows(halves, outliers)


def follows(halves: dict, outliers: dict) -> list[str]:
    """Does the twin's allocation follow the outliers? Compare the share of INT8 among the Linears holding outlier
    input columns with the share among the others, on the twin and on the clean model (same Linears, same
    budget rule)."""
    holders = [m for m, o in outliers.items() if o["columns_up"]]
    others = [m for m in outliers if m not in holders]
    out = []
    for name, h in halves.items():
        int8 = {m for m, s in h["allocation"].items() if s.startswith("int8")}
        out.append(f"- {name}: INT8 on {len(int8 & set(holders))} of {len(holders)} Linears holding outlier input "
                   f"columns ({', '.join(sorted({short(m)[1] for m in holders}))}), on "
                   f"{len(int8 & set(others))} of {len(others)} others. INT8 Linears: "
                   + (", ".join(".".join(short(m)) for m in sorted(int8)) or "none") + ".")
    t = halves["twin"]
    share = {k: sum(t["allocation"][m].startswith("int8") for m in ms) / max(len(ms), 1)
             for k, ms in (("holders", holders), ("others", others))}
    verdict = ("yes: on the twin a larger share of the outlier-holding Linears goes to INT8 than of the others"
               if share["holders"] > share["others"] else
               "no: on the twin the outlier-holding Linears go to INT8 no more often than the others")
    return ["Does the twin's allocation follow the outliers? " + verdict +
            f" ({share['holders']:.0%} vs {share['others']:.0%}).", ""] + out


if __name__ == "__main__":
    main()
