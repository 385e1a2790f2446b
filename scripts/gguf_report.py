"""reports/gguf-tiny.{json,md}: what `convert --scheme gguf-<type>` writes, run by llama.cpp itself (issue 12).

    python scripts/gguf_report.py                         # ~10 min on 2 CPU cores
    python scripts/gguf_report.py --num-samples 120 --work /tmp/gguf-report

In one run, on this machine:
1. the tiny model's F16 text GGUF in llama.cpp vs transformers (float32) on text-only prompts: max |Δlogit| and
   top-1 agreement over every position;
2. the tiny model at F16, Q8_0 and Q4_K_M (+ F16 mmproj) validated with `--engine llama.cpp` on held-out image
   prompts (mtmd encodes the images): accuracy next to the transformers reference's, KL(ref‖gguf), top-1;
3. the headline: the outlier twin (fixtures/twin.py) at Q4_K_M, Q3_K_M and Q2_K with the importance matrix gathered with
   images, text-only, and none; KL(ref‖gguf) from llama.cpp's logits and accuracy;
4. Pixtral-12B file sizes from its config (`plan --runtime llama.cpp`) next to the published GGUFs'.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pixtral_quant.assets import TINY_MODEL  # noqa: E402
from pixtral_quant.cli.convert import IMATRIX_CHOICES  # noqa: E402
from pixtral_quant.config import EngineConfig, ValidateConfig, with_overrides  # noqa: E402
from pixtral_quant.convert import convert  # noqa: E402
from pixtral_quant.pipeline.runtime import Reporter  # noqa: E402
from pixtral_quant.recipes import load_recipe  # noqa: E402

TINY_TYPES = ("f16", "q8_0", "q4_k_m")
TWIN_TYPES = ("q4_k_m", "q3_k_m", "q2_k")
PUBLISHED = {"q4_k_l": 7.98, "q8_0": 13.02}  # Pixtral-12B GGUFs people download (text model file, GB)
TEXT_PROMPTS = 60
METRICS = ("accuracy_ref", "accuracy_cand", "recovery", "mean_kl", "p95_kl", "top1_agreement", "exact_match")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/gguf-report"), help="scratch folder (reused)")
    p.add_argument("--out", type=Path, default=ROOT / "reports" / "gguf-tiny", help="report path, no suffix")
    p.add_argument("--num-samples", type=int, default=300, help="held-out image prompts per validation (300: all)")
    args = p.parse_args()
    torch.set_num_threads(2)
    args.work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    report = {"machine": machine(), "num_samples": args.num_samples}
    report["text_logits"] = text_logits(gguf_of(TINY_MODEL, "f16", "none", args.work / "tiny-f16"))
    tiny = [gguf_of(TINY_MODEL, t, "images", args.work / f"tiny-{t}") for t in TINY_TYPES]
    report["tiny"] = metrics_of(validated("tiny", tiny, args.num_samples))
    twin = twin_model(args.work)
    cands = [gguf_of(twin, t, im, args.work / f"twin-{t}-{im}") for t in TWIN_TYPES for im in IMATRIX_CHOICES]
    twin_report = validated(twin, cands, args.num_samples)
    report["twin"] = metrics_of(twin_report)
    report["paired"] = paired(twin_report)
    report["imatrix_similarity"] = imatrix_similarity(args.work / "twin-q4_k_m-images", args.work / "twin-q4_k_m-text")
    report["sizes_12b"] = sizes_12b()
    report["plan_12b"] = plan_12b()
    report["seconds"] = round(time.perf_counter() - start, 1)
    write(report, args.out)


def write(report: dict, out: Path) -> None:
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(render(report))
    print(render(report))


def machine() -> str:
    import os

    from pixtral_quant.diagnostics.machine import cpu_name

    cpu = cpu_name()
    from importlib.metadata import version

    return (f"{cpu}, {os.cpu_count()} cores, no GPU; Python {platform.python_version()}, torch {torch.__version__}, "
            f"llama-cpp-python {version('llama-cpp-python')}, gguf {version('gguf')}")


def gguf_of(model, type_name: str, imatrix: str, out: Path) -> Path:
    """`convert --recipe tiny-gguf-q4_k_m --scheme gguf-<type> --imatrix <imatrix>` into `out` (reused if done)."""
    if (out / "manifest.json").is_file():
        return out
    shutil.rmtree(out, ignore_errors=True)
    recipe = with_overrides(load_recipe("tiny-gguf-q4_k_m"), {"scheme": f"gguf-{type_name}"})
    recipe = with_overrides(recipe, IMATRIX_CHOICES[imatrix])
    convert(model, recipe, out, reporter=Reporter())
    return out


def twin_model(work: Path) -> Path:
    from pixtral_quant.fixtures.twin import make_outlier_twin

    out = work / "twin-model"
    return out if (out / "model.safetensors").is_file() else make_outlier_twin(TINY_MODEL, out)


def validated(reference, candidates: list[Path], n: int) -> dict:
    """validate(reference, candidates) with the llama.cpp engine on the tiny model's held-out image prompts."""
    from pixtral_quant.validate.evalset import eval_spec
    from pixtral_quant.validate.pipeline import validate

    cfg = ValidateConfig(eval_set=eval_spec(TINY_MODEL, None), num_samples=n, max_new_tokens=8)
    return validate(reference, candidates, cfg, engine=EngineConfig(name="llama.cpp"))


