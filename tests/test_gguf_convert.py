"""`pixtral-quant convert --scheme gguf-<type>` end to end (export/gguf/export.py), `plan --runtime llama.cpp`, and the
bad inputs of both. The files are read back with gguf's GGUFReader; llama.cpp loads them in
tests/test_validate_llamacpp.py. The tests that run llama.cpp (its quantizer for the K types, its engine for
validate) request conftest's `llama_cpp` fixture: skipped without llama-cpp-python, except under CI=true. The plan,
q8_0 (the gguf package's own writer) and bad-input tests need only the gguf package and run without it.
"""

from __future__ import annotations

import hashlib
import json
import sys

import gguf
import pytest
from click.testing import CliRunner

from pixtral_quant.cli import main
from pixtral_quant.export.gguf import layout, size
from pixtral_quant.export.gguf.imatrix import read_imatrix
from pixtral_quant.loading import open_checkpoint

needs_llama_cpp = pytest.mark.usefixtures("llama_cpp")  # for the tests that run llama.cpp themselves
SAMPLES = "8"  # calibration samples: enough for every weight to see tokens, quick


def convert(*args, env=None):
    return CliRunner().invoke(main, ["convert", *args], env=env)


@pytest.fixture(scope="module")
def outputs(llama_cpp, tmp_path_factory):
    """The tiny model at gguf-q4_k_m (llama.cpp's quantizer) with each --imatrix choice, and the images one a second
    time."""
    root = tmp_path_factory.mktemp("gguf")
    runs = {"images": ["--imatrix", "images"], "images2": ["--imatrix", "images"], "text": ["--imatrix", "text"],
            "none": ["--imatrix", "none"]}
    for name, extra in runs.items():
        result = convert("--model", "tiny", "--scheme", "gguf-q4_k_m", "--calibration", "tiny", "--num-samples",
                         SAMPLES, *extra, "--out", str(root / name))
        assert result.exit_code == 0, result.output
    return root


def tensor_bytes(path) -> dict[str, bytes]:
    return {t.name: bytes(t.data.tobytes()) for t in gguf.GGUFReader(path).tensors}


def test_files_manifest_and_sizes_match_the_plan(outputs):
    out = outputs / "images"
    assert sorted(p.name for p in out.iterdir()) == sorted([*layout.FILES.values(), "manifest.json", "README.md"])
    assert not (outputs / "images.partial").exists()
    man = json.loads((out / "manifest.json").read_text())
    for name, entry in man["files"].items():
        data = (out / name).read_bytes()
        assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}, name
    assert man["format"] == "gguf" and man["gguf"]["type"] == "q4_k_m" and man["gguf"]["imatrix"]["images"]
    assert man["calibration"]["samples"] == int(SAMPLES) and man["calibration"]["vision_images"] > 0
    assert man["versions"]["llama-cpp-python"] == "0.3.36" and man["versions"]["gguf"] == "0.19.0"
    ckpt = open_checkpoint("tiny")
    predicted = size.gguf_sizes(ckpt.config, ckpt.tokenizer, "q4_k_m", "f16", has_imatrix=True)
    assert (out / "model.gguf").stat().st_size == predicted.text_bytes
    assert (out / "mmproj-model.gguf").stat().st_size == predicted.mmproj_bytes
    written = {t.name: t.tensor_type.name for t in gguf.GGUFReader(out / "model.gguf").tensors}
    assert written == {n: t for n, (t, _) in predicted.text_tensors.items()}


def test_imatrix_file_covers_every_linear(outputs):
    im = read_imatrix(outputs / "images" / "imatrix.gguf")
    layers = open_checkpoint("tiny").config.text_config.num_hidden_layers
    assert len(im.entries) == 7 * layers + 1 and "output.weight" in im.entries
    assert im.chunk_count == int(SAMPLES) and im.datasets[0].startswith("tiny:")
    assert all(e.count > 0 and float(e.in_sum2.min()) >= 0 for e in im.entries.values())
    text = read_imatrix(outputs / "text" / "imatrix.gguf")
    assert sum(e.count for e in text.entries.values()) < sum(e.count for e in im.entries.values()) / 2
    assert not (outputs / "none" / "imatrix.gguf").exists()


def test_the_importance_matrix_changes_the_quantized_weights_and_runs_repeat(outputs):
    images, images2 = (tensor_bytes(outputs / n / "model.gguf") for n in ("images", "images2"))
    text, none = (tensor_bytes(outputs / n / "model.gguf") for n in ("text", "none"))
    assert (outputs / "images" / "model.gguf").read_bytes() == (outputs / "images2" / "model.gguf").read_bytes()
    quantized = [n for n in images if n.endswith(".weight") and n != "token_embd.weight" and "norm" not in n]
    assert quantized  # blk.*.attn_q.weight ... output.weight
    for other in (text, none):
        differ = [n for n in quantized if images[n] != other[n]]
        assert len(differ) == len(quantized), sorted(set(quantized) - set(differ))
    assert images["token_embd.weight"] == none["token_embd.weight"]  # no imatrix entry: llama.cpp's plain rounding


