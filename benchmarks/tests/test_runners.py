"""The benchmark runners (quality, aux, cost) in tiny configurations: record fields, files, consistency."""

from __future__ import annotations

import csv
import functools
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from benchmarks import CACHE_ENV, delta_m, make_suite, mean_rank, ne_gain, runs
from benchmarks.cli import main
from benchmarks.cost import memory_ratio
from benchmarks.metrics.stats import tied_ranks
from benchmarks.runs import build_method, split_method, train_run, worst_relative_change
from bilevel_mtl.balancers import MarigoldFaithful, PCGrad
from bilevel_mtl.criteria import FunctionCriterion
from bilevel_mtl.estimators import FirstOrder, SinglePoint
from bilevel_mtl.parametrizations import Softmax
from bilevel_mtl.training import BalancedOptimizer

PROVENANCE = {"command", "arguments", "git_commit", "device", "torch_version", "seeds"}


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))


def read(out: Path, stem: str) -> tuple[dict[str, Any], list[dict[str, str]]]:
    payload = json.loads((out / f"{stem}.json").read_text())
    with (out / f"{stem}.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert set(payload["provenance"]) >= PROVENANCE
    assert "torch threads 1" in payload["provenance"]["device"]
    assert len(rows) == len(payload["records"])
    for row, record in zip(rows, payload["records"], strict=True):
        assert row["method"] == record["method"]
        for key, value in row.items():
            if isinstance(record[key], float):
                same_nan = math.isnan(record[key]) and math.isnan(float(value))
                assert same_nan or math.isclose(float(value), record[key], rel_tol=1e-12, abs_tol=1e-12)
    return payload, rows


def test_quality_records_delta_m_and_ranks(tmp_path: Path) -> None:
    out = tmp_path / "quality"
    argv = ["quality", "--suite", "manytasks", "--size", "tiny", "--seeds", "0", "1"]
    argv += ["--epochs", "2", "--average-last", "2", "--methods", "ls", "pcgrad", "marigold:lr=0.01"]
    argv += ["--out", str(out), "--no-progress", "--set", "num_train=48"]
    assert main(argv) == 0
    payload, _ = read(out, "quality")
    suite = make_suite("manytasks", "tiny", num_train=48)
    higher = suite.higher_is_better
    assert payload["suite"]["config"]["data"]["num_train"] == 48
    assert payload["provenance"]["seeds"] == [0, 1]
    records = payload["records"]
    assert [(r["method"], r["seed"]) for r in records] == [
        (method, seed) for seed in (0, 1) for method in ("stl", "ls", "pcgrad", "marigold:lr=0.01")
    ]
    for record in records:
        assert set(higher) <= set(record)
        assert record["epochs"] == 2 and len(record["curve"]) == 2
        stl = next(r for r in records if r["method"] == "stl" and r["seed"] == record["seed"])
        used = {name: up for name, up in higher.items() if stl[name] != 0}
        assert record["delta_m_left_out"].split() == sorted(set(higher) - set(used))
        assert record["delta_m"] == pytest.approx(delta_m(record, stl, used))
        # metrics are the mean of the last two epochs' metrics
        for name in higher:
            assert record[name] == pytest.approx(sum(e["metrics"][name] for e in record["curve"]) / 2)
        assert record["curve"][-1]["train_seconds"] == pytest.approx(record["train_seconds"])
        assert record["curve"][-1]["train_cpu_seconds"] == pytest.approx(record["train_cpu_seconds"])
        assert record["train_cpu_seconds"] > 0
        same_seed = {r["method"]: r for r in records if r["seed"] == record["seed"]}
        assert record["mean_rank"] == pytest.approx(mean_rank(same_seed, higher)[record["method"]])
    ls_records = [r for r in records if r["method"] == "ls"]
    assert all(w["weights"] == pytest.approx([0.25] * 4) for r in ls_records for w in r["weights"])
    summary = payload["summary"]
    assert summary["stl"]["delta_m"] == [0.0, 0.0]
    mean = sum(r["delta_m"] for r in ls_records) / 2
    assert summary["ls"]["delta_m"][0] == pytest.approx(mean)
    # paired statistics of the per-seed Δm%
    scores = {m: {r["seed"]: r["delta_m"] for r in records if r["method"] == m} for m in summary}
    ranks = tied_ranks(scores)
    assert payload["statistics"]["score"] == "delta_m" and payload["statistics"]["reference"] == "ls"
    for method, entry in summary.items():
        assert entry["rank"] == ranks[method]
        expected = [scores[method][seed] - scores["ls"][seed] for seed in (0, 1)]
        assert entry["vs_ls"]["differences"] == pytest.approx(expected)
        assert entry["vs_ls"]["bootstrap_ci"] == pytest.approx(sorted(expected))  # two seeds: the range
    assert summary["ls"]["vs_ls"]["differences"] == [0.0, 0.0]
    for name in ("delta_m_vs_time.png", "weights.png", "delta_m_ci.png"):
        assert (out / name).stat().st_size > 0


def test_quality_resume_keeps_earlier_records(tmp_path: Path) -> None:
    out = tmp_path / "scales"
    base = ["quality", "--suite", "scales", "--size", "tiny", "--out", str(out), "--no-progress"]
    assert main([*base, "--seeds", "0", "--methods", "ls"]) == 0
    first = json.loads((out / "quality.json").read_text())["records"]
    assert main([*base, "--seeds", "0", "--methods", "ls", "famo", "--resume"]) == 0
    resumed = json.loads((out / "quality.json").read_text())
    second = resumed["records"]
    assert [run["arguments"]["resume"] for run in resumed["earlier_runs"]] == [False]
    assert [r["method"] for r in second] == ["stl", "ls", "famo"]
    # kept as they were, except the mean rank, which now counts famo too
    strip = [{k: v for k, v in r.items() if k != "mean_rank"} for r in (*first, *second[:2])]
    assert strip[2:] == strip[:2]


def test_aux_fixed_distill_references_hold_their_weights(tmp_path: Path) -> None:
    out = tmp_path / "ads"
    argv = ["aux", "--size", "tiny", "--seeds", "0", "--methods", "ls", "fixed-distill"]
    argv += ["--fixed-distill-weights", "0", "3", "--out", str(out), "--no-progress", "--weight-every", "1"]
    assert main(argv) == 0
    payload, _ = read(out, "aux")
    records = {r["method"]: r for r in payload["records"]}
    assert list(records) == ["ls", "fixed-distill@ω=0", "fixed-distill@ω=3"]
    for weight in (0.0, 3.0):
        trajectory = records[f"fixed-distill@ω={weight:g}"]["weights"]
        assert trajectory and all(w["weights"] == [1.0, 1.0, 1.0, weight] for w in trajectory)
    # weighting distillation differently changes the student's click predictions
    assert records["fixed-distill@ω=0"]["click/ne"] != records["fixed-distill@ω=3"]["click/ne"]
    for record in records.values():  # the exact hypergradient of every step of the fixed runs
        if record["method"] != "ls":
            probe = record["probe/distill"]
            assert probe["steps"] == record["steps"] and len(probe["quarters"]) == 4
            assert 0.0 <= probe["fraction_asking_more"] <= 1.0
    assert records["fixed-distill@ω=0"]["probe/distill"]["mean"] == 0.0  # ω·∂R/∂ω at ω = 0
    assert records["fixed-distill@ω=3"]["probe/distill"]["weight"] == 3.0


def test_the_hypergradient_probe_leaves_the_training_unchanged() -> None:
    """A fixed-weight run probed with the exact hypergradient at every step trains exactly as
    the unprobed run, and the probe agrees with an independent computation (Unrolled: one
    vector-Jacobian product through the same look-ahead) on the first step."""
    import benchmarks.aux as aux
    from benchmarks.datasets import iterate_batches
    from bilevel_mtl.estimators import Unrolled, UpperObjective

    suite = make_suite("ads", "tiny")
    data = suite.datasets(seed=0, progress=False)
    weights = [1.0, 1.0, 1.0, 3.0]
    built: list[aux.FixedWeights] = []

    def probed(model: torch.nn.Module) -> aux.FixedWeights:
        built.append(aux.FixedWeights(weights, probe=aux.main_task_loss(suite)))
        return built[-1]

    plain = train_run(suite, data, lambda model: aux.FixedWeights(weights), 0, progress=False)
    probe = train_run(suite, data, probed, 0, progress=False)
    assert probe.metrics == plain.metrics
    assert len(built[0].hypergradients) == probe.steps

    unrolled: list[torch.Tensor] = []

    class Twin(aux.FixedWeights):
        def decide(self, lower: Any) -> Any:
            objective = UpperObjective.lookahead(aux.main_task_loss(suite), lower)
            unrolled.append(
                Unrolled().estimate(objective, self.fixed.to(lower.losses), torch.Generator()).gradient
            )
            return super().decide(lower)

    inputs, targets = next(iter(iterate_batches(data.train, suite.training.batch_size)))
    first = aux.FixedWeights(weights, probe=aux.main_task_loss(suite))
    for balancer in (first, Twin(weights, probe=aux.main_task_loss(suite))):
        torch.manual_seed(0)
        net = suite.model(0)
        optimizer = torch.optim.Adam(net.parameters(), lr=suite.training.learning_rate)
        BalancedOptimizer(net, optimizer, balancer).step(
            lambda net=net: suite.task_losses(net(inputs), targets)  # type: ignore[misc]
        )
    exact = torch.tensor(first.hypergradients[0], dtype=unrolled[0].dtype)
    assert float(exact.abs().max()) > 0
    torch.testing.assert_close(exact, unrolled[0], rtol=1e-4, atol=1e-9)


def test_aux_ne_gain_against_ls(tmp_path: Path) -> None:
    out = tmp_path / "ads"
    argv = ["aux", "--size", "tiny", "--seeds", "0", "--methods", "ls", "stl", "marigold-aux"]
    argv += ["--upper-lrs", "0.5", "--out", str(out), "--no-progress", "--weight-every", "1"]
    assert main(argv) == 0
    payload, _ = read(out, "aux")
    records = {r["method"]: r for r in payload["records"]}
    assert list(records) == ["ls", "stl", "marigold-aux@lr=0.5"]
    tasks = make_suite("ads", "tiny").tasks
    for record in records.values():
        for task in tasks:
            assert record[f"{task}/ne_gain"] == pytest.approx(
                ne_gain(record[f"{task}/ne"], records["ls"][f"{task}/ne"])
            )
    assert all(records["ls"][f"{task}/ne_gain"] == 0.0 for task in tasks)
    aux = records["marigold-aux@lr=0.5"]
    # click's weight stays 1 up to the perturbation r = 1e-3; conv weights are not learnt
    assert all(abs(w["weights"][0] - 1.0) < 1e-2 for w in aux["weights"])
    assert all(abs(w["weights"][2] - 1.0) < 1e-2 for w in aux["weights"])
    summary = payload["summary"]
    assert payload["statistics"]["score"] == "click/ne_gain" and not payload["statistics"]["lower_is_better"]
    for method, record in records.items():
        assert summary[method]["vs_ls"]["differences"] == [record["click/ne_gain"]]
    gains = {method: {0: record["click/ne_gain"]} for method, record in records.items()}
    assert {method: summary[method]["rank"] for method in records} == tied_ranks(gains, lower_is_better=False)
    assert (out / "aux_weights.png").stat().st_size > 0 and (out / "ne_gain_ci.png").stat().st_size > 0


def test_aux_exact_variant_learns_only_the_distillation_weight_from_the_exact_hypergradient(
    tmp_path: Path,
) -> None:
    import benchmarks.aux as aux
    from bilevel_mtl.balancers import MarigoldFaithful
    from bilevel_mtl.estimators import Unrolled

    suite = make_suite("ads", "tiny")
    balancer = aux.aux_balancer(suite, ("distill",), 0.5, "perturbed", 0, exact=True)
    assert isinstance(balancer, MarigoldFaithful) and isinstance(balancer.estimator, Unrolled)
    out = tmp_path / "ads"
    argv = ["aux", "--size", "tiny", "--seeds", "0", "--methods", "ls", "marigold-aux-exact"]
    argv += ["--upper-lrs", "0.5", "--out", str(out), "--no-progress", "--weight-every", "1"]
    assert main(argv) == 0
    payload, _ = read(out, "aux")
    trajectory = {r["method"]: r for r in payload["records"]}["marigold-aux-exact@lr=0.5"]["weights"]
    distill = suite.tasks.index("distill")
    # no perturbation: every weight but distillation's is exactly 1 at every step
    assert all(w == 1.0 for step in trajectory for i, w in enumerate(step["weights"]) if i != distill)
    assert abs(trajectory[-1]["weights"][distill] - 1.0) > 1e-3, "the distillation weight moved"


def test_cost_ratios_and_memory(tmp_path: Path) -> None:
    out = tmp_path / "cost"
    argv = ["cost", "--quick", "--methods", "ls", "famo", "pcgrad", "--out", str(out), "--no-progress"]
    argv += ["--warmup", "1", "--batch-size", "16", "--hidden", "8"]
    argv += ["--slow", "1e9", "--give-up", "1e9"]  # the number of pairs and probes: not the clock's
    assert main(argv) == 0
    payload, _ = read(out, "cost")
    records = payload["records"]
    methods = ("ls", "famo", "pcgrad")
    assert [(r["model"], r["num_tasks"], r["hidden"], r["method"]) for r in records] == [
        *[("mlp", m, 8, method) for m in (2, 8) for method in methods],
        *[("scenes", 3, 8, method) for method in methods],  # the quick preset's SegNet-lite
    ]
    assert [r["batch_size"] for r in records] == [16] * 6 + [8] * 3
    assert set(payload["models"]) == {"mlp", "scenes"} and "zero_grad" in payload["plain_step"]
    for record in records:
        assert record["pairs"] == 3 and record["clock"] == "process CPU time"
        for prefix in ("time_ratio", "plain_ratio", "ls_plain_ratio", "wall_ratio", "wall_plain_ratio"):
            assert record[f"{prefix}_q25"] <= record[f"{prefix}_median"] <= record[f"{prefix}_q75"]
        assert min(record[f"{name}_ms_median"] for name in ("plain", "ls", "method")) > 0
        # tensor bytes, not pages: every step allocates, whatever the machine's load
        assert record["ls_peak_bytes"] > 0 and record["method_peak_bytes"] > 0
        for key, reference in (("memory_ratio", "ls"), ("memory_plain_ratio", "plain")):
            assert record[f"{reference}_peak_bytes"] > 0
            assert record[key] == record["method_peak_bytes"] / record[f"{reference}_peak_bytes"]
        if record["method"] == "ls":  # LS against itself: the same blocks
            assert record["time_ratio_median"] == record["time_ratio_q75"] == 1.0
            assert record["plain_ratio_median"] == record["ls_plain_ratio_median"]
    assert "tensors" in payload["memory_measure"]
    assert (out / "cost.png").stat().st_size > 0


def test_cost_peaks_are_reproducible(tmp_path: Path) -> None:
    argv = ["cost", "--quick", "--methods", "pcgrad", "--no-progress", "--warmup", "1"]
    argv += ["--batch-size", "16", "--hidden", "8", "--slow", "1e9", "--give-up", "1e9"]
    peaks = []
    for run in ("first", "second"):
        assert main([*argv, "--out", str(tmp_path / run)]) == 0
        records = json.loads((tmp_path / run / "cost.json").read_text())["records"]
        peaks.append([(r["ls_peak_bytes"], r["method_peak_bytes"]) for r in records])
    assert peaks[0] == peaks[1]


def test_cost_memory_ratio_without_a_baseline_is_none() -> None:
    assert memory_ratio(3000, 1500) == 2.0
    assert memory_ratio(3000, 0) is None


def test_cost_plot_leaves_out_ratios_a_log_axis_cannot_show(tmp_path: Path) -> None:
    from benchmarks.plots import plot_cost

    ratios = [1.5, 0.0, float("nan"), float("inf"), None]
    records = [
        {
            "method": method,
            "num_tasks": 2**i,
            "time_ratio_median": ratio,
            "time_ratio_q25": ratio,
            "time_ratio_q75": ratio,
            "memory_ratio": ratio,
        }
        for method in ("famo", "pcgrad")
        for i, ratio in enumerate(ratios)
    ]
    plot_cost(records, tmp_path / "cost.png")  # warnings are errors (pyproject)
    plot_cost([{**r, "memory_ratio": None} for r in records[1:]], tmp_path / "none.png")
    assert (tmp_path / "cost.png").stat().st_size > 0 and (tmp_path / "none.png").stat().st_size > 0


def test_method_specs() -> None:
    assert split_method("marigold-paper:lr=0.01,beta=2") == ("marigold-paper", {"lr": 0.01, "beta": 2})
    with pytest.raises(ValueError, match="unknown method"):
        split_method("nonsense")
    with pytest.raises(ValueError, match="key=value"):
        split_method("marigold:lr")
    suite = make_suite("manytasks", "tiny", num_tasks=2)
    model = suite.model(0)
    pcgrad = build_method("pcgrad", 2, model)
    assert isinstance(pcgrad, PCGrad)
    faithful = build_method("marigold-faithful", 2, model, seed=3)
    assert isinstance(faithful, MarigoldFaithful)
    paper = build_method("marigold-paper:radius=0.01", 2, model)
    assert isinstance(paper.estimator, SinglePoint) and paper.estimator.radius == 0.01 and paper.lr == 1e-4
    same_batch = build_method("marigold-same-batch", 2, model)
    assert same_batch.measurement == "same-batch" and same_batch.lr == 0.025
    assert isinstance(build_method("marigold", 2, model).estimator, FirstOrder)
    torch.testing.assert_close(build_method("ls", 2, model).weights(torch.ones(2)), torch.full((2,), 0.5))
    relative = build_method("marigold-relative:lr=0.01", 2, model)
    assert isinstance(relative.criterion, FunctionCriterion) and relative.lr == 0.01
    plain = build_method("marigold-relative-softmax", 2, model)
    assert isinstance(plain.parametrization, Softmax) and isinstance(plain.criterion, FunctionCriterion)
    # max(0.5/1 - 1, 3/2 - 1) = 0.5: the worst relative change, whatever the scales
    change = worst_relative_change(torch.tensor([1.0, 2.0]), torch.tensor([0.5, 3.0]))
    torch.testing.assert_close(change, torch.tensor(0.5))
    torch.testing.assert_close(
        worst_relative_change(torch.tensor([1e-4, 2.0]), torch.tensor([0.5e-4, 3.0])), torch.tensor(0.5)
    )


def test_aux_records_a_failing_method_and_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import benchmarks.aux as aux

    train_run = aux.train_run

    def broken(*args: Any, description: str, **kwargs: Any) -> Any:
        if description.startswith("marigold-aux"):  # fails while training (the check built it fine)
            raise ValueError("losses must be > 0")
        return train_run(*args, description=description, **kwargs)

    monkeypatch.setattr(aux, "train_run", broken)
    out = tmp_path / "ads"
    argv = ["aux", "--size", "tiny", "--seeds", "0", "--methods", "ls", "marigold-aux", "stl"]
    argv += ["--upper-lrs", "0.1", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    payload = json.loads((out / "aux.json").read_text())
    assert [(r["method"], "error" in r) for r in payload["records"]] == [
        ("ls", False),
        ("marigold-aux@lr=0.1", True),
        ("stl", False),
    ]
    assert payload["summary"]["marigold-aux@lr=0.1"]["failures"] == ["seed 0: ValueError: losses must be > 0"]
    assert "click/ne" in payload["summary"]["stl"]
    assert "rank" not in payload["summary"]["marigold-aux@lr=0.1"]  # no seed to rank it by
    assert {payload["summary"][m]["rank"] for m in ("ls", "stl")} <= {1.0, 1.5, 2.0}


class _Recorder:
    """What each training run saw: its balancer, initial parameters, and per step the batch's
    inputs and the global random state (patched in for ``BalancedOptimizer``)."""

    def __init__(self) -> None:
        self.runs: list[dict[str, Any]] = []

    def trainer(self, model: torch.nn.Module, optimizer: Any, balancer: Any) -> Any:
        run = {
            "balancer": type(balancer).__name__,
            "init": [p.detach().clone() for p in model.parameters()],
            "inputs": [],
            "random": [],
        }
        self.runs.append(run)
        trainer = BalancedOptimizer(model, optimizer, balancer)
        step = trainer.step

        def recorded(closure: Any) -> Any:
            ((inputs, _),) = closure.args[0]  # train_run's closure: partial(losses, [(inputs, targets)])
            run["inputs"].append(inputs.clone())
            run["random"].append(torch.random.get_rng_state())
            return step(closure)

        trainer.step = recorded  # type: ignore[method-assign]
        return trainer


def _same_run(a: dict[str, Any], b: dict[str, Any]) -> bool:
    def equal(x: list[torch.Tensor], y: list[torch.Tensor]) -> bool:
        return len(x) == len(y) and all(torch.equal(u, v) for u, v in zip(x, y, strict=True))

    return equal(a["init"], b["init"]) and equal(a["inputs"], b["inputs"]) and equal(a["random"], b["random"])


@pytest.mark.parametrize("command", ["quality", "aux"])
def test_methods_of_one_seed_see_the_same_start_and_batches(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = _Recorder()
    monkeypatch.setattr(runs, "BalancedOptimizer", recorder.trainer)
    if command == "quality":
        argv = ["quality", "--suite", "manytasks", "--set", "num_tasks=2"]
        argv += ["--methods", "ls", "marigold", "pcgrad"]
        per_seed = 2 + 3  # STL trains one model per task
    else:
        argv = ["aux", "--methods", "ls", "marigold-aux", "--upper-lrs", "0.1"]
        per_seed = 2
    argv += ["--size", "tiny", "--seeds", "0", "1", "--out", str(tmp_path / "out"), "--no-progress"]
    assert main(argv) == 0
    assert len(recorder.runs) == 2 * per_seed
    seed0, seed1 = recorder.runs[:per_seed], recorder.runs[per_seed:]
    assert len({run["balancer"] for run in seed0}) == per_seed - (1 if command == "quality" else 0)
    assert all(run["inputs"] for run in seed0)
    for first, second in ((seed0, seed1), (seed1, seed0)):
        assert all(_same_run(first[0], run) for run in first[1:])
        assert not _same_run(first[0], second[0])


def test_global_random_draws_are_paired(monkeypatch: pytest.MonkeyPatch) -> None:
    # a model that draws from the global random state while training (as dropout does) draws
    # the same numbers under every method of a seed, whatever ran before in the process
    suite = make_suite("manytasks", "tiny")
    data = suite.datasets(seed=0, progress=False)
    task_losses = suite.task_losses
    draws: list[list[float]] = []

    def noisy(outputs: Any, targets: Any) -> torch.Tensor:
        draws[-1].append(float(torch.rand(())))
        return task_losses(outputs, targets)

    monkeypatch.setattr(suite, "task_losses", noisy)
    for method in ("ls", "rlw", "ls"):
        torch.rand(3)  # other work in the process moves the global state between runs
        state = torch.random.get_rng_state()
        draws.append([])
        make = functools.partial(build_method, method, suite.num_tasks, seed=0)
        train_run(suite, data, make, seed=0, epochs=2, progress=False)
        assert torch.equal(torch.random.get_rng_state(), state)  # restored after the run
    assert draws[0] == draws[1] == draws[2] and len(set(draws[0])) == len(draws[0]) > 2


@pytest.mark.parametrize("method", ["modo", "sdmgrad"])
def test_a_method_needing_several_batches_gets_consecutive_independent_ones(
    method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # MoDo and SDMGrad decide from b independent batches per step (their papers): the closure
    # returns the [b, m] losses of b consecutive batches of the epoch, every sample at most once
    suite = make_suite("scales", "tiny")
    data = suite.datasets(seed=0, progress=False)
    seen: list[torch.Tensor] = []
    task_losses = suite.task_losses

    def recording(outputs: Any, targets: Any) -> torch.Tensor:
        seen.append(next(iter(targets.values())).clone())
        return task_losses(outputs, targets)

    monkeypatch.setattr(suite, "task_losses", recording)
    make = functools.partial(build_method, method, suite.num_tasks, seed=0)
    per_step = make(suite.model(0)).num_batches
    result = train_run(suite, data, make, seed=0, epochs=2, progress=False)
    batch_size = suite.training.batch_size
    batches = -(-len(data.train) // batch_size)
    assert per_step == 3 and batches == 4
    assert result.steps == 2 * (batches // per_step)  # the incomplete last group is dropped
    first = seen[:per_step]  # the first step's closure: three full, different batches
    assert all(len(t) == batch_size for t in first)
    assert not any(torch.equal(first[i], first[j]) for i in range(3) for j in range(i + 1, 3))
