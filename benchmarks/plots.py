"""The benchmark figures (matplotlib, written as PNG): Δm% against training time (the MARIGOLD
paper's Figure 3), task-weight trajectories, and step time and memory against the number of tasks."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _save(figure: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_delta_m_vs_time(records: Sequence[Mapping[str, Any]], path: Path, title: str = "") -> None:
    """Per method, Δm% after each epoch against cumulative training time (both averaged over seeds):
    CPU time where the records have it (see :class:`~benchmarks.runs.RunResult`), else wall time."""
    figure, axes = plt.subplots(figsize=(7, 4.5))
    axes.set_prop_cycle(color=[plt.get_cmap("tab20")(i) for i in range(0, 20, 2)] + ["black", "olive"])
    methods = [m for m in dict.fromkeys(r["method"] for r in records) if m != "stl"]
    key = "train_cpu_seconds" if all("train_cpu_seconds" in r for r in records) else "train_seconds"
    for method in methods:
        curves = [r["curve"] for r in records if r["method"] == method]
        length = min(len(curve) for curve in curves)
        seconds = [sum(c[i][key] for c in curves) / len(curves) for i in range(length)]
        values = [sum(c[i]["delta_m"] for c in curves) / len(curves) for i in range(length)]
        style = "-o" if method.startswith("marigold") else "--."
        axes.plot(seconds, values, style, label=method, markersize=4)
    axes.axhline(0.0, color="black", linewidth=0.8)
    axes.set_xscale("log")
    axes.set_xlabel(
        ("training CPU time" if key == "train_cpu_seconds" else "training wall time") + " [s] (log)"
    )
    axes.set_ylabel("Δm% against STL (lower is better)")
    axes.set_title(title)
    axes.legend(fontsize=7, ncol=2)
    _save(figure, path)


def plot_weights(
    records: Sequence[Mapping[str, Any]],
    tasks: Sequence[str],
    path: Path,
    title: str = "",
    max_tasks: int = 8,
) -> None:
    """One panel per method: each task's share of the weights, w_i / sum_j w_j, of its first
    seed against the step (shares make methods with different weight scales comparable)."""
    seeds = [r["seed"] for r in records]
    first = seeds[0] if seeds else 0
    chosen = [r for r in records if r["seed"] == first and r.get("weights")]
    if not chosen:
        return
    columns = min(4, len(chosen))
    rows = -(-len(chosen) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.4 * rows), squeeze=False)
    shown = min(len(tasks), max_tasks)
    for panel, record in zip(axes.flat, chosen, strict=False):
        steps = [w["step"] for w in record["weights"]]
        totals = [sum(w["weights"]) or 1.0 for w in record["weights"]]
        for task in range(shown):
            shares = [w["weights"][task] / total for w, total in zip(record["weights"], totals, strict=True)]
            panel.plot(steps, shares, linewidth=1, label=tasks[task])
        panel.set_title(record["method"], fontsize=9)
        panel.tick_params(labelsize=7)
    for panel in list(axes.flat)[len(chosen) :]:
        panel.axis("off")
    axes.flat[0].legend(fontsize=6)
    axes.flat[0].set_ylabel("weight share", fontsize=8)
    figure.suptitle(
        title + ("" if shown == len(tasks) else f" (first {shown} of {len(tasks)} tasks)"), fontsize=10
    )
    _save(figure, path)


def plot_cost(records: Sequence[Mapping[str, Any]], path: Path, title: str = "") -> None:
    """Median step-time ratio (with its interquartile range) and peak-memory ratio to LS against m.

    A ratio that is missing (``None``), not finite or not positive has no place on a log
    axis: it is left out, and its count is noted under the axes.
    """
    figure, (time_axes, memory_axes) = plt.subplots(1, 2, figsize=(10, 4))
    for axes in (time_axes, memory_axes):
        axes.set_prop_cycle(color=[plt.get_cmap("tab10")(i) for i in range(10)] + ["black", "olive"])
    methods = list(dict.fromkeys(r["method"] for r in records))
    left_out = {"time": 0, "memory": 0}
    for method in methods:
        mine = sorted((r for r in records if r["method"] == method), key=lambda r: r["num_tasks"])
        timed = [
            r
            for r in mine
            if all(_loggable(r[k]) for k in ("time_ratio_median", "time_ratio_q25", "time_ratio_q75"))
        ]
        measured = [r for r in mine if _loggable(r["memory_ratio"])]
        left_out["time"] += len(mine) - len(timed)
        left_out["memory"] += len(mine) - len(measured)
        median = [r["time_ratio_median"] for r in timed]
        low = [r["time_ratio_median"] - r["time_ratio_q25"] for r in timed]
        high = [r["time_ratio_q75"] - r["time_ratio_median"] for r in timed]
        time_axes.errorbar(
            [r["num_tasks"] for r in timed],
            median,
            yerr=[low, high],
            marker="o",
            markersize=3,
            capsize=2,
            label=method,
        )
        memory_axes.plot(
            [r["num_tasks"] for r in measured],
            [r["memory_ratio"] for r in measured],
            marker="o",
            markersize=3,
            label=method,
        )
    for axes, label, key in (
        (time_axes, "step time / LS (median, IQR)", "time"),
        (memory_axes, "peak step memory / LS", "memory"),
    ):
        axes.set_xscale("log", base=2)
        axes.set_yscale("log")
        axes.set_xlabel(
            "number of tasks m" + (f" ({left_out[key]} ratio(s) n/a, not drawn)" if left_out[key] else "")
        )
        axes.set_ylabel(label)
        axes.axhline(1.0, color="black", linewidth=0.8)
    time_axes.legend(fontsize=7)
    figure.suptitle(title, fontsize=10)
    _save(figure, path)


def _loggable(value: Any) -> bool:
    """Whether ``value`` is a number a log axis can show (finite and positive)."""
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def plot_trajectories(
    trajectories: Mapping[str, Sequence[tuple[int, float]]], path: Path, ylabel: str, title: str = ""
) -> None:
    """Named curves of (step, value) pairs on one axes (e.g. the learnt distillation weight)."""
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.set_prop_cycle(color=[plt.get_cmap("tab10")(i) for i in range(10)] + ["black", "olive"])
    for name, points in trajectories.items():
        axes.plot([p[0] for p in points], [p[1] for p in points], linewidth=1, label=name)
    axes.set_xlabel("step")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.legend(fontsize=7)
    _save(figure, path)


def plot_soak(records: Sequence[Mapping[str, Any]], path: Path, title: str = "") -> None:
    """Per configuration, resident memory and each window's median step times against the step."""
    figure, panels = plt.subplots(1, 3, figsize=(15, 4.5))
    for axes in panels:
        axes.set_prop_cycle(color=[plt.get_cmap("tab20")(i) for i in range(20)])
        axes.set_xlabel("step")
    series = (
        ("rss_bytes", 2**-20, "resident memory (MiB)"),
        ("median_step_ms", 1.0, "median step wall time in the window (ms)"),
        ("median_step_cpu_ms", 1.0, "median step CPU time in the window (ms)"),
    )
    for record in records:
        windows = record["windows"]
        for axes, (key, scale, _) in zip(panels, series, strict=True):
            shown = [w for w in windows if key in w]  # the set-up entry has no step times
            axes.plot([w["step"] for w in shown], [scale * w[key] for w in shown], label=record["method"])
    for axes, (_, _, label) in zip(panels, series, strict=True):
        axes.set_ylabel(label)
    for axes in panels[1:]:
        axes.set_yscale("log")
    panels[2].legend(fontsize=7, ncol=2)
    figure.suptitle(title, fontsize=10)
    _save(figure, path)
