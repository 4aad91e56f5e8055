"""Every balancer and hypergradient estimator by name, derived from the classes' declarations.

A balancer or estimator class that sets ``name`` registers itself when its module is
imported (``bilevel_mtl.balancers`` and ``bilevel_mtl.estimators`` import them all).
``build_balancer("cagrad", 3, c=0.5)`` builds a method by name; ``bilevel-mtl list [--json]``
prints the table. Cost classes, per training step and beyond LS's one forward and one
backward (:data:`~bilevel_mtl.balancers.COST_CLASSES`):

* ``loss-only O(1)``: weights from the loss values only (at most an extra forward);
* ``O(d)``: a constant number of extra passes or parameter-sized buffers, independent of ``m``;
* ``O(m·d)``: the per-task gradients of the parameters the rule sees (``m`` Jacobian rows).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Any

from .balancers import COST_CLASSES, Balancer, registered_balancers
from .estimators import Estimator, registered_estimators

__all__ = [
    "COST_CLASSES",
    "MethodInfo",
    "balancer_classes",
    "build_balancer",
    "build_estimator",
    "estimator_classes",
    "format_table",
    "method_table",
]

_NEEDS = {
    "gradients": "per-task gradients (one batched backward)",
    "lookahead": "a torch.optim optimizer with a look-ahead (BalancedOptimizer)",
    "losses_after": "post-step losses on the same batch (automatic in BalancedOptimizer)",
}


def balancer_classes() -> dict[str, type[Balancer]]:
    """Every registered balancer class by name, cheapest cost class first."""
    found = registered_balancers()
    return dict(sorted(found.items(), key=lambda item: COST_CLASSES.index(item[1].cost)))


def estimator_classes() -> dict[str, type[Estimator]]:
    """Every registered estimator class by name."""
    return registered_estimators()


@dataclass(frozen=True)
class MethodInfo:
    """One registered method, as ``bilevel-mtl list`` shows it."""

    name: str
    kind: str
    """``"balancer"`` or ``"estimator"``."""
    target: str
    """``"module:Class"``."""
    cost: str
    reference: str
    summary: str
    requires: str = ""
    """What the one-call step needs beyond a closure returning the ``m`` losses."""

    @classmethod
    def of(cls, method: type[Balancer] | type[Estimator]) -> MethodInfo:
        """The entry of a registered class, from its declaration."""
        target = f"{method.__module__}:{method.__name__}"
        assert method.name is not None
        if issubclass(method, Balancer):
            needs = [_NEEDS[need] for need in sorted(method.needs)]
            if method.num_batches > 1:
                needs.append(f"closure returns [{method.num_batches}, m] losses of independent batches")
            needs += [f"{arg}=<{what}>" for arg, what in method.requires.items()]
            return cls(
                method.name,
                "balancer",
                target,
                method.cost,
                method.reference,
                method.summary,
                "; ".join(needs),
            )
        return cls(method.name, "estimator", target, method.cost, method.reference, method.summary)

    def as_dict(self) -> dict[str, str]:
        """The entry as strings (what ``bilevel-mtl list --json`` prints)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "cost": self.cost,
            "reference": self.reference,
            "summary": self.summary,
            "requires": self.requires,
            "target": self.target,
        }


def build_balancer(name: str, num_tasks: int, **kwargs: Any) -> Balancer:
    """The balancer registered as ``name`` for ``num_tasks`` tasks (``kwargs`` go to its constructor)."""
    classes = balancer_classes()
    if name not in classes:
        raise ValueError(f"unknown balancer {name!r}; choose one of {sorted(classes)}")
    return classes[name](num_tasks, **kwargs)


def build_estimator(name: str, **kwargs: Any) -> Estimator:
    """The estimator registered as ``name`` (``kwargs`` go to its constructor)."""
    classes = estimator_classes()
    if name not in classes:
        raise ValueError(f"unknown estimator {name!r}; choose one of {sorted(classes)}")
    return classes[name](**kwargs)


def method_table() -> list[MethodInfo]:
    """Every registered balancer, then every estimator."""
    return [MethodInfo.of(c) for c in balancer_classes().values()] + [
        MethodInfo.of(c) for c in estimator_classes().values()
    ]


def format_table(methods: list[MethodInfo]) -> str:
    """A plain-text table: name, kind, cost class, reference, summary."""
    rows = [("NAME", "KIND", "COST", "REFERENCE", "SUMMARY")]
    rows += [(m.name, m.kind, m.cost, m.reference, m.summary) for m in methods]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[4]])
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines)


def configure(parser: argparse.ArgumentParser) -> None:
    """Options of ``bilevel-mtl list``."""
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")


def run(args: argparse.Namespace) -> int:
    """``bilevel-mtl list``: print every balancer and estimator with its cost class and reference."""
    methods = method_table()
    if args.json:
        print(json.dumps([m.as_dict() for m in methods], indent=2, ensure_ascii=False))
    else:
        print(format_table(methods))
    return 0
