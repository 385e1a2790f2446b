"""The model card (README.md) in every output (pixtral_quant/export/card.py): Hugging Face front matter that
huggingface_hub parses, the body from the manifest, the validation table after `validate --update-card`."""

from __future__ import annotations

import json

from click.testing import CliRunner
from huggingface_hub import ModelCard, metadata_load

from pixtral_quant.cli import main
from pixtral_quant.export.card import card_text


def test_a_conversion_writes_a_card_the_hub_reads_and_validate_fills_it(tmp_path):
    out = tmp_path / "o"
    res = CliRunner().invoke(main, ["convert", "--scheme", "rtn-int8", "--out", str(out)])
    assert res.exit_code == 0, res.output
    meta = metadata_load(out / "README.md")
    assert meta["base_model_relation"] == "quantized" and meta["pipeline_tag"] == "image-text-to-text"
    assert meta["license"] == "apache-2.0" and meta["library_name"] == "transformers"
    assert {"pixtral", "quantized", "gptq", "rtn-int8"} <= set(meta["tags"]) and meta["base_model"]
    card = ModelCard.load(out / "README.md")
    assert card.data.base_model == meta["base_model"]
    assert "LlavaForConditionalGeneration.from_pretrained" in card.text and "vllm serve" in card.text
    assert "Not validated yet" in card.text and "None: a data-free scheme" in card.text
    manifest = json.loads((out / "manifest.json").read_text())
    assert "README.md" not in manifest["files"]  # validate rewrites the card; the manifest vouches for the rest
    assert f"`{manifest['files']['model.safetensors']['sha256'][:16]}`" in card.text

    res = CliRunner().invoke(main, ["validate", "--candidate", str(out), "--num-samples", "4", "--max-new-tokens", "2",
                                    "--update-card"])
    assert res.exit_code == 0, res.output
    card = ModelCard.load(out / "README.md")
    assert "Not validated yet" not in card.text
    rows = [line for line in card.text.splitlines() if "| transformers |" in line]
    assert len(rows) == 1 and "| 4 | transformers |" in rows[0] and rows[0].endswith("| pass |"), card.text
    assert json.loads((out / "manifest.json").read_text()) == manifest
    again = CliRunner().invoke(main, ["validate", "--candidate", str(out), "--num-samples", "2", "--max-new-tokens",
                                      "2"])
    assert again.exit_code == 0, again.output  # the rewritten card does not break the manifest's file check


def manifest(**extra) -> dict:
    files = {"model.gguf": {"bytes": 7477739872, "sha256": "ab" * 32},
             "mmproj-model.gguf": {"bytes": 870069952, "sha256": "cd" * 32}}
    return {"recipe": {"name": "pixtral-12b-gguf-q4_k_m", "scheme": {"name": "gguf-q4_k_m", "type": "q4_k_m"},
                       "targets": {"decoder": True}},
            "source": {"model": "mistralai/Pixtral-12B-2409", "format": "hf", "weight_files": []},
            "versions": {"pixtral-quant": "0.1.0"}, "files": files, **extra}


def test_a_gguf_card_says_how_llama_cpp_runs_it_and_what_calibrated_it():
    cal = {"set": "builtin:calib", "content_hash": "sha256:" + "e" * 64, "samples": 256, "tokens": 1000,
           "images": 300, "text_only": False}
    text = card_text(manifest(format="gguf", gguf={"roles": {"text": "model.gguf", "mmproj": "mmproj-model.gguf"}},
                              calibration=cal), "gguf")
    meta = ModelCard(text).data
    assert meta.base_model == "mistralai/Pixtral-12B-2409" and meta.library_name == "gguf"
    assert "llama-mtmd-cli -m model.gguf --mmproj mmproj-model.gguf" in text and "llama-server" in text
    assert "256 samples, 1000 tokens, 300 images" in text and "sha256:" + "e" * 64 in text
    assert "8.35 GB in all" in text


def test_the_license_comes_from_the_source_card(tiny_model_dir, tmp_path):
    import shutil

    src = tmp_path / "src"
    shutil.copytree(tiny_model_dir, src)
    (src / "README.md").write_text("---\nlicense: other\nlicense_name: mrl\n---\n# Pixtral-Large-Instruct-2411\n")
    res = CliRunner().invoke(main, ["convert", "--model", str(src), "--scheme", "rtn-int4", "--out",
                                    str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert metadata_load(tmp_path / "o" / "README.md")["license"] == "other"
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["source"]["license"] == "other"
