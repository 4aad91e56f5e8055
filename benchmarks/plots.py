"""The benchmark figures (matplotlib, written as PNG): Δm% against training time (the MARIGOLD
paper's Figure 3), each method's score with the 95% interval of its paired difference to LS,
task-weight trajectories, and step time and memory against the number of tasks."""

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


def plot_paired_differences(
    summary: Mapping[str, Mapping[str, Any]],
    score: str,
    path: Path,
    xlabel: str,
    title: str = "",
    lower_is_better: bool = True,
) -> None:
    """One row per method, best first: its mean ``score`` over seeds (a dot) and, as a bar, LS's
    mean plus the bootstrap 95% interval of the paired difference to LS (``vs_ls``); a vertical
    line at LS's mean. A bar across the line: not told apart from LS. Labels give the rank with
    noise ties (:func:`~benchmarks.metrics.stats.tied_ranks`); failed methods are left out."""
    sign = 1.0 if lower_is_better else -1.0
    ranked = (m for m in summary if "rank" in summary[m])
    # the best at the top
    methods = sorted(ranked, key=lambda m: (summary[m]["rank"], sign * summary[m][score][0]), reverse=True)
    figure, axes = plt.subplots(figsize=(7, 0.8 + 0.32 * len(methods)))
    reference = summary["ls"][score][0] if "ls" in summary else None
    for row, method in enumerate(methods):
        entry = summary[method]
        mean = entry[score][0]
        low, high = entry["vs_ls"]["bootstrap_ci"] if "vs_ls" in entry else (math.nan, math.nan)
        if reference is not None and not math.isnan(low):
            axes.plot([reference + low, reference + high], [row, row], color="tab:blue", linewidth=2)
        axes.plot([mean], [row], "o", color="black", markersize=4)
    if reference is not None:
        axes.axvline(reference, color="tab:red", linestyle="--", linewidth=1, label="LS")
        axes.legend(fontsize=7)
    axes.set_yticks(range(len(methods)))
    axes.set_yticklabels([f"{m} (rank {summary[m]['rank']:g})" for m in methods], fontsize=7)
    axes.set_xlabel(f"{xlabel} ({'lower' if lower_is_better else 'higher'} is better)")
    axes.set_title(title + "\nbar: LS + bootstrap 95% CI of the paired difference to LS", fontsize=9)
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
    """Against m: the median step-time ratio (with its interquartile range) to the plain PyTorch
    step (a panel only when every record has it) and to LS, and the peak-memory ratio to LS.

    A ratio that is missing (``None``), not finite or not positive has no place on a log
    axis: it is left out, and its count is noted under the axes.
    """
    plain = all("plain_ratio_median" in r for r in records)
    panels = [("plain_ratio", "step time / plain step (median, IQR)")] if plain else []
    panels.append(("time_ratio", "step time / LS (median, IQR)"))
    figure, axes_row = plt.subplots(1, len(panels) + 1, figsize=(5 * (len(panels) + 1), 4))
    for axes in axes_row:
        axes.set_prop_cycle(color=[plt.get_cmap("tab10")(i) for i in range(10)] + ["black", "olive"])
    memory_axes = axes_row[-1]
    methods = list(dict.fromkeys(r["method"] for r in records))
    left_out = {key: 0 for key, _ in panels} | {"memory": 0}
    for method in methods:
        mine = sorted((r for r in records if r["method"] == method), key=lambda r: r["num_tasks"])
        for axes, (prefix, _) in zip(axes_row, panels, strict=False):
            timed = [r for r in mine if all(_loggable(r[f"{prefix}_{q}"]) for q in ("median", "q25", "q75"))]
            left_out[prefix] += len(mine) - len(timed)
            median = [r[f"{prefix}_median"] for r in timed]
            low = [r[f"{prefix}_median"] - r[f"{prefix}_q25"] for r in timed]
            high = [r[f"{prefix}_q75"] - r[f"{prefix}_median"] for r in timed]
            tasks = [r["num_tasks"] for r in timed]
            axes.errorbar(tasks, median, yerr=[low, high], marker="o", markersize=3, capsize=2, label=method)
        measured = [r for r in mine if _loggable(r["memory_ratio"])]
        left_out["memory"] += len(mine) - len(measured)
        memory_axes.plot(
            [r["num_tasks"] for r in measured],
            [r["memory_ratio"] for r in measured],
            marker="o",
            markersize=3,
            label=method,
        )
    keyed = [*panels, ("memory", "peak step memory / LS")]
    for axes, (key, label) in zip(axes_row, keyed, strict=True):
        axes.set_xscale("log", base=2)
        axes.set_yscale("log")
        axes.set_xlabel(
            "number of tasks m" + (f" ({left_out[key]} ratio(s) n/a, not drawn)" if left_out[key] else "")
        )
        axes.set_ylabel(label)
        axes.axhline(1.0, color="black", linewidth=0.8)
    axes_row[0].legend(fontsize=7)
    figure.suptitle(title, fontsize=10)
    _save(figure, path)


def _loggable(value: Any) -> bool:
    """Whether ``value`` is a number a log axis can show (finite and positive)."""
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def plot_trajectories(
    trajectories: Mapping[str, Sequence[tuple[int, float]]],
    path: Path,
    ylabel: str,
    title: str = "",
    log: bool = False,
) -> None:
    """Named curves of (step, value) pairs on one axes (e.g. the learnt distillation weight);
    ``log``: a logarithmic value axis."""
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.set_prop_cycle(color=[plt.get_cmap("tab10")(i) for i in range(10)] + ["black", "olive"])
    for name, points in trajectories.items():
        axes.plot([p[0] for p in points], [p[1] for p in points], linewidth=1, label=name)
    if log:
        axes.set_yscale("log")
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
