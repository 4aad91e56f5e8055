"""The name → method registry and ``bilevel-mtl list``."""

from __future__ import annotations

import json

import pytest
from torch import nn

from bilevel_mtl import Balancer
from bilevel_mtl.balancers import MGDA, GradientBalancer
from bilevel_mtl.cli import main
from bilevel_mtl.estimators import Estimator
from bilevel_mtl.registry import (
    BALANCERS,
    COST_CLASSES,
    ESTIMATORS,
    build_balancer,
    build_estimator,
    method_table,
)

REQUIRED = {"stl": {"task": 1}, "mgda_ub": {"shared": nn.Linear(2, 2)}}


@pytest.mark.parametrize("name", list(BALANCERS))
def test_every_balancer_builds_by_name(name: str) -> None:
    balancer = build_balancer(name, 3, **REQUIRED.get(name, {}))
    assert isinstance(balancer, Balancer)
    assert balancer.num_tasks == 3
    info = BALANCERS[name]
    assert info.cost in COST_CLASSES
    assert info.reference and info.summary
    # Gradient rules are the O(m·d) ones, unless they run on a representation.
    assert (info.cost == "O(m·d)") == (isinstance(balancer, GradientBalancer) and not balancer.representation)


def test_entries_fix_their_defaults_and_pass_options_through() -> None:
    encoder = nn.Linear(2, 2)
    ub = build_balancer("mgda_ub", 2, shared=encoder, normalization="l2")
    assert isinstance(ub, MGDA) and ub.representation and ub.normalization == "l2"
    with pytest.raises(ValueError, match="unknown balancer 'nope'"):
        build_balancer("nope", 2)
    with pytest.raises(TypeError):
        build_balancer("ls", 2, beta=1.0)


def test_every_estimator_builds_by_name() -> None:
    for name, info in ESTIMATORS.items():
        assert info.cost in COST_CLASSES
        assert isinstance(build_estimator(name), Estimator)
    with pytest.raises(ValueError, match="unknown estimator"):
        build_estimator("nope")


def test_list_prints_every_method_with_cost_and_reference(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["NAME", "KIND", "COST", "REFERENCE"]
    for info in method_table():
        row = next(line for line in lines if line.split()[0] == info.name)
        assert info.cost in row and info.reference in row
    assert main(["list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [item["name"] for item in listed] == [info.name for info in method_table()]
    assert all(set(item) >= {"name", "kind", "cost", "reference"} for item in listed)
    assert len(listed) == len(BALANCERS) + len(ESTIMATORS)
