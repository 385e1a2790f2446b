"""The Python API (pixtral_quant/api.py): the README's example runs as written, and the API and the CLI build the
same recipe from the same options."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pixtral_quant import api
from pixtral_quant.errors import UsageError

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    section = README.read_text(encoding="utf-8").split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_example(), "README.md", "exec"), {})
    # our three prints, among the libraries' own stdout (GPTQModel's banner: the API, unlike the CLI, leaves the
    # libraries' output alone, as llm-compressor's oneshot does)
    printed = [line for line in capsys.readouterr().out.split("\n")
               if line.startswith(("out-rtn ", "True", "False"))]
    assert printed[0].startswith("out-rtn ") and printed[0].endswith(" rtn-int8"), printed
    assert int(printed[0].split()[1]) > 0
    assert printed[1].startswith("True [] "), printed  # rtn-int8 passes its built-in thresholds
    assert printed[2] == "True"
    assert (tmp_path / "out-rtn" / "model.safetensors").is_file()


def test_results_are_objects_with_the_answer(tmp_path):
    result = api.plan("pixtral-12b-int8", gpu_memory="12GiB")
    assert result.fits is False and result.runtime == "transformers" and result.report["card_bytes"] == 12 * 2**30
    gguf = api.plan("pixtral-12b-gguf-q4_k_m")
    assert gguf.runtime == "llama.cpp" and gguf.fits is True


def test_the_api_builds_the_recipe_the_cli_would():
    recipe = api.build_recipe("tiny", scheme="gptq-mixed", max_size="37.5MB", num_samples=4, seed=3)
    assert recipe.scheme.max_size == "37.5MB" and recipe.calibration.num_samples == 4 and recipe.calibration.seed == 3
    assert recipe.calibration.set == "tiny"  # the tiny model's own set (recipes.scheme_recipe)
    with pytest.raises(UsageError, match="apply only to gptq-mixed"):
        api.build_recipe("tiny", scheme="gptq-int4", max_size="5GB")
    with pytest.raises(UsageError, match="unknown option"):
        api.build_recipe("tiny", scheme="gptq-int4", num_sample=4)
    with pytest.raises(UsageError, match="both given"):
        api.build_recipe("tiny", recipe="tiny-gptq-int4", scheme="rtn-int4")
