"""Scheme facts (config._SchemeFacts) hang together: every fact a consumer reads exists on every scheme config,
and the values agree with each other and with the storage formats they name (memory/storage.py)."""

from __future__ import annotations

import dataclasses

import pytest

from pixtral_quant.config import SCHEME_CONFIGS, Gguf, _SchemeFacts
from pixtral_quant.memory.storage import FORMAT_TENSORS

CONFIGS = [*SCHEME_CONFIGS.values(), Gguf]
FACTS = [name for name in vars(_SchemeFacts) if not name.startswith("_")]


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_facts_are_classvars_not_fields(cls):
    """A fact never becomes a recipe key (to_dict / from_dict see fields only)."""
    assert issubclass(cls, _SchemeFacts)
    assert not set(FACTS) & {f.name for f in dataclasses.fields(cls)}


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_facts_agree(cls):
    if cls.storage is not None:
        assert cls.storage in FORMAT_TENSORS and cls.bits in (4, 8) and cls.precision == f"int{cls.bits}"
    for component, precision in cls.optional_targets.items():
        assert component in ("lm_head", "vision_tower", "projector")
        assert precision in cls.target_formats or precision == "auto" and cls.allocates
    assert (cls.transient_bytes_per_param is None) == (cls.storage is None)
    if cls.four_bit is not None:
        sibling = SCHEME_CONFIGS[cls.four_bit]
        assert sibling.precision == "int4" and sibling.calibrated == cls.calibrated
        assert sibling.target_formats == cls.target_formats
    if cls.data_free is not None:  # the same bits, layout and targets, no calibration
        twin = SCHEME_CONFIGS[cls.data_free]
        assert cls.calibrated and not twin.calibrated and twin.data_free is None
        assert (twin.storage, twin.bits, twin.precision, twin.optional_targets) == \
            (cls.storage, cls.bits, cls.precision, cls.optional_targets)


def test_the_four_bit_change_and_the_allocating_scheme():
    """The values memory/changes.py and memory/inventory.py dispatch on (formerly changes.FOUR_BIT and a
    hasattr(scheme, 'allocation'))."""
    assert {name: c.four_bit for name, c in SCHEME_CONFIGS.items() if c.four_bit} == {
        "gptq-int8": "gptq-int4", "rtn-int8": "rtn-int4", "bnb-int8": "bnb-nf4"}
    assert [name for name, c in SCHEME_CONFIGS.items() if c.allocates] == ["gptq-mixed"]


def test_the_data_free_twin_of_a_shipped_recipe():
    """recipes.data_free_recipe (scripts/gpu_check.py, scripts/full_size_cpu.py): GPTQ → RTN, targets kept."""
    from pixtral_quant.recipes import data_free_recipe, load_recipe

    gptq, rtn = load_recipe("pixtral-12b-int4"), data_free_recipe("pixtral-12b-int4")
    assert (gptq.scheme.name, rtn.scheme.name) == ("gptq-int4", "rtn-int4") and rtn.targets == gptq.targets
    assert data_free_recipe("tiny-rtn-int8") == load_recipe("tiny-rtn-int8")

