"""Every balancer and hypergradient estimator by name, with its cost class and reference.

``build_balancer("cagrad", 3, c=0.5)`` builds a method by name (the benchmark suites use
this); ``bilevel-mtl list [--json]`` prints the table. Cost classes, per training step
and beyond LS's one forward and one backward:

* ``loss-only O(1)``: weights from the loss values only (at most an extra forward);
* ``O(d)``: a constant number of extra passes or parameter-sized buffers, independent of ``m``;
* ``O(m·d)``: the per-task gradients of the parameters the rule sees (``m`` Jacobian rows).
"""

from __future__ import annotations

import argparse
import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .balancers import (
    DWA,
    FAMO,
    IMTLG,
    LS,
    MGDA,
    RLW,
    SI,
    STL,
    UW,
    Balancer,
    BiLB4MTL,
    CAGrad,
    GradDrop,
    Marigold,
    MoCo,
    MoDo,
    NashMTL,
    PCGrad,
    SDMGrad,
)

#: The cost classes, per step and beyond LS's one forward and one backward.
COST_CLASSES = ("loss-only O(1)", "O(d)", "O(m·d)")

__all__ = [
    "BALANCERS",
    "COST_CLASSES",
    "ESTIMATORS",
    "MethodInfo",
    "build_balancer",
    "build_estimator",
    "format_table",
    "method_table",
]


@dataclass(frozen=True)
class MethodInfo:
    """One registered method."""

    name: str
    kind: str
    """``"balancer"`` or ``"estimator"``."""
    target: str
    """``"module:attribute"`` of the class (imported on use)."""
    cost: str
    """One of :data:`COST_CLASSES`."""
    reference: str
    summary: str
    requires: str = ""
    """What the one-call step needs beyond a closure returning the ``m`` losses."""
    defaults: tuple[tuple[str, Any], ...] = ()
    """Keyword arguments this entry fixes (e.g. MGDA-UB's ``representation=True``)."""

    def resolve(self) -> Callable[..., Any]:
        """The class (or factory) this entry builds."""
        module, _, attribute = self.target.partition(":")
        factory: Callable[..., Any] = getattr(importlib.import_module(module), attribute)
        return factory

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


def _balancer(
    cls: type[Balancer], name: str, cost: str, reference: str, summary: str, **extra: Any
) -> MethodInfo:
    requires = extra.pop("requires", "")
    target = f"{cls.__module__}:{cls.__name__}"
    return MethodInfo(name, "balancer", target, cost, reference, summary, requires, tuple(extra.items()))


_O1, _OD, _OMD = COST_CLASSES
_SHARED = "shared=<encoder module> (optional: restricts the rule to its parameters)"
_THREE = "closure returns [3, m] losses of 3 independent batches"

#: Every balancer by name.
BALANCERS: dict[str, MethodInfo] = {
    info.name: info
    for info in (
        _balancer(
            STL,
            "stl",
            _O1,
            "Maninis et al. 2019 (CVPR); Δm% baseline",
            "one chosen task, weight 1",
            requires="task=<index>",
        ),
        _balancer(LS, "ls", _O1, "linear scalarization", "equal weights 1/m"),
        _balancer(SI, "si", _O1, "Navon et al. 2022 (ICML), SI baseline", "mean of log losses"),
        _balancer(RLW, "rlw", _O1, "Lin et al. 2022 (TMLR)", "softmax of Gaussian weights each step"),
        _balancer(DWA, "dwa", _O1, "Liu, Johns & Davison 2019 (CVPR)", "softmax of loss ratios, T=2"),
        _balancer(UW, "uw", _O1, "Kendall, Gal & Cipolla 2018 (CVPR)", "learned log-variances"),
        _balancer(
            FAMO,
            "famo",
            _O1,
            "Liu et al. 2023 (NeurIPS)",
            "log-loss decrease balancing, one extra forward",
            requires="post-step losses on the same batch (automatic in BalancedOptimizer)",
        ),
        _balancer(
            BiLB4MTL,
            "bilb4mtl",
            _O1,
            "Xiao et al. 2025 (arXiv 2502.08585, LDC-MTL)",
            "bi-level loss-discrepancy control, first-order joint step",
        ),
        _balancer(
            Marigold,
            "marigold",
            _OD,
            "Chen et al. 2026, 'Feed m Birds with One Scone'",
            "bi-level weights by zeroth-order hypergradients through the look-ahead",
            requires="BalancedOptimizer with a torch.optim optimizer (faithful mode)",
        ),
        _balancer(
            MGDA,
            "mgda",
            _OMD,
            "Désidéri 2012; Sener & Koltun 2018 (NeurIPS)",
            "min-norm point of the task gradients' convex hull",
            requires=_SHARED,
        ),
        _balancer(
            MGDA,
            "mgda_ub",
            _OD,
            "Sener & Koltun 2018 (NeurIPS), MGDA-UB",
            "MGDA on representation gradients (m backward passes through the heads only)",
            requires="shared=<encoder module> whose output feeds the heads",
            representation=True,
        ),
        _balancer(
            PCGrad,
            "pcgrad",
            _OMD,
            "Yu et al. 2020 (NeurIPS)",
            "projects conflicting gradients",
            requires=_SHARED,
        ),
        _balancer(
            GradDrop,
            "graddrop",
            _OMD,
            "Chen et al. 2020 (NeurIPS)",
            "sign dropout by gradient purity",
            requires=_SHARED + "; representation=True for the paper's layer",
        ),
        _balancer(
            CAGrad,
            "cagrad",
            _OMD,
            "Liu et al. 2021 (NeurIPS)",
            "best worst-case descent near the mean",
            requires=_SHARED,
        ),
        _balancer(
            IMTLG,
            "imtlg",
            _OMD,
            "Liu et al. 2021 (ICLR), IMTL-G",
            "equal projections on unit gradients",
            requires=_SHARED,
        ),
        _balancer(
            MoCo,
            "moco",
            _OMD,
            "Fernando et al. 2023 (ICLR)",
            "MGDA on tracked (bias-corrected) gradients",
            requires=_SHARED,
        ),
        _balancer(
            MoDo,
            "modo",
            _OMD,
            "Chen et al. 2023 (NeurIPS)",
            "stochastic MGDA with double sampling",
            requires=_THREE,
        ),
        _balancer(NashMTL, "nashmtl", _OMD, "Navon et al. 2022 (ICML)", "Nash bargaining", requires=_SHARED),
        _balancer(
            SDMGrad,
            "sdmgrad",
            _OMD,
            "Xiao, Ban & Ji 2023 (NeurIPS)",
            "direction-oriented stochastic MGDA",
            requires=_THREE,
        ),
    )
}

