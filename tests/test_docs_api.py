"""Every public name is documented and has its place in the API reference.

The rules live in docs/_ext/api_inventory.py, which the documentation build applies
too (the ``public-api`` directive and its consistency check, under ``sphinx -W``).
This test applies them without Sphinx, so a missing docstring, or a summary that is
not a whole first sentence, fails the test suite.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
sys.path.insert(0, str(DOCS / "_ext"))

import api_inventory as inventory  # noqa: E402

MODULES = inventory.public_modules()
NAMES = [item for module in MODULES for item in inventory.public_names(module, MODULES)]


def test_the_public_modules_are_found() -> None:
    expected = {"criteria", "estimators", "lookahead", "parametrizations", "balancers", "logging"}
    expected |= {"functional", "registry", "distributed"}
    assert {f"bilevel_mtl.{name}" for name in expected} | {"bilevel_mtl"} <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_each_public_module_has_a_reference_page(module: str) -> None:
    pattern = re.compile(rf"^\.\. public-api:: {re.escape(module)}\s*$", re.MULTILINE)
    pages = [page for page in sorted((DOCS / "api").glob("*.md")) if pattern.search(page.read_text())]
    assert len(pages) == 1, f"{module} needs exactly one '.. public-api:: {module}' in docs/api/*.md"


@pytest.mark.parametrize("item", NAMES, ids=[f"{item.module}.{item.name}" for item in NAMES])
def test_each_public_name_is_documented(item: inventory.PublicName) -> None:
    assert inventory.problems(item) == []


def test_each_public_name_is_documented_in_exactly_one_module() -> None:
    homes: dict[int, set[str]] = {}
    for item in NAMES:
        homes.setdefault(id(item.obj), set()).add(item.target)
    assert all(len(targets) == 1 for targets in homes.values()), homes


def test_the_documentation_check_catches_what_it_should() -> None:
    class Undocumented:
        def method(self) -> None:
            pass

    class Documented:
        """Has a docstring."""

        def method(self) -> None:
            """So has its method."""

        def _private(self) -> None:
            pass

    class Override(Documented):
        """An override without a docstring inherits its parent's."""

        def method(self) -> None:
            pass

    class Bare(Documented):
        def other(self) -> None:
            pass

    def check(obj: object) -> list[str]:
        return inventory.problems(inventory.PublicName("bilevel_mtl.x", "name", obj, "bilevel_mtl.x"))

    assert check(Undocumented) == [
        "bilevel_mtl.x.name: no docstring",
        "bilevel_mtl.x.name.method: no docstring",
    ]
    assert check(Documented) == []
    assert check(Override) == []
    assert check(Bare) == ["bilevel_mtl.x.name: no docstring", "bilevel_mtl.x.name.other: no docstring"]
    assert check(object()) == ["bilevel_mtl.x.name: data without a '#:' comment or docstring"]
    assert check(lambda: None) == ["bilevel_mtl.x.name: no docstring"]


@pytest.mark.parametrize(
    ("doc", "sentence"),
    [
        ("Wraps the optimizer.\n\nMore.", "Wraps the optimizer."),
        ("FAMO (Liu et al. 2023, Alg. 1). Fast.", "FAMO (Liu et al. 2023, Alg. 1)."),
        ("Weights, e.g. softmax ones\non the simplex. More.", "Weights, e.g. softmax ones on the simplex."),
        ('Ratio :math:`a. B` of ``x. Y`` and "T. U". More.', 'Ratio :math:`a. B` of ``x. Y`` and "T. U".'),
        ("Sums the losses,\n\nwith weights. More.", "Sums the losses, with weights."),
        ("Step:\n\n.. math:: w = 1 .\n\nMore.", "Step: :math:`w = 1`."),
        (
            "Baseline:\n\n.. math:: g = a,\\qquad b_{\\quad} = 1\n\n(Ref et al. 2005). More.",
            "Baseline: :math:`g = a`, :math:`b_{\\quad} = 1` (Ref et al. 2005).",
        ),
        ("Step:\n\n.. math:: x\n\n``y`` is new.", "Step: :math:`x`"),
        ("", ""),
    ],
)
def test_the_summary_is_the_whole_first_sentence(doc: str, sentence: str) -> None:
    assert inventory.first_sentence(doc) == sentence


@pytest.mark.parametrize(
    ("summary", "problem"),
    [
        ("", "no sentence"),
        ("FAMO (Liu et al.", "cut inside markup or brackets"),
        ("The ratio :math:`a.", "cut inside markup or brackets"),
        ("Step: :math:`x`", "does not end with a full stop"),
        ("Forward differences with a baseline:", "does not end with a full stop"),
        ("As in Liu et al.", "ends at an abbreviation"),
        ("One sentence. Another one.", "more than one sentence"),
    ],
)
def test_the_summary_check_catches_a_cut_sentence(summary: str, problem: str) -> None:
    assert (inventory.sentence_problem(summary) or "").startswith(problem)


def test_a_whole_sentence_passes_the_summary_check() -> None:
    assert inventory.sentence_problem('FAMO (Liu et al. 2023, "Fast.", Alg. 1), e.g. here.') is None


def test_a_first_sentence_without_a_full_stop_is_a_documentation_problem() -> None:
    def step() -> None:
        """Step:

        .. math:: x

        ``y`` is new.
        """

    [problem] = inventory.problems(inventory.PublicName("bilevel_mtl.x", "step", step, "bilevel_mtl.x"))
    assert problem.startswith("bilevel_mtl.x.step: the summary is not its first sentence, does not end")
