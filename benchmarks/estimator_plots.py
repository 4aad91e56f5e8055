"""Plots of the estimator benchmark: bias and spread vs m, cost vs m, cosine vs cost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

STYLE: dict[str, tuple[str, str]] = {
    "single-point": ("tab:red", "o"),
    "single-point-tangent": ("tab:red", "s"),
    "forward-difference": ("tab:orange", "o"),
    "forward-difference-tangent": ("tab:orange", "s"),
    "two-point": ("tab:blue", "o"),
    "two-point-tangent": ("tab:blue", "s"),
    "two-point-tangent-logits": ("tab:cyan", "^"),
    "unrolled-1": ("tab:green", "D"),
    "unrolled-2": ("tab:olive", "D"),
    "implicit-cg": ("tab:purple", "v"),
    "exact": ("black", "P"),
}


def _series(
    records: list[dict[str, Any]], problem: str, estimator: str, key: str
) -> tuple[list[int], list[float]]:
    rows = sorted(
        (r for r in records if r["problem"] == problem and r["estimator"] == estimator), key=lambda r: r["m"]
    )
    return [r["m"] for r in rows], [r[key] for r in rows]


def plot_all(records: list[dict[str, Any]], out: Path) -> list[Path]:
    """Write the three PNGs into ``out`` and return their paths."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    problems = list(dict.fromkeys(r["problem"] for r in records))
    estimators = list(dict.fromkeys(r["estimator"] for r in records))
    device = records[0]["device"]
    paths = []

    def grid(rows: int, title: str) -> tuple[Any, Any]:
        fig, axes = plt.subplots(
            rows, len(problems), figsize=(4.2 * len(problems), 3.4 * rows), squeeze=False
        )
        fig.suptitle(f"{title} ({device})", fontsize=10)
        return fig, axes

    def finish(fig: Any, axes: Any, name: str) -> None:
        handles, labels = axes[0][0].get_legend_handles_labels()
        if labels:
            fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)), fontsize=8)
        fig.tight_layout(rect=(0, 0.1, 1, 0.95))
        path = out / name
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)

    fig, axes = grid(
        2, "Relative bias and spread of one estimate vs m (tangent parts, against Exact; 1e-8 = 0)"
    )
    for j, problem in enumerate(problems):
        for row, key in enumerate(("rel_bias", "rel_std")):
            ax = axes[row][j]
            for est in estimators:
                ms, values = _series(records, problem, est, key)
                if est == "exact" or (key == "rel_std" and not any(values)):
                    continue  # the reference itself; deterministic estimators have no spread
                color, marker = STYLE.get(est, ("gray", "."))
                ax.plot(ms, [max(v, 1e-8) for v in values], color=color, marker=marker, label=est, lw=1)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{problem}: {key}", fontsize=9)
            ax.set_xlabel("m")
    finish(fig, axes, "bias_variance_vs_m.png")

    fig, axes = grid(2, "Cost of one estimate vs m")
    for j, problem in enumerate(problems):
        for row, key in enumerate(("time_ratio_ls", "peak_mem_bytes")):
            ax = axes[row][j]
            for est in estimators:
                ms, values = _series(records, problem, est, key)
                color, marker = STYLE.get(est, ("gray", "."))
                ax.plot(ms, values, color=color, marker=marker, label=est, lw=1)
            if key == "peak_mem_bytes":
                ms, values = _series(records, problem, estimators[0], "ls_peak_mem_bytes")
                ax.plot(ms, values, color="gray", ls="--", label="one LS step")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(
                f"{problem}: {'time / LS step' if key == 'time_ratio_ls' else 'peak extra bytes'}", fontsize=9
            )
            ax.set_xlabel("m")
    finish(fig, axes, "cost_vs_m.png")

    sizes = sorted({r["m"] for r in records})
    small = 3 if 3 in sizes else sizes[0]
    large = 32 if 32 in sizes else sizes[-1]
    title = f"Mean cosine with the exact hypergradient vs time (filled: m = {small}, hollow: m = {large})"
    fig, axes = grid(1, title)
    fig.set_figheight(4.6)
    for j, problem in enumerate(problems):
        ax = axes[0][j]
        for est in estimators:
            color, marker = STYLE.get(est, ("gray", "."))
            for m, fill in ((small, True), (large, False)):
                rows = [
                    r for r in records if r["problem"] == problem and r["estimator"] == est and r["m"] == m
                ]
                for r in rows:
                    ax.scatter(
                        r["time_ratio_ls"],
                        r["cosine_to_exact"],
                        color=color if fill else "none",
                        edgecolors=color,
                        marker=marker,
                        label=est if fill else None,
                    )
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator([1, 2, 3, 5, 10, 20, 50, 100, 200]))
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("time of one estimate / one LS step")
        ax.set_ylabel("mean cosine to exact")
        ax.set_title(problem, fontsize=9)
    finish(fig, axes, "cosine_vs_cost.png")
    return paths