def metrics_of(report: dict) -> dict[str, dict]:
    """Candidate label → the overall metrics the report shows, plus the text model's file size."""
    out = {}
    for c in report["candidates"]:
        row = {k: c["metrics"]["overall"][k] for k in METRICS}
        row["model_gguf_bytes"] = (Path(c["path"]) / "model.gguf").stat().st_size
        row["samples"] = c["metrics"]["overall"]["samples"]
        row["median_kl"] = float(torch.tensor([r["kl_mean"] for r in c["samples"]]).median())
        out[c["label"]] = row
    return out


def paired(report: dict) -> dict[str, dict]:
    """Per twin type, sample by sample: the share of samples whose answer KL is lower with the image-text
    importance matrix than with the text-only one (ties split), and the ratio of their mean KLs."""
    kl = {c["label"]: torch.tensor([r["kl_mean"] for r in c["samples"]], dtype=torch.float64)
          for c in report["candidates"]}
    out = {}
    for t in TWIN_TYPES:
        images, text = kl[f"twin-{t}-images"], kl[f"twin-{t}-text"]
        wins = float(((images < text).double() + 0.5 * (images == text).double()).mean())
        out[t] = {"images_better_share": wins, "mean_ratio_images_over_text": float(images.mean() / text.mean()),
                  "median_ratio_images_over_text": float(images.median() / text.median())}
    return out


@torch.no_grad()
def text_logits(folder: Path) -> dict:
    """llama.cpp's F16 logits vs transformers' float32 logits at every position of TEXT_PROMPTS text-only
    conversations (the eval questions without their images, with their answers)."""
    from pixtral_quant.calibration.dataset import open_tokenizer
    from pixtral_quant.calibration.encode import collate, encode
    from pixtral_quant.engines.llamacpp import GgufModel
    from pixtral_quant.loading import load_model, open_checkpoint
    from pixtral_quant.validate.evalset import eval_spec, load_eval

    ckpt = open_checkpoint(TINY_MODEL)
    tok = open_tokenizer(ckpt.tokenizer)
    eset = load_eval(eval_spec(ckpt.path, None), tok, TEXT_PROMPTS, 0)
    model = load_model(ckpt, dtype=torch.float32)
    worst, agree, total = 0.0, 0, 0
    with GgufModel(folder / "model.gguf", None, 512) as gguf:
        for i in range(len(eset)):
            msgs = eset.messages(i)
            question = " ".join(p["text"] for p in msgs[0]["content"] if p.get("type") == "text")
            enc = encode(tok, [{"role": "user", "content": question}, msgs[-1]])
            ours = torch.from_numpy(gguf.logits(enc.tokens, [], range(len(enc.tokens))))
            ref = model(**collate([enc])).logits[0].float()
            worst = max(worst, float((ours - ref).abs().max()))
            agree += int((ours.argmax(-1) == ref.argmax(-1)).sum())
            total += len(enc.tokens)
    return {"prompts": len(eset), "positions": total, "max_abs_diff": worst, "top1_agreement": agree / total}


