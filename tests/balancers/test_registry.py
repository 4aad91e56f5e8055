"""The registry (derived from the classes' declarations) and ``bilevel-mtl list``."""

from __future__ import annotations

import argparse
import inspect
import json

import pytest
from balancer_cases import ARGUMENTS, CASES, MultiTaskNet, required_arguments
from torch import Tensor, nn

from bilevel_mtl import Balancer, MarigoldFaithful, registry
from bilevel_mtl import balancers as balancers_module
from bilevel_mtl import estimators as estimators_module
from bilevel_mtl.balancers import LS, MGDA, MGDAUB, GradientBalancer, registered_balancers
from bilevel_mtl.cli import main
from bilevel_mtl.estimators import Estimator
from bilevel_mtl.registry import (
    COST_CLASSES,
    MethodInfo,
    balancer_classes,
    build_balancer,
    build_estimator,
    estimator_classes,
    method_table,
)

NEEDS = {"gradients", "lookahead", "losses_after"}


def exported(module: object, base: type) -> list[type]:
    """The concrete subclasses of ``base`` a package exports in ``__all__``."""
    found = [getattr(module, name) for name in module.__all__]  # type: ignore[attr-defined]
    return [c for c in found if inspect.isclass(c) and issubclass(c, base) and not inspect.isabstract(c)]


@pytest.mark.parametrize("name", list(balancer_classes()))
def test_every_balancer_builds_by_name(name: str) -> None:
    cls = balancer_classes()[name]
    net = MultiTaskNet(3)
    balancer = build_balancer(name, 3, **{arg: ARGUMENTS[arg](net) for arg in required_arguments(cls)})
    assert type(balancer) is cls and cls.name == name
    assert balancer.num_tasks == 3
    info = MethodInfo.of(cls)
    assert (info.name, info.kind, info.target) == (name, "balancer", f"{cls.__module__}:{cls.__name__}")
    assert info.cost == cls.cost and info.cost in COST_CLASSES
    assert info.reference and info.summary
    assert cls.needs <= NEEDS
    for arg in required_arguments(cls):
        assert f"{arg}=<" in info.requires, info.requires
    # Gradient rules are the O(m·d) ones, unless they run on a representation.
    assert (info.cost == "O(m·d)") == (isinstance(balancer, GradientBalancer) and not balancer.representation)


def test_balancers_are_listed_cheapest_cost_class_first() -> None:
    classes = balancer_classes()
    assert classes == {name: registered_balancers()[name] for name in classes}
    assert set(classes) == set(registered_balancers())
    order = [COST_CLASSES.index(cls.cost) for cls in classes.values()]
    assert order == sorted(order)


def test_entries_fix_their_defaults_and_pass_options_through() -> None:
    encoder = nn.Linear(2, 2)
    ub = build_balancer("mgda_ub", 2, shared=encoder, normalization="l2")
    assert type(ub) is MGDAUB and isinstance(ub, MGDA)
    assert ub.representation and ub.normalization == "l2"
    with pytest.raises(TypeError):
        build_balancer("mgda_ub", 2)  # shared is required
    assert type(build_balancer("marigold_faithful", 2)) is MarigoldFaithful
    with pytest.raises(ValueError, match="unknown balancer 'nope'"):
        build_balancer("nope", 2)
    with pytest.raises(TypeError):
        build_balancer("ls", 2, beta=1.0)


def test_every_estimator_builds_by_name() -> None:
    for name, cls in estimator_classes().items():
        assert cls.name == name and cls.cost in COST_CLASSES
        assert type(build_estimator(name)) is cls
        info = MethodInfo.of(cls)
        assert (info.name, info.kind, info.cost) == (name, "estimator", cls.cost)
        assert info.target == f"{cls.__module__}:{cls.__name__}"
        assert info.reference and info.summary
    with pytest.raises(ValueError, match="unknown estimator"):
        build_estimator("nope")


def test_every_exported_method_is_registered_and_in_the_property_suite() -> None:
    """A new balancer or estimator class must register itself (set ``name``) and be picked up by
    the property suite (tests/balancers/balancer_cases.py; the estimators' suite is
    tests/estimators/test_pipeline.py, which checks its own coverage)."""
    registered = balancer_classes()
    covered = {case.cls for case in CASES}
    for cls in exported(balancers_module, Balancer):
        assert cls.name is not None and registered.get(cls.name) is cls, f"{cls.__name__} is not registered"
        assert cls in covered, f"{cls.__name__} has no case in balancer_cases.CASES"
    assert set(registered.values()) <= covered
    estimators = estimator_classes()
    for cls in exported(estimators_module, Estimator):
        assert cls.name is not None and estimators.get(cls.name) is cls, f"{cls.__name__} is not registered"
    assert set(estimators.values()) == set(exported(estimators_module, Estimator))
    assert set(registered.values()) == set(exported(balancers_module, Balancer))


def test_declaring_a_class_registers_it_once() -> None:
    before = registered_balancers()

    class Unnamed(LS):  # a subclass without its own name is not registered
        pass

    assert registered_balancers() == before
    with pytest.raises(TypeError, match="'ls' is taken"):

        class Duplicate(LS):
            name = "ls"

    with pytest.raises(TypeError, match="cost must be one of"):

        class BadCost(LS):
            name = "test_bad_cost"
            cost = "O(m²)"  # type: ignore[assignment]

        del BadCost
    assert registered_balancers() == before
    assert Unnamed(2).weights(Tensor([1.0, 2.0])).tolist() == [0.5, 0.5]


def check_listing(run, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    """``run(json)`` prints the table (``json=False``) or the JSON list."""
    assert run(False) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["NAME", "KIND", "COST", "REFERENCE"]
    for info in method_table():
        row = next(line for line in lines if line.split()[0] == info.name)
        assert info.cost in row and info.reference in row
    assert run(True) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [item["name"] for item in listed] == [info.name for info in method_table()]
    assert listed == [info.as_dict() for info in method_table()]
    assert all(set(item) >= {"name", "kind", "cost", "reference", "requires", "target"} for item in listed)
    assert len(listed) == len(balancer_classes()) + len(estimator_classes())


def test_list_prints_every_method_with_cost_and_reference(capsys: pytest.CaptureFixture[str]) -> None:
    check_listing(lambda as_json: registry.run(argparse.Namespace(json=as_json)), capsys)


def test_the_list_command_prints_every_method(capsys: pytest.CaptureFixture[str]) -> None:
    check_listing(lambda as_json: main(["list", "--json"] if as_json else ["list"]), capsys)
