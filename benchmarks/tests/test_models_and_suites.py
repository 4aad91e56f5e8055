"""Models (forward/backward), loss functions, suite descriptions and a few LS training steps per suite."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from benchmarks import SUITES, iterate_batches, make_suite
from benchmarks.losses import (
    columnwise_cross_entropy,
    depth_loss,
    masked_binary_cross_entropy,
    normals_loss,
    segmentation_loss,
)
from benchmarks.models import (
    AdsModel,
    ConstantModel,
    ManyTasksMLP,
    MTANLite,
    SegNetLite,
    TabularMLP,
)
from benchmarks.runs import train_stl
from bilevel_mtl.balancers import LS
from bilevel_mtl.training import BalancedOptimizer


def _backward_reaches_every_parameter(model: torch.nn.Module, outputs: dict[str, torch.Tensor]) -> None:
    sum(output.float().pow(2).mean() for output in outputs.values()).backward()  # type: ignore[union-attr]
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(parameter.grad).all(), f"{name} has a non-finite gradient"


@pytest.mark.parametrize("network", [SegNetLite, MTANLite])
def test_dense_models_shapes_unit_normals_and_gradients(network: type[SegNetLite]) -> None:
    torch.manual_seed(0)
    model = network(
        {"segmentation": 5, "depth": 1, "normals": 3}, width=4, levels=2, unit_outputs=("normals",)
    )
    outputs = model(torch.rand(2, 3, 8, 12))
    assert outputs["segmentation"].shape == (2, 5, 8, 12)
    assert outputs["depth"].shape == (2, 1, 8, 12)
    torch.testing.assert_close(outputs["normals"].norm(dim=1), torch.ones(2, 8, 12))
    _backward_reaches_every_parameter(model, outputs)
    with pytest.raises(ValueError, match="multiples of 4"):
        model(torch.rand(1, 3, 10, 12))
    with pytest.raises(ValueError, match="unit_outputs"):
        network({"depth": 1}, unit_outputs=("normals",))


def test_small_models_shapes_and_gradients() -> None:
    torch.manual_seed(0)
    mlp = ManyTasksMLP(input_dim=5, num_regression=3, num_classification=2, num_classes=4, hidden=8)
    outputs = mlp(torch.randn(6, 5))
    assert outputs["regression"].shape == (6, 3) and outputs["classification"].shape == (6, 2, 4)
    _backward_reaches_every_parameter(mlp, outputs)
    # 16 hidden units: with fewer, a layer dead for one sample may leave its row without gradient.
    ads = AdsModel([7, 5], num_dense=3, tasks=("click", "conv"), embedding_dim=2, hidden=(16,))
    inputs = torch.cat([torch.tensor([[6.0, 4.0], [0.0, 1.0]]), torch.randn(2, 3)], dim=1)
    outputs = ads(inputs)
    assert outputs["click"].shape == (2,)
    sum(o.sum() for o in outputs.values()).backward()  # type: ignore[union-attr]
    assert ads.embeddings[0].weight.grad is not None
    assert set(ads.embeddings[0].weight.grad.abs().sum(dim=1).nonzero().ravel().tolist()) == {0, 6}


def test_tabular_mlp_answers_in_natural_units_and_constant_model_repeats() -> None:
    torch.manual_seed(0)
    mlp = TabularMLP(
        5, units={"price": (2000.0, 100.0), "growth": (0.0, 0.01)}, classes={"click": 2}, hidden=8
    )
    x = torch.randn(6, 5)
    outputs = mlp(x)
    assert {k: tuple(v.shape) for k, v in outputs.items()} == {"price": (6,), "growth": (6,), "click": (6, 2)}
    features = mlp.trunk(x)
    torch.testing.assert_close(outputs["price"], 2000.0 + 100.0 * mlp.heads["price"](features).squeeze(1))
    torch.testing.assert_close(outputs["growth"], 0.01 * mlp.heads["growth"](features).squeeze(1))
    _backward_reaches_every_parameter(mlp, outputs)
    with pytest.raises(ValueError, match="both regression and classification"):
        TabularMLP(5, units={"a": (0.0, 1.0)}, classes={"a": 2})
    constant = ConstantModel({"y": torch.tensor(3.0), "logits": torch.tensor([[1.0, 2.0]])})
    repeated = constant(x)
    assert torch.equal(repeated["y"], torch.full((6,), 3.0))
    assert torch.equal(repeated["logits"], torch.tensor([[1.0, 2.0]]).expand(6, 1, 2))


def test_dense_losses_by_hand() -> None:
    logits = torch.randn(1, 3, 2, 2)
    labels = torch.tensor([[[0, 2], [-1, 1]]])
    valid = labels[0] >= 0
    expected = F.cross_entropy(logits.permute(0, 2, 3, 1)[0][valid], labels[0][valid])
    torch.testing.assert_close(segmentation_loss(logits, labels), expected)
    prediction = torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 2, 2)
    depth = torch.tensor([1.0, 4.0, 0.0, 2.0]).reshape(1, 1, 2, 2)
    torch.testing.assert_close(depth_loss(prediction, depth), torch.tensor(4.0 / 3.0))
    truth = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]).T.reshape(1, 3, 1, 3)
    guess = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]).T.reshape(1, 3, 1, 3)
    torch.testing.assert_close(normals_loss(guess, truth), torch.tensor(0.5))  # (0 + 1) / 2 valid pixels


def test_binary_and_columnwise_losses() -> None:
    logits = torch.tensor([0.0, 1.0, -1.0], requires_grad=True)
    targets = torch.tensor([1.0, 0.0, 0.3])
    mask = torch.tensor([True, False, True])
    expected = F.binary_cross_entropy_with_logits(logits[mask], targets[mask])
    torch.testing.assert_close(masked_binary_cross_entropy(logits, targets, mask), expected)
    empty = masked_binary_cross_entropy(logits, targets, torch.zeros(3, dtype=torch.bool))
    assert float(empty.detach()) == 0.0 and empty.requires_grad
    column_logits, column_labels = torch.randn(5, 3, 4), torch.randint(0, 4, (5, 3))
    per_task = columnwise_cross_entropy(column_logits, column_labels)
    for task in range(3):
        torch.testing.assert_close(
            per_task[task], F.cross_entropy(column_logits[:, task], column_labels[:, task])
        )


@pytest.mark.parametrize("name", sorted(SUITES))
def test_each_suite_trains_with_ls_and_evaluates(name: str, tmp_path: Path) -> None:
    suite = make_suite(name, "tiny")
    data = suite.datasets(seed=0, cache_dir=tmp_path, progress=False)
    model = suite.model(seed=0)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.Adam(model.parameters(), lr=suite.training.learning_rate)
    trainer = BalancedOptimizer(model, optimizer, LS(suite.num_tasks))
    steps = 0
    for inputs, targets in iterate_batches(data.train, suite.training.batch_size, shuffle=True, seed=0):
        record = trainer.step(lambda: suite.task_losses(model(inputs), targets))  # noqa: B023
        assert record.losses.shape == (suite.num_tasks,) and torch.isfinite(record.losses).all()
        torch.testing.assert_close(record.weights, torch.full((suite.num_tasks,), 1.0 / suite.num_tasks))
        steps += 1
        if steps == 2:
            break
    assert steps == 2
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    scores = suite.evaluate(model, data.test)
    assert list(scores) == [spec.name for spec in suite.metrics]
    assert set(suite.higher_is_better) == set(scores)
    assert {spec.task for spec in suite.metrics} <= set(suite.tasks)
    assert all(torch.isfinite(torch.tensor(value)) for value in scores.values())
    assert model.training  # evaluate restored the mode


def test_manytasks_scales_to_256_tasks(tmp_path: Path) -> None:
    suite = make_suite("manytasks", "tiny", num_tasks=256, classification_fraction=0.25)
    data = suite.datasets(cache_dir=tmp_path, progress=False)
    model = suite.model(seed=0)
    inputs, targets = next(iterate_batches(data.train, 8))
    losses = suite.task_losses(model(inputs), targets)
    assert losses.shape == (256,) and suite.tasks[191] == "reg191" and suite.tasks[192] == "cls000"
    torch.testing.assert_close(
        losses[:192], (model(inputs)["regression"] - targets["regression"]).pow(2).mean(0)
    )
    meta = suite.task_metadata(cache_dir=tmp_path)  # type: ignore[attr-defined]
    assert meta["conflicting"].sum() == 64 and meta["direction"].shape == (256, 16)
    assert len(suite.metrics) == 256


def test_scales_losses_lie_up_to_four_decades_either_side_of_a_cross_entropy(tmp_path: Path) -> None:
    suite = make_suite("scales", "quick")
    data = suite.datasets(cache_dir=tmp_path, progress=False)
    inputs, targets = next(iterate_batches(data.test, len(data.test)))  # type: ignore[arg-type]
    with torch.no_grad():
        losses = dict(zip(suite.tasks, suite.task_losses(suite.model(seed=0)(inputs), targets), strict=True))
    # At initialisation a regression head predicts about its offset: MSE about (1 + r²) s_k², r = 0.5.
    for task in suite.config.data.tasks:
        if task.is_regression:
            assert 1.0 < losses[task.name] / task.scale**2 < 1.6, (task.name, losses[task.name])
    assert (
        1e3 < losses["price"] / losses["segment"] < 1e5 and 1e1 < losses["minutes"] / losses["segment"] < 1e3
    )
    assert (
        1e-3 < losses["share"] / losses["segment"] < 1e-1
        and 1e-5 < losses["growth"] / losses["segment"] < 1e-3
    )


@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("manytasks", {"num_tasks": 4, "classification_fraction": 0.5, "num_train": 2000}),
        ("scales", {}),
    ],
)
def test_stl_beats_the_trivial_baseline_on_every_metric_and_respects_the_floor(
    name: str, overrides: dict[str, Any], tmp_path: Path
) -> None:
    suite = make_suite(name, "quick", batch_size=32, epochs=4, **overrides)
    data = suite.datasets(cache_dir=tmp_path, progress=False)
    stl = train_stl(suite, data, seed=0, progress=False).metrics
    trivial, best = suite.trivial_scores(data), suite.bayes_scores()  # type: ignore[attr-defined]
    assert set(trivial) == set(best) == set(stl) == set(suite.higher_is_better)
    for metric, higher in suite.higher_is_better.items():
        sign = 1.0 if higher else -1.0
        # The share of the gap from the trivial predictor to the best one that STL closes in ~250
        # steps: a clear part of it, and not more than all of it (up to the sampling error of the
        # 1000 test points).
        closed = sign * (stl[metric] - trivial[metric]) / (sign * (best[metric] - trivial[metric]))
        assert 0.25 < closed < 1.05, (metric, stl[metric], trivial[metric], best[metric])


@pytest.mark.parametrize(
    ("name", "height", "width", "epochs"), [("scenes", 16, 24, 8), ("scenes2", 16, 32, 3)]
)
def test_scenes_stl_beats_the_trivial_baseline_on_every_metric(
    name: str, height: int, width: int, epochs: int, tmp_path: Path
) -> None:
    quick = make_suite(name, "quick", epochs=epochs, learning_rate=3e-3)
    data_config = dataclasses.replace(
        quick.config.data, height=height, width=width, num_train=384, num_test=64
    )
    suite = type(quick)(dataclasses.replace(quick.config, data=data_config))
    data = suite.datasets(cache_dir=tmp_path, progress=False)
    stl = train_stl(suite, data, seed=0, progress=False).metrics
    trivial = suite.trivial_scores(data)  # type: ignore[attr-defined]
    assert set(trivial) == set(stl) == set(suite.higher_is_better)
    for metric, higher in suite.higher_is_better.items():
        assert (stl[metric] > trivial[metric]) == higher, (metric, stl[metric], trivial[metric])


def test_scenes_trivial_scores_are_the_training_majority_and_mean_at_each_pixel(tmp_path: Path) -> None:
    suite = make_suite("scenes", "tiny", num_train=9, num_test=5)
    data = suite.datasets(cache_dir=tmp_path, progress=False)
    train, test = data.train.targets, data.test.targets  # type: ignore[attr-defined]
    votes = F.one_hot(train["segmentation"], suite.num_classes).sum(dim=0)
    majority = votes.argmax(dim=-1)
    depth = train["depth"].sum(dim=0) / (train["depth"] != 0).sum(dim=0).clamp(min=1)
    valid = test["depth"] != 0
    trivial = suite.trivial_scores(data)  # type: ignore[attr-defined]
    accuracy = 100.0 * (test["segmentation"] == majority).double().mean()
    assert trivial["segmentation/pixel_acc"] == pytest.approx(float(accuracy))
    error = (depth - test["depth"]).abs()[valid].double().mean()
    assert trivial["depth/abs_err"] == pytest.approx(float(error))
    assert 0.0 < trivial["normals/mean_angle"] < 90.0


def test_suite_model_seed_is_reproducible_and_leaves_the_global_stream_alone() -> None:
    suite = make_suite("scales", "tiny")
    state = torch.get_rng_state()
    first, second = suite.model(seed=3), suite.model(seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    other = suite.model(seed=4)
    assert not torch.equal(next(first.parameters()), next(other.parameters()))


def test_make_suite_overrides_route_to_data_model_and_training() -> None:
    suite = make_suite("manytasks", "tiny", num_tasks=6, hidden=32, epochs=4)
    assert suite.num_tasks == 6 and suite.config.hidden == 32 and suite.training.epochs == 4
    assert suite.tasks == ("reg000", "reg001", "reg002", "cls000", "cls001", "cls002")
    assert make_suite("scenes", "tiny", architecture="mtan").build_model().__class__ is MTANLite
    assert make_suite("ads", "tiny").main_task == "click"
    with pytest.raises(ValueError, match="unknown setting 'colour'"):
        make_suite("scales", "tiny", colour="red")
    with pytest.raises(ValueError, match="unknown suite"):
        make_suite("imagenet")
    with pytest.raises(ValueError, match="unknown size"):
        make_suite("scales", "huge")
    with pytest.raises(ValueError, match="multiple of 8"):
        make_suite("scenes", "tiny", levels=3, height=20)


def _train_ls(name: str, steps: int, **overrides: Any) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """``steps`` Adam steps of the quick suite on the summed losses: (test losses before, after, scores)."""
    suite = make_suite(name, "quick", **overrides)
    data = suite.datasets(seed=0, use_cache=False, progress=False)
    model = suite.model(seed=0)
    test_inputs, test_targets = data.test.take(torch.arange(len(data.test)))  # type: ignore[attr-defined]
    with torch.no_grad():
        first = suite.task_losses(model(test_inputs), test_targets)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    step = 0
    while step < steps:
        for inputs, targets in iterate_batches(data.train, 64, shuffle=True, seed=step):
            losses = suite.task_losses(model(inputs), targets)
            optimizer.zero_grad()
            losses.sum().backward()
            optimizer.step()
            step += 1
            if step == steps:
                break
    with torch.no_grad():
        final = suite.task_losses(model(test_inputs), test_targets)
    return first, final, suite.evaluate(model, data.test)


def test_manytasks_are_learnable() -> None:
    # Regression only (the classifications need more steps: the STL test above covers them).
    first, final, _ = _train_ls("manytasks", 100, num_train=2000, classification_fraction=0.0)
    assert torch.all(final < 0.8 * first), f"{first.tolist()} -> {final.tolist()}"
