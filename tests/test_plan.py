"""The plan: every Linear with its scheme or the reason it is kept; impossible combinations refused early."""

from __future__ import annotations

import pytest

from pixtral_quant.config import with_overrides
from pixtral_quant.errors import UsageError
from pixtral_quant.fixtures.train import tiny_config
from pixtral_quant.plan import make_plan
from pixtral_quant.recipes import load_recipe


def test_default_plan_quantizes_every_decoder_linear_only():
    plan = make_plan(tiny_config(), load_recipe("tiny-gptq-int4"))
    by_component = {}
    for e in plan.entries:
        by_component.setdefault(e.component, set()).add(e.scheme)
    assert by_component == {"decoder": {"gptq-int4"}, "vision_tower": {None}, "projector": {None}, "lm_head": {None}}
    assert len(plan.quantized()) == 28 and all(e.reason for e in plan.entries)
    assert plan.skip_fragments() == ["lm_head", "language_model.lm_head", "model.vision_tower", "vision_tower",
                                     "model.multi_modal_projector", "multi_modal_projector"]


def test_group_size_must_divide_every_planned_linear():
    with pytest.raises(UsageError, match="does not divide in_features 256"):
        make_plan(tiny_config(), with_overrides(load_recipe("tiny-rtn-int4"), {"scheme.group_size": 96}))
    per_channel = make_plan(tiny_config(), with_overrides(load_recipe("tiny-rtn-int4"), {"scheme.group_size": -1}))
    assert len(per_channel.quantized()) == 28


@pytest.mark.parametrize("recipe,target", [("tiny-gptq-int4", "targets.lm_head"),
                                           ("tiny-rtn-int8", "targets.vision_tower"),
                                           ("tiny-bnb-nf4", "targets.projector")])
def test_optional_targets_the_format_cannot_carry_are_refused(recipe, target):
    with pytest.raises(UsageError) as err:
        make_plan(tiny_config(), with_overrides(load_recipe(recipe), {target: "int8"}))
    assert err.value.where == target


def test_a_conversion_that_differs_from_its_plan_fails():
    plan = make_plan(tiny_config(), load_recipe("tiny-rtn-int4"))
    plan.check_done(plan.names())
    with pytest.raises(RuntimeError, match="differs from its plan"):
        plan.check_done(plan.names() - {"model.language_model.layers.0.mlp.up_proj"})
    with pytest.raises(RuntimeError, match="differs from its plan"):
        plan.check_done(plan.names() | {"lm_head"})


def test_bnb_int8_lm_head_plan_warns_about_vllm():
    from pixtral_quant.loading import open_checkpoint

    recipe = with_overrides(load_recipe("tiny-bnb-int8"), {"targets.lm_head": "int8"})
    entry = next(e for e in make_plan(open_checkpoint("tiny").config, recipe).entries if e.name == "lm_head")
    assert entry.scheme == "bnb-int8" and "vLLM cannot" in entry.reason
