"""The gptq-* handler: GPTQModel's solver driven by our inputs, its result in GPTQ v1 tensors."""

from __future__ import annotations

import pytest
import torch

from pixtral_quant.config import GptqInt4, GptqInt8
from pixtral_quant.schemes import intquant as iq

pytest.importorskip("gptqmodel", reason="GPTQModel is in the 'gptq' extra (installed by dev)")


def layer_and_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    linear = torch.nn.Linear(256, 64, bias=True)
    linear.weight.data = torch.randn(64, 256, generator=g) * 0.02
    linear.bias.data = torch.randn(64, generator=g)
    mix = torch.randn(256, 256, generator=g) / 16  # correlated inputs: where GPTQ beats rounding
    xs = [torch.randn(1, 40, 256, generator=g) @ mix for _ in range(6)]
    return linear, xs


def solve(config, seed=0):
    from pixtral_quant.schemes.gptq import GptqSolver

    linear, xs = layer_and_inputs(seed)
    solver = GptqSolver(linear, config)
    for x in xs:
        solver.add_batch(x)
    return linear, xs, solver.finish()


def output_error(xs, w, q):
    x = torch.cat([x.reshape(-1, 256) for x in xs])
    return float((x @ (w - q).T).pow(2).mean())


@pytest.mark.parametrize("config", [GptqInt4(), GptqInt4(desc_act=True), GptqInt8(group_size=-1)],
                         ids=["int4-g128", "int4-act-order", "int8-per-channel"])
def test_gptq_beats_round_to_nearest_on_the_layer_outputs(config):
    linear, xs, (tensors, loss, dq) = solve(config)
    w = linear.weight.detach()
    rtn = iq.rtn(w, config.bits, config.group_size, config.sym).dequantize()
    assert output_error(xs, w, dq) < 0.8 * output_error(xs, w, rtn)
    assert loss > 0
    # The stored tensors are the solver's weight (up to float16 scales) and keep the bias.
    back = iq.from_gptq_v1(tensors, config.bits)
    assert torch.allclose(back.dequantize(), dq, rtol=2e-3, atol=1e-6)
    assert torch.equal(tensors["bias"], linear.bias.detach().to(torch.float16))
    if config.desc_act:
        assert not torch.equal(tensors["g_idx"], torch.arange(256, dtype=torch.int32) // 128)
    else:
        assert torch.equal(tensors["g_idx"], torch.arange(256, dtype=torch.int32) // (256 if config.group_size == -1 else 128))


def test_gptq_is_deterministic():
    _, _, (a, loss_a, _) = solve(GptqInt4())
    _, _, (b, loss_b, _) = solve(GptqInt4())
    assert loss_a == loss_b
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("config", [GptqInt4(), GptqInt4(desc_act=True), GptqInt8()], ids=["int4", "act-order", "int8"])
def test_restore_gives_the_solvers_weight_back_bit_for_bit(config):
    """What a resumed conversion replays: the v1 tensors + the float32 scale/zero the solver kept give exactly
    its dequantized weight; the checkpoint's float16 scales alone would not (hence the journal keeps them)."""
    from pixtral_quant.schemes.gptq import GptqHandler, GptqSolver

    linear, xs = layer_and_inputs()
    solver = GptqSolver(linear, config)
    for x in xs:
        solver.add_batch(x)
    tensors, _, dq = solver.finish()
    assert torch.equal(GptqHandler(config).restore_weight(tensors, solver.restore), dq)
    assert not torch.equal(iq.from_gptq_v1(tensors, config.bits).dequantize(), dq)


def test_the_solver_gives_the_same_bits_with_1_and_2_threads():
    """The Hessian (Xᵀ·X over tokens) and the solve run on one CPU thread: same result whatever the count."""
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2):
            torch.set_num_threads(n)
            results.append(solve(GptqInt4(), seed=3)[2])
    finally:
        torch.set_num_threads(threads)
    (a, _, dq_a), (b, _, dq_b) = results
    assert torch.equal(dq_a, dq_b) and all(torch.equal(a[k], b[k]) for k in a)