def fields(path) -> dict:
    reader = gguf.GGUFReader(path)
    return {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}


@needs_llama_cpp
def test_native_source_gives_the_same_files(native_twin_dir, outputs, tmp_path):
    """The Mistral-native copy gives the same tensors, imatrix and metadata; only llama.context_length differs:
    params.json has no max_position_embeddings, so the native loader's config has its default."""
    result = convert("--model", str(native_twin_dir), "--scheme", "gguf-q4_k_m", "--calibration", "tiny",
                     "--num-samples", SAMPLES, "--out", str(tmp_path / "n"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "n" / "imatrix.gguf").read_bytes() == (outputs / "images" / "imatrix.gguf").read_bytes()
    for name in ("model.gguf", "mmproj-model.gguf"):
        native, hf = tmp_path / "n" / name, outputs / "images" / name
        assert tensor_bytes(native) == tensor_bytes(hf), name
        a, b = fields(native), fields(hf)
        assert {k for k in a if a[k] != b.get(k)} <= {"llama.context_length"} and a.keys() == b.keys(), name


def test_tekken_model_converts_with_its_vocabulary(tmp_path):
    """A 131072-token model gets the real tekken tokenizer (synth): the GGUF carries it as pre-tokenizer `tekken`
    with every token, at q8_0 (the gguf package's own writer, no importance matrix)."""
    from pixtral_quant.synth import synthesize

    config = open_checkpoint("tiny").config
    config.text_config.vocab_size, config.text_config.num_hidden_layers = 131072, 1
    config.save_pretrained(tmp_path / "cfg")
    synthesize(tmp_path / "cfg", tmp_path / "model")
    result = convert("--model", str(tmp_path / "model"), "--scheme", "gguf-q8_0", "--out", str(tmp_path / "o"))
    assert result.exit_code == 0, result.output
    reader = gguf.GGUFReader(tmp_path / "o" / "model.gguf")
    assert reader.get_field("tokenizer.ggml.pre").contents() == "tekken"
    assert len(reader.get_field("tokenizer.ggml.tokens").contents()) == 131072
    assert "imatrix.gguf" not in {p.name for p in (tmp_path / "o").iterdir()}


def test_plan_runtime_llamacpp_predicts_the_written_files(outputs):
    result = CliRunner().invoke(main, ["plan", "--model", "tiny", "--recipe", "tiny-gguf-q4_k_m", "--json"])
    # tiny-gguf-q4_k_m has no promise of its own: the default target's 80 GiB card, where the tiny model's ~30 MB
    # fit, and plan exits 0 when the plan fits (1 only when it does not: cli/plan.py _llamacpp).
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["fits"] is True and report["proposal"] is None
    assert report["files"]["text_bytes"] == (outputs / "images" / "model.gguf").stat().st_size
    assert report["files"]["mmproj_bytes"] == (outputs / "images" / "mmproj-model.gguf").stat().st_size
    assert report["host_bytes"] > 0 and report["terms"]["mmproj weights"] > 0


def test_plan_12b_sizes_next_to_the_published_ones():
    """From the shipped config and the bundled tekken: Q8_0 is the published 13.02 GB exactly (rounded); Q4_K_L
    (Q4_K_M with token_embd and output at Q8_0) the published 7.98 GB, so Q4_K_M is below it."""
    from pixtral_quant.loading.tokenizer import bundled_tokenizer_path
    from pixtral_quant.memory.report import open_model

    skeleton = size.skeleton(size.shapes_only(open_model("pixtral-12b").config, bundled_tokenizer_path("tekken")))
    q8 = skeleton.sizes("q8_0").text_bytes
    assert round(q8 / 1e9, 2) == 13.02
    q4 = skeleton.sizes("q4_k_m", has_imatrix=True)
    embd, out = (q4.text_tensors[n][1] for n in ("token_embd.weight", "output.weight"))
    vocab_rows = 131072 * 5120
    q4_k_l = q4.text_bytes - embd - out + 2 * (vocab_rows // 32 * 34)
    assert round(q4_k_l / 1e9, 2) == 7.98 and q4.text_bytes < q4_k_l
    result = CliRunner().invoke(main, ["plan", "--recipe", "pixtral-12b-gguf-q4_k_m", "--json"])
    report = json.loads(result.stdout)
    assert report["files"]["text_bytes"] == q4.text_bytes
    assert result.exit_code == 0 and report["fits"], report  # the recipe's own promise: a 12 GiB card
    # 1024² image + 1024 tokens on an 8 GiB card: Q4_K_M + F16 mmproj does not fit llama.cpp's placement
    result = CliRunner().invoke(main, ["plan", "--recipe", "pixtral-12b-gguf-q4_k_m", "--gpu-memory", "8GiB"])
    assert result.exit_code == 1 and "error:" not in result.output, result.output
    assert "does not fit: llama.cpp needs 8.95 GiB" in result.output
    assert "to fit: the best that fits: --scheme gguf-q3_k_m --mmproj-type q8_0" in result.output
    assert "tensors by type: Q4_K ×241, F32 ×81, Q6_K ×41" in " ".join(result.output.split()), result.output


@pytest.mark.parametrize("argv,says", [
    (["--scheme", "gguf-q9_k"], "llama.cpp has no type 'q9_k'"),
    (["--scheme", "rtn-int4", "--imatrix", "text"], "apply only to gguf-<type> schemes"),
    (["--scheme", "gguf-q4_k_m", "--mmproj-type", "q4_0"], "mmproj_type"),
])
def test_bad_options_exit_2(argv, says, tmp_path):
    result = convert(*argv, "--out", str(tmp_path / "o"))
    assert result.exit_code == 2 and says in result.output and "Traceback" not in result.output, result.output
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.partial").exists()


@needs_llama_cpp  # convert loads llama-cpp-python for a type llama.cpp quantizes before the exporter checks the type
def test_iq_type_without_an_importance_matrix_exits_2(tmp_path):
    test_bad_options_exit_2(["--scheme", "gguf-iq2_xxs", "--imatrix", "none"], "only with an importance matrix",
                            tmp_path)


def test_unknown_type_lists_the_valid_ones(tmp_path):
    result = convert("--scheme", "gguf-q9_k", "--out", str(tmp_path / "o"))
    assert all(t in result.output for t in ("q4_k_m", "q5_k_m", "q6_k", "q8_0", "f16", "iq4_xs"))


def test_without_llama_cpp_python_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    result = convert("--scheme", "gguf-q4_k_m", "--out", str(tmp_path / "o"))
    assert result.exit_code == 2 and "pip install 'pixtral-quant[llamacpp]'" in result.output, result.output
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.partial").exists()


def test_existing_output_and_resume(tmp_path):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "keep.txt").write_text("x")
    result = convert("--scheme", "gguf-q8_0", "--out", str(tmp_path / "o"))
    assert result.exit_code == 2 and "not empty" in result.output
    assert (tmp_path / "o" / "keep.txt").read_text() == "x"
    (tmp_path / "p.partial").mkdir()
    result = convert("--scheme", "gguf-q8_0", "--out", str(tmp_path / "p"), "--resume")
    assert result.exit_code == 2 and "GGUF conversion has none" in result.output, result.output


@needs_llama_cpp
def test_q8_0_mmproj_runs_in_llama_cpp(outputs, tmp_path):
    """--mmproj-type q8_0: llama.cpp's mtmd loads it and the image prompts stay close to the reference (measured on
    24 samples: mean KL 5.0e-5, top-1 0.981; the F16 mmproj gives 8e-8: the tiny vision tower's 128-wide rows are
    four Q8_0 blocks each)."""
    from pixtral_quant.config import EngineConfig, ValidateConfig
    from pixtral_quant.validate.pipeline import validate

    result = convert("--model", "tiny", "--scheme", "gguf-q8_0", "--mmproj-type", "q8_0", "--out", str(tmp_path / "o"))
    assert result.exit_code == 0, result.output
    reader = gguf.GGUFReader(tmp_path / "o" / "mmproj-model.gguf")
    assert {t.tensor_type.name for t in reader.tensors if len(t.shape) == 2 and t.name.endswith("attn_q.weight")} \
        == {"Q8_0"}
    report = validate("tiny", [tmp_path / "o"], ValidateConfig(num_samples=24, max_new_tokens=8),
                      engine=EngineConfig(name="llama.cpp"))
    overall = report["candidates"][0]["metrics"]["overall"]
    assert overall["top1_agreement"] >= 0.95 and overall["mean_kl"] < 5e-4, overall


@needs_llama_cpp
def test_validate_cli_runs_a_gguf_folder_and_names_the_engine_it_needs(outputs):
    folder = str(outputs / "images")
    ok = CliRunner().invoke(main, ["validate", "--engine", "llama.cpp", "--reference", "tiny", "--candidate", folder,
                                   "--num-samples", "8"])
    assert ok.exit_code == 0 and "PASS" in ok.output, ok.output
    wrong = CliRunner().invoke(main, ["validate", "--reference", "tiny", "--candidate", folder, "--num-samples", "8"])
    assert wrong.exit_code == 2 and "use --engine llama.cpp" in wrong.output, wrong.output
