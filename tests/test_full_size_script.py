"""scripts/full_size_cpu.py (issue 13's full-size CPU proof) end to end in its --tiny mode, so it cannot rot: every
stage runs in its own process on tiny shapes; sizes are checked byte for byte against the plan recomputed here,
RSS predictions against the conversion model recomputed here, and the process-tree sampler on a real tree."""

from __future__ import annotations

import importlib.util
import json
import sys
import textwrap
from pathlib import Path

import pytest

from pixtral_quant.memory.checkpoint import estimate
from pixtral_quant.diagnostics.conversion import convert_rss
from pixtral_quant.memory.inventory import inventory, model_shapes
from pixtral_quant.memory.report import open_model
from pixtral_quant.diagnostics.tree import run_sampled
from pixtral_quant.memory.units import GIB

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script():
    spec = importlib.util.spec_from_file_location("full_size_cpu", SCRIPTS / "full_size_cpu.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One --tiny run shared by the tests below (about a minute on 2 cores)."""
    script = load_script()
    tmp = tmp_path_factory.mktemp("full-size")
    out, work = tmp / "r" / "full-size-cpu", tmp / "w"
    code = script.main(["--tiny", "--out", str(out), "--work", str(work), "--quiet", "--fresh"])
    return script, code, json.loads(out.with_suffix(".json").read_text()), out, work


def outside_decoder_bytes() -> int:
    """bf16 bytes of every tiny-model tensor that is not in a decoder layer, from its safetensors header."""
    import math

    from safetensors import safe_open

    from pixtral_quant.assets import TINY_MODEL

    # The conversion model counts a Linear as in x out: the projector's two biases (2 x 512 B here, 20 KiB at
    # 12B width) are the one thing it leaves out, so they are left out here too.
    with safe_open(str(Path(TINY_MODEL) / "model.safetensors"), "pt") as f:
        return sum(2 * math.prod(f.get_slice(k).get_shape()) for k in f.keys()
                   if (".layers." not in k or "vision" in k) and not k.startswith("multi_modal_projector.linear_")
                   or k.startswith("multi_modal_projector.linear_") and k.endswith(".weight"))


OUTSIDE_DECODER_BYTES = outside_decoder_bytes()


def plan_bytes(recipe, layers=None) -> int:
    """The plan's checkpoint size for the tiny config at `layers`, computed here from the config."""
    from pixtral_quant.synth import with_depth

    config = with_depth(open_model("tiny").config, layers)
    return estimate(inventory(model_shapes(config, "bfloat16"), recipe), recipe.max_shard_bytes).total_bytes


@pytest.mark.slow
def test_every_stage_runs_and_the_report_has_every_key(tiny_run):
    _, code, report, out, work = tiny_run
    stages = report["stages"]
    assert code == 0, [(k, s.get("error")) for k, s in stages.items()]
    assert list(stages) == ["synth", "int4", "int8", "nf4", "gptq", "large"]
    assert all(s["status"] == "ok" for s in stages.values())
    m = report["machine"]
    assert m["cores"] >= 1 and m["ram_bytes"] > GIB and m["cpu"] != "unknown"
    assert set(stages["int4"]) >= {"convert", "generate"} and "generate" not in stages["nf4"]
    assert set(stages["gptq"]) >= {"runs", "per_layer_seconds", "flat", "extrapolated_seconds", "recipe_tokens"}
    assert set(stages["large"]) >= {"layer_bytes_measured", "layer_bytes_predicted", "full_tensor_bytes_plan"}
    md = out.with_suffix(".md").read_text()
    for heading in ("## 1. Synthesis", "## 2. Conversions", "## 3. GPTQ", "## 4. Load", "## 5. Pixtral Large",
                    "## Checks", m["cpu"]):
        assert heading in md
    # At tiny scale the 15 % RSS and flatness checks are n/a (None, see test_rss_predictions_are_the_models);
    # every other check must have passed, and nothing else may be n/a.
    na = {c["check"] for c in report["checks"] if c["passed"] is None}
    assert all(" within 15 % " in name for name in na) and len(na) == 10, sorted(na)
    assert all(c["passed"] is True for c in report["checks"] if c["check"] not in na)
    assert not any(work.iterdir())  # every intermediate removed


@pytest.mark.slow
def test_synth_native_and_hf_agree(tiny_run):
    s = tiny_run[2]["stages"]["synth"]
    native, hf = s["native"]["result"], s["hf"]["result"]
    assert native["format"] == "native" and hf["format"] == "hf"
    assert native["check"]["names_hash"] == hf["check"]["names_hash"] and hf["check"]["tensors"] == 63
    assert len(hf["check"]["bit_equal"]) >= 10 and all(hf["check"]["bit_equal"].values())
    assert len(hf["check"]["rope_permuted"]) == 4  # q and k of the first and last layer
    assert native["tensor_bytes"] == hf["tensor_bytes"] == s["predicted_tensor_bytes"]


@pytest.mark.slow
def test_checkpoint_bytes_equal_the_plan(tiny_run):
    script, _, report, _, _ = tiny_run
    st, recipes = report["stages"], script.recipes(script.TINY)
    for key in ("int4", "int8", "nf4"):  # nf4 too: its quant_state JSON is fixed-width (memory.storage)
        c = st[key]["convert"]
        assert c["bytes"] == c["plan_bytes"] == plan_bytes(recipes[key]), key
    for n, r in st["gptq"]["runs"].items():
        assert r["convert"]["bytes"] == plan_bytes(recipes["gptq"], int(n))
    large = st["large"]
    assert large["convert"]["bytes"] == plan_bytes(recipes["large"], 2)
    assert set(large["layer_bytes_measured"].values()) == {large["layer_bytes_predicted"]}
    assert large["full_tensor_bytes_extrapolated"] == large["full_tensor_bytes_plan"]


@pytest.mark.slow
def test_rss_predictions_are_the_models(tiny_run):
    """At tiny scale the peak is the import baseline plus ~0.1-0.3 GiB the model does not itemize, so the 15 %
    tolerance is not asserted here (the report marks it n/a); what must hold: the recorded prediction is
    conversion.convert_rss with the job's measured baseline, the peak is the larger of VmHWM and the tree sample,
    and the unmodelled rest stays small."""
    script, _, report, _, _ = tiny_run
    from pixtral_quant.synth import with_depth

    st, recipes = report["stages"], script.recipes(script.TINY)
    config = with_depth(open_model("tiny").config, None)  # as synth writes it: bf16
    for key in ("int4", "int8", "nf4"):
        c = st[key]["convert"]
        m = c["measured"]
        assert m["peak"] == max(m["peak_rss"], m["tree_peak_rss"]) and m["peak_rss"] > m["baseline_rss"]
        predicted = convert_rss(config, model_shapes(config), recipes[key], gpu=False,
                                baseline=m["baseline_rss"]).peak
        assert c["rss"]["predicted"] == predicted and c["rss"]["measured"] == m["peak"]  # the wiring
        # Independent of diagnostics/conversion.py: the tensors outside the decoder, summed from the tiny model's own
        # safetensors header (bf16, as synth writes them), are what the model holds outside the layer loop.
        assert c["rss_terms"]["outside"] == OUTSIDE_DECODER_BYTES, key
        # The rest the model does not itemize, measured 84-178 MiB here (AMD EPYC): allocator and import slack.
        assert 0 < m["peak"] - predicted < 0.3 * GIB and c["rss"]["under_limit"]
    hidden, vocab = config.text_config.hidden_size, config.text_config.vocab_size
    for key, transient in (("int4", 5 * hidden * vocab), ("int8", 0)):  # int4: the INT4 lm_head, 5 B/weight
        g, pred = st[key]["generate"], st[key]["generate"]["predicted"]
        repacks = g["measured"]["result"]["kernel"] in script.REPACKING_KERNELS
        assert (pred["repack_file_pages"] > 0) == repacks, (key, g["measured"]["result"]["kernel"])
        assert pred["repack_transient"] == (transient if repacks else 0), (key, g["measured"]["result"]["kernel"])
        assert pred["predicted_peak_rss"] == g["measured"]["baseline_rss"] + pred["plan_peak_bytes"] + \
            pred["repack_file_pages"] + pred["repack_transient"]


@pytest.mark.slow
def test_repredict_rescores_the_recorded_measurements(tiny_run, tmp_path):
    """--repredict runs no stage: from the model's config (the checkpoint is gone) and each stage's recorded baseline
    and kernel it gives back the predictions the run made; a changed model changes them, the measurements stay."""
    import copy

    script, _, report, _, _ = tiny_run
    out = tmp_path / "full-size-cpu"
    old = copy.deepcopy(report)
    for key in ("int4", "int8", "large"):
        old["stages"][key]["generate"]["predicted"]["predicted_peak_rss"] = 1  # a stale prediction
    conversions = [old["stages"][k]["convert"] for k in ("int4", "int8", "nf4", "large")] + \
        [r["convert"] for r in old["stages"]["gptq"]["runs"].values()]
    for c in conversions:
        c["rss"]["predicted"], c["rss_terms"]["shard"] = 1, -1  # stale conversion-RSS predictions
    out.with_suffix(".json").write_text(json.dumps(old))
    assert script.main(["--tiny", "--out", str(out), "--repredict"]) == 0
    again = json.loads(out.with_suffix(".json").read_text())
    for key in ("int4", "int8", "large"):
        g, first = again["stages"][key]["generate"], report["stages"][key]["generate"]
        assert g["predicted"] == first["predicted"] and g["measured"] == first["measured"]
        assert g["rss"]["ratio"] == first["rss"]["ratio"]
    large, first = again["stages"]["large"]["generate"], report["stages"]["large"]["generate"]
    assert large["full_depth_extrapolated"] == first["full_depth_extrapolated"]
    st, first = again["stages"], report["stages"]
    pairs = [(st[k]["convert"], first[k]["convert"]) for k in ("int4", "int8", "nf4", "large")] + \
        [(st["gptq"]["runs"][n]["convert"], r["convert"]) for n, r in first["gptq"]["runs"].items()]
    for c, f in pairs:
        assert c["rss"] == f["rss"] and c["rss_terms"] == f["rss_terms"] and c["measured"] == f["measured"]


@pytest.mark.slow
def test_generation_is_finite_deterministic_and_timed(tiny_run):
    st = tiny_run[2]["stages"]
    for g in (st["int4"]["generate"], st["int8"]["generate"], st["large"]["generate"]):
        r = g["measured"]["result"]
        assert g["finite"] and g["deterministic"] and len(r["tokens"]) == 8 and g["tokens_per_second"] > 0
        assert r["prompt_tokens"] > 8  # image tokens + text
    assert st["int4"]["generate"]["measured"]["result"]["quantization"] == "gptq"


@pytest.mark.slow
def test_gptq_split_and_extrapolation(tiny_run):
    report = tiny_run[2]
    g = report["stages"]["gptq"]
    assert set(g["runs"]) == {"1", "2"}
    for n, r in g["runs"].items():
        sp, res = r["convert"]["split"], r["convert"]["measured"]["result"]
        assert len(sp["layers"]) == int(n) and res["calibration_samples"] == 2
        for row in sp["layers"]:
            assert row["hessian"] > 0 and row["solve"] > 0 and row["write"] > 0 and row["capture"] > 0
        once = sp["once"]
        parts = sum(once.values()) + sum(row["total"] for row in sp["layers"])
        assert parts == pytest.approx(res["wall_seconds"])  # the split accounts for the whole conversion
        assert once["lm_head_solve"] > 0 and once["other"] >= 0
    deepest = g["runs"]["2"]["convert"]
    scale = g["recipe_tokens"] / deepest["measured"]["result"]["calibration_tokens"]
    mean, once = deepest["split"]["per_layer_mean"], deepest["split"]["once"]
    per_layer = (mean["capture"] + mean["hessian"]) * scale + mean["solve"] + mean["read"] + mean["write"] + \
        mean["assembly"]
    fixed = (once["vision"] + once["lm_head_hessian"]) * scale + once["lm_head_solve"] + once["lm_head_write"] + \
        once["other"]
    assert g["full_layers"] == 4 and g["recipe_samples"] == 192  # the tiny set has 192 samples
    assert g["extrapolated_seconds"] == pytest.approx(fixed + 4 * per_layer)


@pytest.mark.slow
def test_a_rerun_keeps_done_stages_and_refuses_without_disk(tiny_run, monkeypatch, capsys):
    script, _, _, out, work = tiny_run
    before = out.with_suffix(".json").read_text()
    # Resume: every stage is ok in the JSON, so nothing runs again and the stages are kept as they were.
    assert script.main(["--tiny", "--out", str(out), "--work", str(work), "--quiet"]) == 0
    after = json.loads(out.with_suffix(".json").read_text())
    assert after["stages"] == json.loads(before)["stages"]

    class Disk:
        free = 10**6

    monkeypatch.setattr(script.shutil, "disk_usage", lambda path: Disk)
    assert script.main(["--tiny", "--out", str(out), "--work", str(work), "--only", "int8"]) == 2
    err = capsys.readouterr().err
    need = script.disk_needs(script.TINY)["int8"] + script.DISK_MARGIN
    assert f"need {need / 1e9:.1f} GB" in err and "0.0 GB free" in err
    assert out.with_suffix(".json").read_text() == json.dumps(after, indent=2, default=str) + "\n"


# Load + generate of 12B-width rtn-int4 checkpoints with an INT4 lm_head on this CPU (gptqmodel's TorchAtenLinear),
# as full_size_jobs.generate_job runs it: decoder layers -> (import baseline = VmHWM after the imports, peak VmHWM).
# 2 and 4 layers measured with RssAnon/RssFile/VmHWM sampled around every transform_cpu; None: the full-size run.
INT4_CPU_PEAKS = {2: (810344448, 6707519488), 4: (810266624, 7261540352), None: (810180608, 17894002688)}


@pytest.mark.slow
def test_the_repack_transient_is_five_bytes_per_weight_of_the_largest_int4_linear():
    """TorchAtenLinear.transform_cpu holds uint8 and int32 codes of one Linear at once (5 B/weight): with the
    INT4 lm_head that Linear is the lm_head [vocab, hidden], without it the MLP's [hidden, intermediate]; a kernel
    that does not repack (int8's TorchLinear) has none."""
    from dataclasses import replace

    script = load_script()
    recipes, text = script.recipes(script.Mode()), open_model("pixtral-12b").config.text_config
    transient = lambda recipe, kernel: script.repack_transient("pixtral-12b", recipe, kernel)
    assert transient(recipes["int4"], "TorchAtenLinear") == 5 * text.hidden_size * text.vocab_size
    no_head = replace(recipes["int4"], targets=replace(recipes["int4"].targets, lm_head=None))
    assert transient(no_head, "TorchAtenLinear") == 5 * text.hidden_size * text.intermediate_size
    assert transient(recipes["int8"], "TorchLinear") == 0


@pytest.mark.slow
@pytest.mark.parametrize("layers", list(INT4_CPU_PEAKS))
def test_the_int4_cpu_peak_is_predicted_within_tolerance(layers, tmp_path):
    """The measured peaks above, predicted from the config at their depth: within the 15 % tolerance with the
    repack transient, and well outside it without (the term the full-size run found missing)."""
    from pixtral_quant.synth import with_depth

    script = load_script()
    mode = script.Mode()
    with_depth(open_model(mode.model).config, layers).to_json_file(tmp_path / "config.json")
    baseline, measured = INT4_CPU_PEAKS[layers]
    pred = script.host_prediction(tmp_path, script.recipes(mode)["int4"], mode.workload, baseline,
                                  "TorchAtenLinear")
    assert abs(measured / pred["predicted_peak_rss"] - 1) <= script.RSS_TOLERANCE
    assert measured / (pred["predicted_peak_rss"] - pred["repack_transient"]) - 1 > script.RSS_TOLERANCE


# Pixtral Large at full width, 4 of 88 decoder layers, rtn-int4 (the full-size run's large stage), as above.
LARGE_4_LAYERS = (810283008, 11900637184)


@pytest.mark.slow
def test_the_large_prediction_holds_the_jobs_context_not_the_promises(tmp_path):
    """pixtral-large-int4 promises an 8k context; the job's workload leaves the context to its prompt (one
    256x256 image, 16 text tokens, 8 new). The prediction must size that context: within tolerance of the
    measured peak, where the promise's 8,192 tokens put it 19 % over (the first Large prediction's error)."""
    from dataclasses import replace

    from pixtral_quant.synth import with_depth

    script = load_script()
    mode = script.Mode()
    with_depth(open_model(mode.large).config, mode.large_layers).to_json_file(tmp_path / "config.json")
    baseline, measured = LARGE_4_LAYERS
    predict = lambda workload: script.host_prediction(tmp_path, script.recipes(mode)["large"], workload, baseline,
                                                      "TorchAtenLinear")["predicted_peak_rss"]
    assert abs(measured / predict(mode.workload) - 1) <= script.RSS_TOLERANCE
    assert abs(measured / predict(replace(mode.workload, context=8192)) - 1) > script.RSS_TOLERANCE


# gptq-int4 (pixtral-12b-int4 targets: INT4 lm_head) of 12B-width models on this CPU, 8 calibration samples
# (7817 tokens), the full-size run's gptq stage: decoder layers -> (import baseline, peak RSS of the job).
GPTQ_CPU_PEAKS = {2: (804106240, 7696396288), 4: (804384768, 7700156416)}


@pytest.mark.slow
@pytest.mark.parametrize("layers", list(GPTQ_CPU_PEAKS))
def test_the_gptq_cpu_peak_is_the_largest_step_not_their_sum(layers):
    """Before the first layer GPTQ emits the non-decoder tensors, loads the shell, captures the samples: one
    after the other. The model's peak (the shell load) is within tolerance; the sum of the three, the earlier
    model, was 1.5x the measurement; and the lm_head's GPTQ (in row blocks) is not the peak."""
    script = load_script()
    mode = script.Mode()
    baseline, measured = GPTQ_CPU_PEAKS[layers]
    terms = script.rss_terms(mode.model, script.recipes(mode)["gptq"], baseline, 7817, layers)
    assert abs(measured / terms.peak - 1) <= script.RSS_TOLERANCE
    summed = terms.baseline + terms.library + terms.outside + terms.shell + terms.activations
    assert measured / summed - 1 < -script.RSS_TOLERANCE
    assert 0 < terms.head_phase < terms.outside_phase


def test_the_tree_sampler_counts_descendants(tmp_path):
    """A child that starts a grandchild holding 300 MB: the tree's peak includes it, the child alone does not."""
    grandchild = "import time; b = bytearray(300 * 2**20); time.sleep(1.5)"
    child = textwrap.dedent(f"""
        import subprocess, sys
        subprocess.run([sys.executable, "-c", {grandchild!r}], check=True)
    """)
    done = run_sampled([sys.executable, "-c", child], timeout=60, interval=0.05)
    assert done.returncode == 0 and done.tree_peak_processes == 2
    assert 300 * 2**20 <= done.tree_peak_rss < 300 * 2**20 + 200 * 2**20
