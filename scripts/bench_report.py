"""Write the docs' benchmark tables and redraw the figures from the committed results files.

    PYTHONPATH=src python scripts/bench_report.py   # this checkout's library and harness
        # reads benchmarks/results/*/{quality,aux,cost}.json,
        # writes docs/benchmarks/_tables/<folder>.md and the PNGs next to each results file

The summaries of quality and aux results (mean ± std, the paired difference to LS with its
intervals, the rank with noise ties) are computed again from the per-seed records by the
runners' own ``summarize``, so results files written before a statistic existed get it too.
The pages in docs/benchmarks include these files, so re-running a benchmark and this script
updates the docs without editing prose.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
TABLES = ROOT / "docs" / "benchmarks" / "_tables"
TEST_RECORDS = {"rerun"}
"""Results folders that are test fixtures, not benchmark results (no table, no figures):
``rerun`` is the short run ``benchmarks/tests/test_committed_rerun.py`` makes again."""
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the harness, `benchmarks/`, is not installed

from benchmarks import aux, quality  # noqa: E402
from benchmarks.cost import cost_figure  # noqa: E402
from benchmarks.metrics.stats import format_difference, format_interval, settings  # noqa: E402


def cell(pair: list[float], decimals: int = 2) -> str:
    mean, std = pair
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def provenance_lines(payload: dict[str, Any]) -> list[str]:
    lines = []
    for info in [*payload.get("earlier_runs", []), payload["provenance"]]:
        lines += [
            f"- command: `{info['command']}`",
            f"- commit `{info['git_commit']}`, torch {info['torch_version']}, seeds {info['seeds']}, "
            f"started {info['started']}",
            f"- device: {info['device']}",
        ]
    if payload.get("earlier_runs"):
        lines.append("- (a resumed run: the records of the earlier runs were kept, the later ones added)")
    return lines


def statistics_note(payload: dict[str, Any], score: str) -> str:
    """What the paired columns are (the definitions: docs/benchmarks/index.md, "Statistics")."""
    stats = payload["statistics"]
    return (
        f"- {score} − LS: mean over seeds of the per-seed difference to LS, [percentile bootstrap "
        f"{100 * stats['level']:.0f}% CI] ({stats['resamples']:,} resamples, RNG seed "
        f"{stats['bootstrap_seed']}; with 3 seeds it is the range of the 3 differences), and the "
        "paired t-interval as a cross-check; rank: by mean, tied with the method above when their "
        "paired difference's bootstrap CI contains 0"
    )


def quality_table(payload: dict[str, Any]) -> str:
    summary = payload["summary"]
    metrics = payload["suite"]["metrics"]
    arrows = {name: "↑" if spec["higher_is_better"] else "↓" for name, spec in metrics.items()}
    clock = (
        "train_cpu_seconds" if all("train_cpu_seconds" in e for e in summary.values()) else "train_seconds"
    )
    label = "train CPU s" if clock == "train_cpu_seconds" else "train wall s"
    header = [
        "Method",
        *[f"{name} {arrows[name]}" for name in metrics],
        "Δm% ↓",
        "Δm% − LS [95% CI]",
        "t 95% CI",
        "rank ↓",
        "MR ↓",
        label,
        "seeds",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    best = min((m for m in summary if m != "stl"), key=lambda m: summary[m]["delta_m"][0], default=None)
    for method, entry in summary.items():
        decimals = 4 if any(abs(entry[n][0]) < 0.1 for n in metrics) else 3
        delta = cell(entry["delta_m"])
        if method == best:
            delta = f"**{delta}**"
        versus = entry.get("vs_ls")
        row = [
            f"`{method}`",
            *[cell(entry[name], decimals) for name in metrics],
            delta,
            "–" if versus is None else format_difference(versus),
            "–" if versus is None else format_interval(versus["t_ci"]),
            f"{entry['rank']:g}",
            f"{entry['mean_rank']:.2f}",
            f"{entry[clock][0]:.0f}",
            str(len(entry["seeds"])),
        ]
        lines.append("| " + " | ".join(row) + " |")
    suite = payload["suite"]
    config = json.dumps(suite["config"], separators=(", ", ": "))
    notes = [
        "",
        *provenance_lines(payload),
        f"- suite `{suite['name']}`, size `{suite['size']}`, overrides `{suite['overrides']}`; "
        f"metrics averaged over the last {payload['average_last']} epochs; data seed {payload['data_seed']}",
        statistics_note(payload, "Δm%"),
        "- MR: mean over the metrics of the rank of the seed-averaged metric (ties share their average)",
        f"- full configuration: `{config}`",
    ]
    return "\n".join(lines + notes) + "\n"


def aux_table(payload: dict[str, Any]) -> str:
    summary = payload["summary"]
    tasks = payload["suite"]["tasks"]
    main = payload["main_task"]
    header = [
        "Method",
        *[f"{t} NE ↓" for t in tasks],
        *[f"{t} NE gain % ↑" for t in tasks],
        f"{main} gain − LS [95% CI]",
        "t 95% CI",
        "rank ↓",
        "final ω",
        "seeds",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    failures = []
    for method, entry in summary.items():
        failures += [f"- `{method}` failed, {text}" for text in entry.get("failures", [])]
        if f"{tasks[0]}/ne" not in entry:
            continue
        weights = ", ".join(f"{entry[f'weight/{t}'][0]:.3f}" for t in tasks if f"weight/{t}" in entry)
        row = [
            f"`{method}`",
            *[cell(entry[f"{t}/ne"], 4) for t in tasks],
            *[cell(entry[f"{t}/ne_gain"], 3) for t in tasks],
            format_difference(entry["vs_ls"], 3),
            format_interval(entry["vs_ls"]["t_ci"], 3),
            f"{entry['rank']:g}",
            weights,
            str(len(entry["seeds"])),
        ]
        lines.append("| " + " | ".join(row) + " |")
    suite = payload["suite"]
    notes = [
        "",
        *probe_table(payload["records"]),
        *failures,
        *provenance_lines(payload),
        f"- suite `ads`, size `{suite['size']}`; NE averaged over the last {payload['average_last']} epochs; "
        "final ω: the weights of the last recorded step (for MARIGOLD's perturbed mode, λ + r·u)",
        statistics_note(payload, f"{main} NE gain")
        + f" (higher is better; the gain is already relative to LS of the same seed, so {main} gain − LS "
        "is the gain itself; a method that failed on a seed is compared on the seeds it has)",
    ]
    return "\n".join(lines + notes) + "\n"


def probe_table(records: list[dict[str, Any]]) -> list[str]:
    """The exact one-step hypergradient of the main-task criterion in log ω_d along each
    fixed-weight run (``probe/distill`` of the aux records), mean ± std over the seeds."""
    probed: dict[str, list[dict[str, Any]]] = {}
    for record in records:  # at ω_d = 0 the derivative in log ω_d is 0 by construction: left out
        if "probe/distill" in record and record["probe/distill"]["weight"] > 0:
            probed.setdefault(record["method"], []).append(record["probe/distill"])
    if not probed:
        return []

    def spread(values: list[float], scale: float = 1.0, sign: str = "+") -> str:
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{scale * statistics.fmean(values):{sign}.2f} ± {scale * std:.2f}"

    lines = [
        "Exact one-step hypergradient of the criterion (click loss change over the step) in log ω_d, "
        "along the fixed-weight runs (×1e5; negative: the criterion asks for more distillation):",
        "",
        "| run | whole run | 1st quarter | 2nd | 3rd | 4th | steps asking for more ω_d | seeds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method, probes in probed.items():
        quarters = [spread([p["quarters"][i] for p in probes], 1e5) for i in range(4)]
        row = [
            f"`{method}`",
            spread([p["mean"] for p in probes], 1e5),
            *quarters,
            spread([100 * p["fraction_asking_more"] for p in probes], sign="") + " %",
            str(len(probes)),
        ]
        lines.append("| " + " | ".join(row) + " |")
    return [*lines, ""]


def ratio_cell(record: dict[str, Any] | None, prefix: str) -> str:
    """``1.52 [1.48, 1.60]``: a median ratio and its interquartile range; "–" when not measured."""
    if record is None or f"{prefix}_median" not in record:
        return "–"
    return f"{record[f'{prefix}_median']:.2f} [{record[f'{prefix}_q25']:.2f}, {record[f'{prefix}_q75']:.2f}]"


def cost_table(payload: dict[str, Any]) -> str:
    """Per model and width: step time against the plain step and against LS, and memory against
    LS, one column per m (records made before the plain reference existed have no plain table)."""
    records = payload["records"]
    groups = dict.fromkeys((r.get("model", "mlp"), r["hidden"]) for r in records)
    out = []
    for model, hidden in sorted(groups, key=lambda group: (group[0] != "mlp", group[1])):
        mine = [r for r in records if r.get("model", "mlp") == model and r["hidden"] == hidden]
        tasks = sorted({r["num_tasks"] for r in mine})
        methods = list(dict.fromkeys(r["method"] for r in mine))
        cells = {(r["method"], r["num_tasks"]): r for r in mine}
        title = (
            f"ManyTasks MLP, hidden width d = {hidden}"
            if model == "mlp"
            else f"Scenes SegNet-lite (width {hidden}, batch {mine[0]['batch_size']})"
        )
        tables = [("plain_ratio", "time per step / plain PyTorch step"), ("time_ratio", "time per step / LS")]
        if not any("plain_ratio_median" in r for r in mine):
            tables = tables[1:]
            out += [f"{title}: no plain-step reference (measured before the runner timed one).", ""]
        for prefix, what in [*tables, ("memory_ratio", "peak step memory / LS")]:
            header = ["Method", *[f"m={m}" for m in tasks]]
            out += [f"{title}, {what}:", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            for method in methods:
                row = [f"`{method}`"]
                for m in tasks:
                    record = cells.get((method, m))
                    if prefix == "memory_ratio":
                        ratio = None if record is None else record["memory_ratio"]
                        row.append("–" if record is None else "n/a" if ratio is None else f"{ratio:.2f}")
                    else:
                        row.append(ratio_cell(record, prefix))
                out.append("| " + " | ".join(row) + " |")
            out.append("")
        times = [("LS", "ls_ms_median"), ("plain", "plain_ms_median")]
        medians = [
            f"{name} m={m}: {statistics.median(r[key] for r in mine if r['num_tasks'] == m):.1f}"
            for name, key in times
            for m in tasks
            if all(key in r for r in mine if r["num_tasks"] == m)
        ]
        out += ["Step time (median ms): " + ", ".join(medians), ""]
    out += [*provenance_lines(payload), f"- memory: {payload['memory_measure']}", f"- {payload['protocol']}"]
    return "\n".join(out) + "\n"


def redraw(folder: Path, stem: str, payload: dict[str, Any]) -> None:
    """The runner's figures, drawn again from the results file."""
    from benchmarks.plots import (
        plot_cost,
        plot_delta_m_vs_time,
        plot_paired_differences,
        plot_weights,
    )

    records = payload["records"]
    if stem == "quality":
        name = payload["suite"]["name"]
        first = payload["provenance"]["seeds"][0]
        plot_delta_m_vs_time(
            records, folder / "delta_m_vs_time.png", title=f"{name}: Δm% against training time"
        )
        plot_weights(
            records, payload["suite"]["tasks"], folder / "weights.png", f"{name}: task weights (seed {first})"
        )
        plot_paired_differences(
            payload["summary"], "delta_m", folder / "delta_m_ci.png", "Δm% against STL", f"{name}: Δm%"
        )
    elif stem == "cost":
        mlp = [r for r in records if r.get("model", "mlp") == "mlp"]
        widths = sorted({r["hidden"] for r in mlp})
        for hidden in widths:
            title = f"ManyTasks MLP (hidden {hidden}), {payload['provenance']['device']}"
            plot_cost([r for r in mlp if r["hidden"] == hidden], folder / cost_figure(hidden, widths), title)
    else:
        tasks, main = payload["suite"]["tasks"], payload["main_task"]
        aux.plot_learnt_weights(
            records, tasks, main, payload["provenance"]["seeds"][0], folder / "aux_weights.png"
        )
        plot_paired_differences(
            payload["summary"],
            f"{main}/ne_gain",
            folder / "ne_gain_ci.png",
            f"{main} NE gain over LS %",
            f"Ads: {main} NE gain over LS",
            lower_is_better=False,
        )


