"""PNG figures of a validate report (matplotlib, Agg backend: no display needed). Each function takes the
report dict and a path, draws one figure and returns the file name, or None when there is nothing to draw."""

from __future__ import annotations

from pathlib import Path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def kl_distribution(report: dict, path: Path) -> str | None:
    """Per-sample mean token KL, one empirical CDF per candidate (log x axis)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for c in report["candidates"]:
        values = sorted(max(r["kl_mean"], 1e-12) for r in c["samples"])
        ax.step(values, [(i + 1) / len(values) for i in range(len(values))], where="post", label=c["label"])
    ax.set(xscale="log", xlabel="mean token KL(ref‖cand) per sample, nats", ylabel="share of samples ≤ x",
           title="KL distribution over held-out samples")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, plt, path)


def accuracy_by_task(report: dict, path: Path) -> str | None:
    """Grouped bars per task: the reference's accuracy, then each candidate's (sets with answers only)."""
    import numpy as np

    plt = _plt()
    tasks = [t for t, m in report["candidates"][0]["metrics"]["by_task"].items() if m["accuracy_ref"] is not None]
    if not tasks:
        return None
    series = [("reference", [report["candidates"][0]["metrics"]["by_task"][t]["accuracy_ref"] for t in tasks])]
    series += [(c["label"], [c["metrics"]["by_task"][t]["accuracy_cand"] for t in tasks]) for c in report["candidates"]]
    fig, ax = plt.subplots(figsize=(max(6.4, 1.1 * len(tasks) * len(series) / 2), 4))
    x, width = np.arange(len(tasks)), 0.8 / len(series)
    for k, (label, values) in enumerate(series):
        ax.bar(x + k * width, values, width, label=label)
    ax.set_xticks(x + width * (len(series) - 1) / 2, tasks)
    ax.set(ylim=(0, 1.3), ylabel="task accuracy (greedy answer = ground truth)", title="Accuracy per task")
    ax.legend(fontsize=8, loc="upper center", ncol=min(4, len(series)))
    return _save(fig, plt, path)


def layer_sqnr(report: dict, path: Path) -> str | None:
    """SQNR of each decoder layer's output vs the reference's, one line per candidate."""
    curves = [(c["label"], c["layer_sqnr_db"]) for c in report["candidates"] if c["layer_sqnr_db"]]
    if not curves:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for label, values in curves:
        ax.plot(range(len(values)), [min(v, 200.0) for v in values], marker="o", label=label)
    ax.set_xticks(range(max(len(v) for _, v in curves)))
    ax.set(xlabel="decoder layer", ylabel="output SQNR, dB (higher = closer)", title="Where the error enters")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _save(fig, plt, path)


def tradeoff(report: dict, path: Path) -> str | None:
    """Checkpoint size vs mean KL, one point per candidate (when several were validated together)."""
    if len(report["candidates"]) < 2:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for c in report["candidates"]:
        size, kl = c["weight_bytes"] / 1e6, max(c["metrics"]["overall"]["mean_kl"], 1e-12)
        ax.scatter([size], [kl], color="tab:green" if c["passed"] else "tab:red")
        ax.annotate(c["label"], (size, kl), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set(yscale="log", xlabel="weights on disk, MB", ylabel="mean token KL(ref‖cand)",
           title="Size / fidelity trade-off (green: passed)")
    ax.grid(alpha=0.3)
    return _save(fig, plt, path)


def _save(fig, plt, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


FIGURES = {"kl_distribution.png": kl_distribution, "accuracy_by_task.png": accuracy_by_task,
           "layer_sqnr.png": layer_sqnr, "tradeoff.png": tradeoff}