#: Every hypergradient estimator by name.
ESTIMATORS: dict[str, MethodInfo] = {
    "single_point": MethodInfo(
        "single_point",
        "estimator",
        "bilevel_mtl.estimators:SinglePoint",
        _OD,
        "Chen et al. 2026, Algorithm 1",
        "(n/r) Φ(λ+ru) u: one look-ahead (1 backward + 1 forward) per direction",
    ),
    "two_point": MethodInfo(
        "two_point",
        "estimator",
        "bilevel_mtl.estimators:TwoPoint",
        _OD,
        "antithetic zeroth-order estimator (Nesterov & Spokoiny 2017)",
        "(n/2r)(Φ(λ+ru) − Φ(λ−ru)) u: two look-aheads per direction, same batch and dropout masks",
    ),
    "forward_difference": MethodInfo(
        "forward_difference",
        "estimator",
        "bilevel_mtl.estimators:ForwardDifference",
        _OD,
        "forward-difference zeroth-order estimator (Nesterov & Spokoiny 2017)",
        "(n/r)(Φ(λ+ru) − Φ(λ)) u: 1 + num_directions look-aheads",
    ),
    "unrolled": MethodInfo(
        "unrolled",
        "estimator",
        "bilevel_mtl.estimators:Unrolled",
        _OD,
        "reverse-mode differentiation through k optimizer steps (Maclaurin et al. 2015)",
        "exact gradient of the k-step objective; double backward, memory grows with k",
    ),
    "implicit": MethodInfo(
        "implicit",
        "estimator",
        "bilevel_mtl.estimators:Implicit",
        _OD,
        "implicit function theorem (Pedregosa 2016; Lorraine et al. 2020)",
        "hypergradient of θ*(λ) by CG / normal-CG / Neumann Hessian-vector solves",
    ),
    "exact": MethodInfo(
        "exact",
        "estimator",
        "bilevel_mtl.estimators:Exact",
        _OMD,
        "dense autograd through the look-ahead (reference)",
        "m Jacobian rows through the one-step look-ahead: for tests and benchmarks",
    ),
}


def build_balancer(name: str, num_tasks: int, **kwargs: Any) -> Balancer:
    """The balancer registered as ``name`` for ``num_tasks`` tasks (``kwargs`` go to its constructor)."""
    if name not in BALANCERS:
        raise ValueError(f"unknown balancer {name!r}; choose one of {sorted(BALANCERS)}")
    info = BALANCERS[name]
    balancer: Balancer = info.resolve()(num_tasks, **{**dict(info.defaults), **kwargs})
    return balancer


def build_estimator(name: str, **kwargs: Any) -> Any:
    """The estimator registered as ``name`` (``kwargs`` go to its constructor)."""
    if name not in ESTIMATORS:
        raise ValueError(f"unknown estimator {name!r}; choose one of {sorted(ESTIMATORS)}")
    return ESTIMATORS[name].resolve()(**kwargs)


def method_table() -> list[MethodInfo]:
    """Every registered balancer, then every estimator."""
    return [*BALANCERS.values(), *ESTIMATORS.values()]


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
