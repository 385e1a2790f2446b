"""Recipes → config dataclasses: every shipped recipe parses, unknown keys are errors, overrides apply."""

from __future__ import annotations

import pytest
import yaml

from pixtral_quant.config import (SCHEME_CONFIGS, CalibConfig, GptqInt4, Recipe, recipe_from_dict, with_overrides)
from pixtral_quant.errors import UsageError
from pixtral_quant.recipes import load_recipe, shipped_recipes
from pixtral_quant.schemes.registry import handler_for, scheme_names


def test_every_shipped_recipe_parses_and_carries_thresholds():
    """Each recipe's `thresholds:` block, read with plain PyYAML, is exactly what its Recipe holds (every key
    given, nothing else set)."""
    from dataclasses import asdict, fields

    from pixtral_quant.config import Thresholds
    from pixtral_quant.recipes import RECIPES_DIR

    names = shipped_recipes()
    assert {"pixtral-12b-int8", "pixtral-12b-int4", "pixtral-large-int4", "tiny-gptq-int4"} <= set(names)
    for name in names:
        recipe = load_recipe(name)
        assert recipe.name == name
        raw = yaml.safe_load((RECIPES_DIR / f"{name}.yaml").read_text(encoding="utf-8"))["thresholds"]
        assert raw and "min_recovery" in raw, name  # every shipped recipe gates task accuracy
        expected = {f.name: None for f in fields(Thresholds)} | {k: float(v) for k, v in raw.items()}
        assert asdict(recipe.thresholds) == expected, name
    assert load_recipe("pixtral-12b-int8").thresholds.max_size_gb == 14.8  # the file; the 14 GB GPU promise is plan's
    assert load_recipe("pixtral-12b-int4").thresholds.max_size_gb == 8.3


def test_registry_has_one_handler_per_scheme():
    assert scheme_names() == sorted(SCHEME_CONFIGS)
    for name, cls in SCHEME_CONFIGS.items():
        assert handler_for(cls()).name == name


def test_empty_recipe_is_the_dataclass_defaults():
    assert recipe_from_dict({}) == Recipe()
    assert recipe_from_dict({"scheme": "gptq-int4"}).scheme == GptqInt4()


@pytest.mark.parametrize("raw,where", [
    ({"schema": "gptq-int4"}, "recipe"),
    ({"calibration": {"num_sample": 4}}, "recipe.calibration"),
    ({"scheme": {"name": "gptq-int4", "groupsize": 64}}, "recipe.scheme"),
    ({"thresholds": {"max_kl": 1}}, "recipe.thresholds"),
])
def test_unknown_keys_are_errors(raw, where):
    with pytest.raises(UsageError) as err:
        recipe_from_dict(raw)
    assert err.value.where == where and "unknown key" in err.value.message


def test_wrong_types_and_unknown_scheme_are_errors():
    with pytest.raises(UsageError, match="not an int"):
        recipe_from_dict({"calibration": {"seed": "zero"}})
    with pytest.raises(UsageError, match="not a bool"):
        recipe_from_dict({"scheme": {"name": "gptq-int4", "desc_act": 1}})
    with pytest.raises(UsageError, match="unknown scheme"):
        recipe_from_dict({"scheme": "gptq-int3"})


def test_overrides_win_and_roundtrip():
    base = load_recipe("tiny-gptq-int4")
    new = with_overrides(base, {"calibration.num_samples": 7, "scheme.group_size": 64})
    assert new.calibration.num_samples == 7 and new.scheme.group_size == 64
    assert new.calibration.set == base.calibration.set == "tiny"
    assert recipe_from_dict(new.to_dict()) == new
    switched = with_overrides(base, {"scheme": "rtn-int8"})
    assert switched.scheme.name == "rtn-int8" and switched.scheme.group_size == 128
    with pytest.raises(UsageError):
        with_overrides(base, {"calibration.nope": 1})
    assert CalibConfig().set == "calib"  # the built-in set is the default


def test_bad_yaml_names_the_file(tmp_path):
    from pixtral_quant.errors import InputError

    bad = tmp_path / "r.yaml"
    bad.write_text("scheme: [unclosed\n")
    with pytest.raises(InputError) as err:
        load_recipe(bad)
    assert str(bad) in err.value.render()
