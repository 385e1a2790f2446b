"""GPTQ conversion time, split and extrapolated (scripts/full_size_cpu.py's gptq stage). Pure: the convert job's
reporter bars and phase clocks (scripts/full_size_jobs.py) in, seconds out.

Per decoder layer: capture (the forward passes that feed its Linears, minus the Hessian updates inside them),
hessian (GptqSolver.add_batch), solve (solver set-up + GptqSolver.finish), read (capture.load_layer), write
(the journal save) and its share of the final shard assembly. Once per model: the vision tower + projector pass,
the lm_head's Hessian + solve + write, and the rest (open, plan, calibration set, config and manifest).
"""

from __future__ import annotations

PER_LAYER = ("capture", "hessian", "solve", "read", "write", "assembly")
SCALES_WITH_TOKENS = ("capture", "hessian")  # the solve works on [in, in] Hessians: independent of the tokens
VISION_BAR, HEAD_BAR = "vision tower + projector", "lm_head"


def _bar(bars: list, name: str) -> float:
    return sum(s for d, s in bars if d == name)


def split(result: dict, layers: int) -> dict:
    """{'layers': [per layer {phase: s, 'total': s}], 'per_layer_mean': {...}, 'once': {...}} from a convert
    job's result (bars: [(description, seconds)], phases: {phase: {key: seconds}}, wall_seconds)."""
    bars, ph = result["bars"], result["phases"]
    get = lambda phase, key: ph.get(phase, {}).get(key, 0.0)  # noqa: E731
    assembly = get("assembly", "shards")
    rows = []
    for i in range(layers):
        bar_name, unit = f"layer {i + 1}/{layers}", f"layer-{i:05d}"
        hessian, solve = get("hessian", bar_name), get("solve", bar_name)
        row = {"capture": _bar(bars, bar_name) - hessian - solve, "hessian": hessian, "solve": solve,
               "read": get("read", unit), "write": get("write", unit), "assembly": assembly / layers}
        rows.append({**row, "total": sum(row.values())})
    mean = {k: sum(r[k] for r in rows) / layers for k in (*PER_LAYER, "total")}
    head_hessian = get("hessian", HEAD_BAR)
    once = {"vision": _bar(bars, VISION_BAR), "lm_head_hessian": head_hessian,
            "lm_head_solve": _bar(bars, HEAD_BAR) - head_hessian, "lm_head_write": get("write", "head")}
    once["other"] = result["wall_seconds"] - sum(once.values()) - sum(r["total"] for r in rows)
    return {"layers": rows, "per_layer_mean": mean, "once": once}


def extrapolate(parts: dict, full_layers: int, token_scale: float) -> dict:
    """Seconds of the conversion at `full_layers` layers with `token_scale` × the calibration tokens measured:
    the token-bound phases scale linearly (attention is quadratic in a sample's length, so for those it is a lower
    bound), the rest is kept."""
    mean, once = parts["per_layer_mean"], parts["once"]
    per_layer = sum(mean[k] * (token_scale if k in SCALES_WITH_TOKENS else 1.0) for k in PER_LAYER)
    fixed = ((once["vision"] + once["lm_head_hessian"]) * token_scale + once["lm_head_solve"]
             + once["lm_head_write"] + once["other"])
    return {"token_scale": token_scale, "extrapolated_per_layer_seconds": per_layer,
            "extrapolated_fixed_seconds": fixed, "extrapolated_seconds": fixed + full_layers * per_layer,
            "full_layers": full_layers,
            "extrapolation": f"(capture + Hessian) per layer and the vision / lm_head Hessian passes × "
                             f"{token_scale:.1f} (the recipe's calibration tokens / the tokens used), solve, read "
                             f"and write as measured; × {full_layers} layers + the once-per-model parts. "
                             "Extrapolated, not measured"}