def overview_table(payloads: dict[str, dict[str, Any]]) -> str:
    """Δm% (mean ± std) and the rank with noise ties of every method on every quality suite."""
    methods = list(dict.fromkeys(m for p in payloads.values() for m in p["summary"]))
    header = ["Method", *[f"{name}: Δm% ↓ (rank ↓)" for name in payloads]]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for method in methods:
        row = [f"`{method}`"]
        for payload in payloads.values():
            entry = payload["summary"].get(method)
            row.append("–" if entry is None else f"{cell(entry['delta_m'])} ({entry['rank']:g})")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def summarized(stem: str, payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` with its summary computed again from its records (quality and aux)."""
    records = payload["records"]
    if stem == "quality":
        higher = {name: spec["higher_is_better"] for name, spec in payload["suite"]["metrics"].items()}
        return {
            **payload,
            "summary": quality.summarize(records, higher),
            "statistics": settings("delta_m", "ls"),
        }
    if stem == "aux":
        main = payload["main_task"]
        return {
            **payload,
            "summary": aux.summarize(records, main),
            "statistics": settings(f"{main}/ne_gain", "ls", lower_is_better=False),
        }
    return payload


def main() -> None:
    TABLES.mkdir(parents=True, exist_ok=True)
    payloads: dict[str, dict[str, Any]] = {}
    for folder in sorted(RESULTS.iterdir()) if RESULTS.exists() else []:
        if folder.name in TEST_RECORDS:
            continue
        for stem, writer in (("quality", quality_table), ("aux", aux_table), ("cost", cost_table)):
            path = folder / f"{stem}.json"
            if path.exists():
                payload = summarized(stem, json.loads(path.read_text()))
                if stem == "quality":
                    payloads[folder.name] = payload
                target = TABLES / f"{folder.name}.md"
                target.write_text(writer(payload))
                redraw(folder, stem, payload)
                print(f"wrote {target.relative_to(ROOT)} and the figures in {folder.relative_to(ROOT)}")
    if payloads:
        (TABLES / "overview.md").write_text(overview_table(payloads))


if __name__ == "__main__":
    main()