def imatrix_similarity(images: Path, text: Path) -> dict:
    """How different the two importance matrices are, per weight: cosine and Spearman rank correlation of the
    payloads llama.cpp gets (Σx²/tokens per input column), and the tokens each saw."""
    from pixtral_quant.export.gguf.imatrix import quantize_payload, read_imatrix

    a, b = read_imatrix(images / "imatrix.gguf"), read_imatrix(text / "imatrix.gguf")
    cos, rank = [], []
    for name in a.entries:
        x, y = (torch.from_numpy(quantize_payload(m.entries[name])).double() for m in (a, b))
        cos.append(float(torch.nn.functional.cosine_similarity(x, y, dim=0)))
        ranks = torch.stack([x.argsort().argsort(), y.argsort().argsort()]).double()
        rank.append(float(torch.corrcoef(ranks)[0, 1]))
    cos, rank = torch.tensor(cos), torch.tensor(rank)
    any_weight = next(iter(a.entries))
    return {"weights": len(cos), "cosine_min": float(cos.min()), "cosine_median": float(cos.median()),
            "spearman_min": float(rank.min()), "spearman_median": float(rank.median()),
            "tokens_images": a.entries[any_weight].count, "tokens_text": b.entries[any_weight].count}


def sizes_12b() -> dict:
    """Pixtral-12B's text GGUF sizes from its config and the bundled tekken (export/gguf/size.py); Q4_K_L is
    Q4_K_M with token_embd and output at Q8_0 (how the published Q4_K_L files are made)."""
    from pixtral_quant.export.gguf import size
    from pixtral_quant.loading.tokenizer import bundled_tokenizer_path
    from pixtral_quant.memory.report import open_model

    config = open_model("pixtral-12b").config
    skeleton = size.skeleton(size.shapes_only(config, bundled_tokenizer_path("tekken")))
    out = {t: skeleton.sizes(t, has_imatrix=True).text_bytes for t in ("q8_0", "q6_k", "q5_k_m", "q4_k_m", "q3_k_m")}
    q4 = skeleton.sizes("q4_k_m", has_imatrix=True)
    rows = config.text_config.vocab_size * config.text_config.hidden_size
    big = sum(q4.text_tensors[n][1] for n in ("token_embd.weight", "output.weight"))
    out["q4_k_l"] = q4.text_bytes - big + 2 * (rows // 32 * 34)  # Q8_0: 34 bytes per 32 weights
    out["mmproj_f16"] = skeleton.sizes("q8_0", "f16").mmproj_bytes
    return out


def plan_12b() -> dict:
    """`plan --recipe pixtral-12b-gguf-q4_k_m` (runtime llama.cpp): the GPU terms, the verdict, the proposal."""
    from pixtral_quant.memory.llamacpp import llamacpp_report

    rep = llamacpp_report(None, "pixtral-12b-gguf-q4_k_m")
    return {k: rep[k] for k in ("terms", "gpu_bytes", "limit_bytes", "card_bytes", "fits", "host_bytes", "tokens",
                                "proposal")}


def render(r: dict) -> str:
    t = r["text_logits"]
    lines = ["# GGUF for llama.cpp — the tiny Pixtral and its outlier twin", "",
             f"Machine: {r['machine']}. One run of `python scripts/gguf_report.py` ({r['seconds']:.0f} s; conversions an "
             "earlier run left in --work are reused). Every "
             "GGUF here is what `pixtral-quant convert --scheme gguf-<type>` wrote, run by llama.cpp itself "
             "(llama-cpp-python; images through mtmd) on mistral-common's exact token ids; the reference is the "
             "bf16 checkpoint in transformers (float32 compute).", "",
             "## llama.cpp vs transformers, text only (F16)", "",
             f"{t['prompts']} text-only prompts, {t['positions']} positions: max |Δlogit| {t['max_abs_diff']:.4f}, "
             f"top-1 agreement {t['top1_agreement']:.4f}.", "",
             f"## Image prompts, tiny model ({r['num_samples']} held-out samples, greedy answers)", "",
             *table(r["tiny"]), "",
             "## Headline: the importance matrix, on the outlier twin", "",
             "imatrix `images`: gathered through the full multimodal model on image prompts (this project); `text`: "
             "the same prompts with the images stripped (what llama-imatrix can do); `none`: llama.cpp's plain "
             "rounding.", "", *table(r["twin"]), "",
             "Paired, sample by sample (the same prompts): share of samples where `images` has the lower answer KL "
             "than `text`, and the ratios of their mean and median KL.", "",
             "| type | images better (share) | mean KL images / text | median KL images / text |",
             "| --- | ---: | ---: | ---: |",
             *[f"| {t} | {v['images_better_share']:.3f} | {v['mean_ratio_images_over_text']:.3f} | "
               f"{v['median_ratio_images_over_text']:.3f} |" for t, v in r["paired"].items()], "",
             *why(r), "",
             "## Pixtral-12B text GGUF sizes (from the config, byte-exact with what convert writes)", "",
             "| type | bytes | GB | published |", "| --- | ---: | ---: | ---: |"]
    for name, n in r["sizes_12b"].items():
        lines.append(f"| {name} | {n} | {n / 1e9:.2f} | {PUBLISHED.get(name, '')} |")
    return "\n".join(lines + ["", *plan_lines(r["plan_12b"])]) + "\n"


def plan_lines(p: dict) -> list[str]:
    gib = 2**30
    tok = p["tokens"]
    out = ["## Pixtral-12B Q4_K_M on an 8 GiB card in llama.cpp (`plan --recipe pixtral-12b-gguf-q4_k_m`)", "",
           f"One 1024² image + 1024 text tokens ({tok['prompt']} prompt tokens, context {tok['context']}); "
           f"token_embd in host memory ({p['host_bytes'] / gib:.2f} GiB), the rest on the GPU. The compute buffers "
           "are modelled (memory/llamacpp.py), not measured: no GPU was lent.", "",
           "| GPU term | GiB |", "| --- | ---: |"]
    out += [f"| {k} | {v / gib:.2f} |" for k, v in p["terms"].items()]
    verdict = "fits" if p["fits"] else "does not fit"
    out += [f"| total | {p['gpu_bytes'] / gib:.2f} |", "",
            f"Limit {p['limit_bytes'] / gib:.2f} GiB of the {p['card_bytes'] / gib:.0f} GiB card: {verdict}."]
    if p["proposal"]:
        q = p["proposal"]
        out.append(f"The best that fits: {q['scheme']} with a {q['mmproj_type']} mmproj, {q['gpu_bytes'] / gib:.2f} "
                   f"GiB (text model {q['files']['text_bytes'] / 1e9:.2f} GB).")
    return out


def why(r: dict) -> list[str]:
    """The headline's reading, from this run's numbers."""
    sim, p = r["imatrix_similarity"], r["paired"]
    q4 = {k: r["twin"][f"twin-q4_k_m-{k}"]["mean_kl"] for k in ("images", "text", "none")}
    return ["### Reading", "",
            f"Either importance matrix cuts the mean answer KL of Q4_K_M by {q4['none'] / q4['images']:.0f}× "
            f"(images) / {q4['none'] / q4['text']:.0f}× (text) against none. Between them this run shows no "
            f"measurable difference: images has the lower KL on {min(v['images_better_share'] for v in p.values()):.2f}"
            f"–{max(v['images_better_share'] for v in p.values()):.2f} of the samples (0.5 = a coin flip), and the "
            "mean-KL ratio goes both ways across types. So the issue's expectation (image-text measurably better "
            "than text-only) does not hold on this model; the test does not claim it. Why, with numbers:",
            f"- The two matrices do differ: per weight, the payloads' Spearman rank correlation has median "
            f"{sim['spearman_median']:.2f} (min {sim['spearman_min']:.2f}), the images one saw "
            f"{sim['tokens_images']} tokens to the text one's {sim['tokens_text']} (image tokens included). But "
            f"their cosine similarity is {sim['cosine_median']:.2f} (median): the large columns are largely the same. "
            "The twin's outliers are token-independent — down_proj / o_proj weight columns × 32 with their inputs "
            "÷ 32 for every token, image or text — and llama.cpp's K-quant search uses the payload only as relative "
            "weights of the columns inside each 16/32-column sub-block, so the differences that remain barely move "
            "the chosen scales.",
            "- The answers are 1–3 tokens of easy tasks: accuracy and top-1 stay at the reference's even at Q2_K, the "
            "median KL is ~1e-6 and the mean is set by a few samples (p95 < mean), so differences of tens of "
            "percent in the mean are within sample noise here.",
            "- What would show a difference: a model whose image-token activations have outlier channels the text "
            "tokens lack (real vision-language models do; the twin's outliers are token-independent), and longer "
            "answers. Real Pixtral weights are not on this machine."]


def table(rows: dict) -> list[str]:
    out = ["| output | model.gguf bytes | accuracy (ref → gguf) | recovery | mean KL | median KL | p95 KL | top-1 | "
           "exact match |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for label, m in rows.items():
        out.append(f"| {label} | {m['model_gguf_bytes']} | {m['accuracy_ref']:.3f} → {m['accuracy_cand']:.3f} | "
                   f"{m['recovery']:.3f} | {m['mean_kl']:.2e} | {m['median_kl']:.2e} | {m['p95_kl']:.2e} | {m['top1_agreement']:.4f} | "
                   f"{m['exact_match']:.3f} |")
    return out


if __name__ == "__main__":
    main()
