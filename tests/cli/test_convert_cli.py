"""`pixtral-quant convert` CLI: bad input → one clear message, exit 2, OUT untouched; defaults; summary."""

from __future__ import annotations

import importlib

from click.testing import CliRunner

from pixtral_quant.cli import main


def run(*args):
    return CliRunner().invoke(main, ["convert", *args])


def untouched(out):
    return not out.exists() and not out.with_name(out.name + ".partial").exists()


def test_non_empty_output_is_refused_without_overwrite(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    res = run("--model", str(tiny_model_dir), "--scheme", "rtn-int4", "--out", str(out))
    assert res.exit_code == 2 and "not empty" in res.output and "--overwrite" in res.output
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_unknown_recipe_key(tiny_model_dir, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("scheme: rtn-int4\ncalibration: {num_samples: 4, sead: 1}\n")
    out = tmp_path / "out"
    res = run("--model", str(tiny_model_dir), "--recipe", str(recipe), "--out", str(out))
    assert res.exit_code == 2 and "unknown key(s) ['sead']" in res.output and "calibration" in res.output
    assert untouched(out)


def test_group_size_that_does_not_divide(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    res = run("--model", str(tiny_model_dir), "--scheme", "rtn-int4", "--group-size", "96", "--out", str(out))
    assert res.exit_code == 2 and "group size 96 does not divide in_features 256" in res.output
    assert untouched(out)


def test_missing_library_names_the_extra(tiny_model_dir, tmp_path, monkeypatch):
    real = importlib.import_module

    def fake(name, *a, **k):
        if name.startswith("bitsandbytes"):
            raise ImportError(f"No module named '{name}'")
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", fake)
    out = tmp_path / "out"
    res = run("--model", str(tiny_model_dir), "--scheme", "bnb-nf4", "--out", str(out))
    assert res.exit_code == 2 and "pip install 'pixtral-quant[bnb]'" in res.output
    assert untouched(out)


def test_calibration_with_zero_usable_samples(tiny_model_dir, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("scheme: gptq-int4\ncalibration: {set: tiny, num_samples: 4, max_tokens: 3}\n")
    out = tmp_path / "out"
    res = run("--model", str(tiny_model_dir), "--recipe", str(recipe), "--out", str(out))
    assert res.exit_code == 2 and "no sample is left" in res.output
    assert untouched(out)


def test_recipe_and_scheme_together_is_a_usage_error(tmp_path):
    res = run("--recipe", "tiny-gptq-int4", "--scheme", "rtn-int4", "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and "both given" in res.output


def test_no_arguments_converts_the_tiny_model_with_the_default_recipe(monkeypatch, tmp_path):
    seen = {}

    def fake_convert(model, recipe, out, **kwargs):
        seen.update(model=model, recipe=recipe, out=out)
        raise SystemExit(0)

    monkeypatch.setattr("pixtral_quant.convert.convert", fake_convert)
    monkeypatch.chdir(tmp_path)
    res = run()
    assert res.exit_code == 0
    assert seen["model"] == "tiny" and seen["out"] == "out" and seen["recipe"].name == "tiny-gptq-int4"


def test_summary_is_printed(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    res = run("--model", str(tiny_model_dir), "--scheme", "rtn-int8", "--out", str(out))
    assert res.exit_code == 0, res.output
    assert "convert: done" in res.output and "28 of 45" in res.output and "MB" in res.output
