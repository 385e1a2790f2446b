"""README.md, the model card of every output (Hugging Face conventions: YAML front matter through huggingface_hub's
ModelCardData, then the body), made from manifest.json so that it says only what the manifest records: base model,
method and recipe, calibration set and hash, files and sizes, how to load and serve it, and the validation table
once `validate --update-card` has run on it (validate/pipeline.py).

The card is not in the manifest's file list (manifest.write_manifest skips it): validate rewrites it, the files
the manifest vouches for never change. Nothing time- or path-dependent goes in, so the same conversion gives the
same bytes (tests/test_determinism.py compares every file).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

CARD = "README.md"
DEFAULT_LICENSE = "apache-2.0"  # Pixtral-12B's and the bundled tiny model's; a source card's own license wins
PROJECT = "pixtral-quant"
# what each stored format is, what loads it (config.json quantization_config.quant_method, or gguf)
FORMATS = {"gptq": ("GPTQ v1 (W4A16 / W8A16)", "transformers (with optimum + GPTQModel), vLLM"),
           "bitsandbytes": ("bitsandbytes", "transformers (with bitsandbytes)"),
           "compressed-tensors": ("compressed-tensors (per-Linear precision)", "transformers, vLLM"),
           "gguf": ("GGUF", "llama.cpp, Ollama, LM Studio")}


def write_card(out: Path, manifest: dict, validation: list[dict] | None = None) -> Path:
    """README.md in `out` (replaced atomically: a reader never sees half a card). validation: rows of
    validation_rows(report, label)."""
    path = out / CARD
    tmp = out / f".{CARD}.tmp"
    tmp.write_text(card_text(manifest, _quant_method(out, manifest), validation), encoding="utf-8")
    os.replace(tmp, path)
    return path


def _quant_method(out: Path, manifest: dict) -> str:
    if manifest.get("format") == "gguf":
        return "gguf"
    config = json.loads((out / "config.json").read_text())
    return config.get("quantization_config", {}).get("quant_method", "unknown")


def base_model(source: str) -> str:
    """A hub id as given; a local folder by its name (the card says to set the hub id before pushing)."""
    path = Path(source)
    if source.count("/") == 1 and not path.exists():
        return source
    return "pixtral-quant/tiny-pixtral" if source == "tiny" else path.name


def card_text(manifest: dict, quant_method: str, validation: list[dict] | None = None) -> str:
    """The whole card: front matter (huggingface_hub.ModelCardData) + body."""
    from huggingface_hub import ModelCardData

    recipe, scheme = manifest["recipe"], manifest["recipe"]["scheme"]
    base = base_model(manifest["source"]["model"])
    gguf = quant_method == "gguf"
    license_ = manifest["source"].get("license") or DEFAULT_LICENSE
    data = ModelCardData(base_model=base, base_model_relation="quantized", license=license_,
                         pipeline_tag="image-text-to-text", library_name="gguf" if gguf else "transformers",
                         tags=["pixtral", "quantized", PROJECT, quant_method, scheme["name"]])
    stored, readers = FORMATS.get(quant_method, (quant_method, "transformers"))
    body = [f"# {base} — {scheme['name']}", "",
            f"Quantized by {PROJECT} {manifest['versions'].get('pixtral-quant') or ''} from "
            f"`{manifest['source']['model']}` ({manifest['source']['format']} format): {stored}, read by {readers}. "
            "If `base_model` above is a local folder name, set it to the base model's hub id before pushing.", "",
            *_method(recipe), *_calibration(manifest.get("calibration")), *_files(manifest),
            *_usage(manifest, gguf), *_validation(validation)]
    return f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body) + "\n"


def _method(recipe: dict) -> list[str]:
    scheme = recipe["scheme"]
    rows = [f"| {k} | `{json.dumps(v)}` |" for k, v in sorted(scheme.items()) if v is not None]
    targets = ", ".join(f"{k}: {v}" for k, v in sorted(recipe["targets"].items()))
    return ["## Method", "", f"Recipe `{recipe['name']}`; targets: {targets}.", "", "| scheme setting | value |",
            "| --- | --- |", *rows, ""]


def _calibration(cal: dict | None) -> list[str]:
    if cal is None:
        return ["## Calibration", "", "None: a data-free scheme (round to nearest / bitsandbytes).", ""]
    return ["## Calibration", "",
            f"Set `{cal['set']}` through the full multimodal model (images through the vision tower): "
            f"{cal['samples']} samples, {cal['tokens']} tokens, {cal['images']} images"
            + (" (text only: images removed)" if cal.get("text_only") else "")
            + f"; content hash `{cal['content_hash']}`.",
            ""]


def _files(manifest: dict) -> list[str]:
    from ..memory.units import file_bytes

    files = manifest.get("files", {})
    total = sum(f["bytes"] for f in files.values())
    rows = [f"| {name} | {file_bytes(f['bytes'])} | `{f['sha256'][:16]}` |" for name, f in sorted(files.items())]
    return ["## Files", "", f"{file_bytes(total)} in all (sha256 of each in manifest.json).", "",
            "| file | size | sha256 (first 16) |", "| --- | ---: | --- |", *rows, ""]


def _usage(manifest: dict, gguf: bool) -> list[str]:
    if gguf:
        roles = manifest["gguf"]["roles"]
        text, mmproj = roles["text"], roles["mmproj"]
        return ["## Use", "", "```bash",
                f"llama-mtmd-cli -m {text} --mmproj {mmproj} --image photo.png -p 'Describe the image.'",
                f"llama-server -m {text} --mmproj {mmproj}            # OpenAI-compatible server",
                "```", ""]
    return ["## Use", "", "```python", "from transformers import AutoProcessor, LlavaForConditionalGeneration", "",
            'model = LlavaForConditionalGeneration.from_pretrained("THIS_FOLDER_OR_REPO", device_map="auto")',
            'processor = AutoProcessor.from_pretrained("THIS_FOLDER_OR_REPO")', "```", "", "```bash",
            "vllm serve THIS_FOLDER_OR_REPO          # OpenAI-compatible server", "```", ""]


def validation_rows(report: dict, label: str) -> list[dict]:
    """The card's validation rows of one candidate of a validate report (validate/report.py's report.json)."""
    cand = next(c for c in report["candidates"] if c["label"] == label)
    m = cand["metrics"]["overall"]
    return [{"eval": report["eval"]["set"], "samples": m["samples"], "engine": (report.get("engine") or {}).get(
        "name", "transformers"), "mean_kl": m.get("mean_kl"), "top1_agreement": m.get("top1_agreement"),
        "accuracy_ref": m.get("accuracy_ref"), "accuracy": m.get("accuracy_cand"), "recovery": m.get("recovery"),
        "passed": cand["passed"]}]


def _validation(rows: list[dict] | None) -> list[str]:
    if not rows:
        return ["## Validation", "", "Not validated yet: `pixtral-quant validate --candidate THIS_FOLDER "
                "--update-card` compares it with the reference on held-out image prompts and fills this section.", ""]

    def num(v, pattern):
        return "–" if v is None else pattern.format(v)

    lines = ["## Validation", "", "`pixtral-quant validate` against the reference on held-out image prompts "
             "(teacher-forced token KL and top-1 agreement on the reference's answers; accuracy of free greedy "
             "generations).", "",
             "| eval set | n | engine | mean KL | top-1 agree | accuracy (ref → this) | recovery | verdict |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        lines.append(f"| {r['eval']} | {r['samples']} | {r['engine']} | {num(r['mean_kl'], '{:.2e}')} | "
                     f"{num(r['top1_agreement'], '{:.4f}')} | {num(r['accuracy_ref'], '{:.3f}')} → "
                     f"{num(r['accuracy'], '{:.3f}')} | {num(r['recovery'], '{:.3f}')} | "
                     f"{'pass' if r['passed'] else 'FAIL'} |")
    return lines + [""]
