"""Every figure README.md's "Memory budgets" section (and the 12B recipes' comments) states, parsed out of the
text and recomputed through the functions `pixtral-quant plan --recipe R` uses (pixtral_quant.memory.memory_report
and its parts), to the printed precision. A figure that drifts from the code fails here, naming itself."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from pixtral_quant.config import with_overrides
from pixtral_quant.memory import GIB, Workload, kv_bytes_per_token, memory_report
from pixtral_quant.memory.report import open_model
from pixtral_quant.memory.settings import reserve_for, target_for
from pixtral_quant.recipes import load_recipe

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
BUDGETS = README[README.index("## Memory budgets"):README.index("## Gate a checkpoint in CI")]
# | `recipe` (note) | 14 GiB → 13.5[, 8k context] | placement | 13.01 GiB[ (7.89 with a bf16 lm_head)] | yes |
ROW = re.compile(r"^\| `(?P<recipe>[\w-]+)`(?P<note>[^|]*)\| (?P<card>\d+) GiB → (?P<limit>[\d.]+)"
                 r"(?:, (?P<ctx>\d+)k context)? "
                 r"\| (?P<placement>[^|]+?) \| (?P<peak>[\d.]+) GiB(?: \((?P<bf16>[\d.]+) with a bf16 lm_head\))? "
                 r"\| (?P<fits>yes|no) \|$", re.M)
PLACEMENTS = {  # the README's words → the placement plan applies (settings.SHIPPED_TARGETS)
    "embeddings on the CPU, vision tower offloaded between images": {"embeddings": "cpu", "vision": "offload",
                                                                    "lm_head": "gpu"},
    "all on the GPU": {"embeddings": "gpu", "vision": "gpu", "lm_head": "gpu"},
}


def rows() -> list[dict]:
    found = [m.groupdict() for m in ROW.finditer(BUDGETS)]
    assert [r["recipe"] for r in found] == ["pixtral-12b-int8", "pixtral-12b-int4", "pixtral-large-int4"], found
    return found


def gib(n: int, places: int = 2) -> str:
    return f"{n / GIB:.{places}f}"


def decimals(text: str) -> int:
    return len(text.split(".")[1]) if "." in text else 0


@pytest.fixture(scope="module")
def reports() -> dict[str, dict]:
    """memory_report of each shipped recipe against its own promise (what `plan --recipe R` prints)."""
    return {name: memory_report(None, name) for name in ("pixtral-12b-int8", "pixtral-12b-int4", "pixtral-large-int4")}


@pytest.mark.parametrize("index", range(3))
def test_budget_table_row(index, reports):
    row = rows()[index]
    rep = reports[row["recipe"]]
    assert rep["card_bytes"] == int(row["card"]) * GIB, row
    assert f"{rep['limit_bytes'] / GIB:g}" == row["limit"], row
    assert gib(rep["peak_bytes"]) == row["peak"], (row, rep["peak_bytes"] / GIB)
    assert ("yes" if rep["fits"] else "no") == row["fits"], row
    if row["ctx"]:
        assert rep["tokens"]["context"] == int(row["ctx"]) * 1024
    words = rows()[index - 1]["placement"] if row["placement"] == "same" else row["placement"]
    placed = {k: rep["placement"][k] for k in ("embeddings", "vision", "lm_head")}
    assert placed == PLACEMENTS[words], (row["recipe"], placed)


def test_int4_row_with_a_bf16_lm_head():
    row = rows()[1]
    assert row["note"].strip() == "(lm_head INT4)"
    recipe = load_recipe(row["recipe"])
    assert recipe.targets.lm_head == "int4"
    bf16_head = memory_report(None, bf16_lm_head(recipe))
    assert bf16_head["weights"]["lm_head"]["bytes"] == 2 * _vocab_by_hidden("pixtral-12b")  # bf16 really
    assert gib(bf16_head["peak_bytes"]) == row["bf16"]
    assert bf16_head["fits"] is False  # why the recipe quantizes its lm_head: 7.89 > 7.5


def bf16_lm_head(recipe):
    """The recipe with its lm_head kept bf16 (with_overrides reads None as "no override")."""
    return replace(recipe, targets=replace(recipe.targets, lm_head=None))


def _vocab_by_hidden(model: str) -> int:
    text = open_model(model).config.text_config
    return text.vocab_size * text.hidden_size


def test_workload_and_reserve_sentence(reports):
    m = re.search(r"one (\d+)×(\d+) image = (\d+) tokens, \+ (\d+) text tokens,\s+\+ (\d+) generated", BUDGETS)
    assert m, "the workload sentence moved"
    w, h, image_tokens, text, new = map(int, m.groups())
    default = Workload()
    assert (default.image_width, default.image_height, default.text_tokens, default.new_tokens) == (w, h, text, new)
    for name, rep in reports.items():
        assert rep["tokens"]["image_tokens"] == image_tokens, name
        context = target_for(name).workload.context  # Large's promise: an 8k context, the text fills it
        assert rep["tokens"]["context"] == (context or image_tokens + text + new), name
        assert rep["tokens"]["prompt"] == (context - new if context else image_tokens + text), name
    m = re.search(r"the card minus ([\d.]+) GiB, or (\d+) GiB from (\d+) GiB cards", BUDGETS)
    assert m, "the reserve sentence moved"
    small, large, threshold = float(m.group(1)), int(m.group(2)), int(m.group(3))
    assert reserve_for(int(threshold * GIB) - 1) == small * GIB
    assert reserve_for(threshold * GIB) == large * GIB


def _why() -> str:
    start = BUDGETS.index("Why:")
    return " ".join(BUDGETS[start:].split())


def test_why_figures(reports):
    why = _why()
    m = re.search(r"decoder Linears alone are ([\d.]+) GiB at INT4 g128 \(([\d.]+) at INT8\); embeddings and "
                  r"lm_head are ([\d.]+) GiB each in bf16 for 12B, the vision tower ([\d.]+) GiB; the KV cache is "
                  r"([\d.]+) GiB per 1024 tokens \(12B\) and ([\d.]+) \(Large\)", why)
    assert m, f"the 'Why' sentence moved: {why[:200]}"
    int4, int8, embed, vision, kv12, kv_large = m.groups()
    w4, w8 = reports["pixtral-12b-int4"]["weights"], reports["pixtral-12b-int8"]["weights"]
    assert gib(w4["decoder_linears"]["bytes"]) == int4
    assert gib(w8["decoder_linears"]["bytes"]) == int8
    assert reports["pixtral-12b-int8"]["targets"]["lm_head"] is None  # its lm_head is bf16
    assert gib(w8["embeddings"]["bytes"]) == gib(w8["lm_head"]["bytes"]) == embed
    assert w8["embeddings"]["bytes"] == 2 * _vocab_by_hidden("pixtral-12b")
    assert gib(w8["vision_tower"]["bytes"]) == gib(w4["vision_tower"]["bytes"]) == vision
    for model, figure, rep in (("pixtral-12b", kv12, reports["pixtral-12b-int8"]),
                               ("pixtral-large", kv_large, reports["pixtral-large-int4"])):
        per_1k = kv_bytes_per_token(open_model(model).config.text_config) * 1024
        assert rep["kv_cache"]["bytes_per_1k_tokens"] == per_1k
        assert gib(per_1k, decimals(figure)) == figure, model


# --- the 12B recipes' comments state plan's figures too -------------------------------------------------------

def _comment(name: str) -> str:
    text = (ROOT / "recipes" / f"{name}.yaml").read_text(encoding="utf-8")
    return " ".join(ln.lstrip("# ") for ln in text.splitlines() if ln.startswith("#"))


def test_int4_recipe_comment(reports):
    rep, c = reports["pixtral-12b-int4"], _comment("pixtral-12b-int4")
    m = re.search(r"decoder Linears at 4 bit \+ group-128 scales are ([\d.]+) GiB, the bf16 lm_head ([\d.]+) GiB, "
                  r"the vision tower ([\d.]+) GiB: .* prefill peak is ([\d.]+) GiB > ([\d.]+) .* INT4 lm_head "
                  r"\(([\d.]+) GiB.* brings it to ([\d.]+) GiB\. The embeddings \(([\d.]+) GiB\).* Checkpoint on disk "
                  r"([\d.]+) GB \(plan\).* checks the file \(([\d.]+)\)", c)
    assert m, c
    dec, head16, vision, peak16, limit, head4, peak4, embed, size_gb, max_gb = m.groups()
    w = rep["weights"]
    assert (gib(w["decoder_linears"]["bytes"]), gib(w["vision_tower"]["bytes"]), gib(w["embeddings"]["bytes"])) \
        == (dec, vision, embed)
    assert gib(2 * _vocab_by_hidden("pixtral-12b")) == head16 and gib(w["lm_head"]["bytes"]) == head4
    bf16_head = memory_report(None, bf16_lm_head(load_recipe("pixtral-12b-int4")))
    assert gib(bf16_head["peak_bytes"]) == peak16 and f"{rep['limit_bytes'] / GIB:g}" == limit
    assert gib(rep["peak_bytes"]) == peak4
    assert f"{rep['checkpoint']['total_bytes'] / 1e9:.2f}" == size_gb
    assert float(max_gb) == rep["checkpoint"]["max_size_gb"] and rep["checkpoint"]["size_ok"] is True


def test_int8_recipe_comment(reports):
    rep, c = reports["pixtral-12b-int8"], _comment("pixtral-12b-int8")
    m = re.search(r"([\d.]+) GiB peak ≤ ([\d.]+) .* The file is ([\d.]+) GB \(plan\): decoder Linears at 8 bit \+ "
                  r"g128 scales ([\d.]+) GB, bf16 embeddings \+ lm_head ([\d.]+) GB, vision tower ([\d.]+) GB", c)
    assert m, c
    peak, limit, size_gb, dec, embed_head, vision = m.groups()
    w, ckpt = rep["weights"], rep["checkpoint"]["tensor_bytes"]
    assert gib(rep["peak_bytes"]) == peak and f"{rep['limit_bytes'] / GIB:g}" == limit
    assert f"{rep['checkpoint']['total_bytes'] / 1e9:.2f}" == size_gb
    assert f"{ckpt['decoder_linears'] / 1e9:.{decimals(dec)}f}" == dec
    assert f"{(ckpt['embeddings'] + ckpt['lm_head']) / 1e9:.{decimals(embed_head)}f}" == embed_head
    assert f"{ckpt['vision_tower'] / 1e9:.{decimals(vision)}f}" == vision
    assert w["lm_head"]["bytes"] == w["embeddings"]["bytes"]  # "the lm_head stays bf16"
    m = re.search(r"targets\.lm_head: int8 would save ([\d.]+) GB", c)
    int8_head = memory_report(None, with_overrides(load_recipe("pixtral-12b-int8"), {"targets.lm_head": "int8"}))
    saved = rep["checkpoint"]["total_bytes"] - int8_head["checkpoint"]["total_bytes"]
    assert f"{saved / 1e9:.{decimals(m.group(1))}f}" == m.group(1)


@pytest.mark.parametrize("name", ["pixtral-12b-int8", "pixtral-12b-int4", "pixtral-large-int4"])
def test_max_size_gb_admits_the_planned_checkpoint(name, reports):
    """Each shipped recipe's max_size_gb (what convert and validate check) is above its own planned file, by
    less than 5 % (a looser bar would not notice e.g. the 0.93 GiB of a lm_head silently left in bf16)."""
    ckpt = reports[name]["checkpoint"]
    assert ckpt["size_ok"] is True
    assert ckpt["total_bytes"] <= ckpt["max_size_gb"] * 1e9 < 1.05 * ckpt["total_bytes"], (name, ckpt)


# --- the rest of README.md's figures that the code knows ------------------------------------------------------

def test_tiny_model_figures(tiny_model_dir):
    from safetensors import safe_open

    m = re.search(r"is a ([\d.]+) M-parameter Pixtral", README)
    with safe_open(str(tiny_model_dir / "model.safetensors"), "pt") as f:
        params = sum(_numel(f.get_slice(k).get_shape()) for k in f.keys())
    assert f"{params / 1e6:.{decimals(m.group(1))}f}" == m.group(1)
    vocab = int(re.search(r"tokenizer \(mistral-common's v7m1, vocabulary (\d+)\)", README).group(1))
    assert open_model(tiny_model_dir).config.text_config.vocab_size == vocab


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def test_builtin_set_sizes():
    from pixtral_quant.calibration.dataset import list_samples

    m = re.search(r"built-in sets: (\d+) calibration and (\d+) held-out samples", README)
    assert (len(list_samples("calib")[1]), len(list_samples("eval")[1])) == (int(m.group(1)), int(m.group(2)))


def test_gpu_check_and_rss_figures():
    from pixtral_quant.diagnostics import rss

    layers = re.search(r"Pixtral Large at (\d+) of (\d+) layers", README)
    assert open_model("pixtral-large").config.text_config.num_hidden_layers == int(layers.group(2))
    assert f"{rss.FLAT:.0%}".replace("%", " %") in re.search(r"\(flat within (\d+ %)\)", README).group(0)
