"""What the API reference must contain: the public names of ``bilevel_mtl`` and their documentation.

Pure Python (no Sphinx), shared by the ``public-api`` Sphinx directive and by
``tests/test_docs_api.py`` so that the build and the test apply the same rules:

* the public modules are ``bilevel_mtl`` and every direct child module or subpackage
  whose name has no leading underscore and that defines ``__all__`` (minus
  :data:`INTERNAL_MODULES`);
* every name in a public module's ``__all__`` is documented once, in the most specific
  public module that exports the same object (``Marigold`` in ``bilevel_mtl.balancers``,
  ``BalancedOptimizer`` in ``bilevel_mtl``); the others link to it;
* a class, function or exception needs its own docstring, and so does each public
  method it defines (an override may inherit its parent's); module-level data needs
  a ``#:`` comment above its assignment (or a string right below it);
* the summary table shows the first sentence of each documentation, whole: it may run
  over a display formula (shown inline) and into the next paragraph, and an
  abbreviation (``et al.``) or a period inside markup (``:math:`...```) ends nothing.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
import sys
from dataclasses import dataclass
from types import ModuleType

ROOT = "bilevel_mtl"

# Child modules that are not part of the library's Python API (the command line and its demo).
# The benchmark harness is not in the package at all: it is the repository's `benchmarks/`.
INTERNAL_MODULES = frozenset({f"{ROOT}.cli", f"{ROOT}.demo"})

# Dunder names in ``__all__`` and the sentence that documents them.
SPECIAL_NAMES = {"__version__": "The version of the installed package."}


@dataclass(frozen=True)
class PublicName:
    """One name of one public module's ``__all__``."""

    module: str
    name: str
    obj: object
    home: str
    """The public module where the object is documented (may be ``module`` itself)."""

    @property
    def target(self) -> str:
        """The documented full name, e.g. ``bilevel_mtl.balancers.Marigold``."""
        return f"{self.home}.{self.name}"

    @property
    def kind(self) -> str:
        """``class``, ``exception``, ``function`` or ``data``."""
        if inspect.isclass(self.obj):
            return "exception" if issubclass(self.obj, BaseException) else "class"
        if inspect.isroutine(self.obj):
            return "function"
        return "data"


def public_modules() -> list[str]:
    """``bilevel_mtl`` and its public child modules that define ``__all__``, sorted."""
    package = importlib.import_module(ROOT)
    found = [ROOT]
    for info in pkgutil.iter_modules(package.__path__, prefix=f"{ROOT}."):
        short = info.name.rsplit(".", 1)[1]
        if short.startswith("_") or info.name in INTERNAL_MODULES:
            continue
        if hasattr(importlib.import_module(info.name), "__all__"):
            found.append(info.name)
    return sorted(found)


def _exports(module: str) -> list[str]:
    names = getattr(importlib.import_module(module), "__all__", None)
    if names is None:
        raise ValueError(f"{module} has no __all__")
    return list(names)


def public_names(module: str, modules: list[str] | None = None) -> list[PublicName]:
    """The names of ``module.__all__`` with the module where each one is documented."""
    modules = public_modules() if modules is None else modules
    mod = importlib.import_module(module)
    result = []
    for name in _exports(module):
        obj = getattr(mod, name)
        homes = [m for m in modules if name in _exports(m) and getattr(sys.modules[m], name) is obj]
        home = max(homes, key=lambda m: (m.count("."), m)) if homes else module
        result.append(PublicName(module, name, obj, home))
    return result


def _data_comment(module: ModuleType, name: str) -> str:
    """The ``#:`` comment above (or the string right below) ``name = ...`` in ``module``'s source."""
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):
        return ""
    lines = source.splitlines()
    body = ast.parse(source).body
    for index, node in enumerate(body):
        if not isinstance(node, ast.Assign | ast.AnnAssign):
            continue
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        if not any(isinstance(t, ast.Name) and t.id == name for t in targets):
            continue
        comment = []
        row = node.lineno - 2
        while row >= 0 and lines[row].strip().startswith("#:"):
            comment.insert(0, lines[row].strip()[2:].strip())
            row -= 1
        if comment:
            return "\n".join(comment)
        after = body[index + 1] if index + 1 < len(body) else None
        if isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
            return inspect.cleandoc(str(after.value.value))
    return ""


def data_doc(item: PublicName) -> str:
    """Documentation of a data name: from :data:`SPECIAL_NAMES` or its defining module's comment."""
    if item.name in SPECIAL_NAMES:
        return SPECIAL_NAMES[item.name]
    candidates = [m for m in list(sys.modules.values()) if m is not None]
    for module in candidates:
        if not getattr(module, "__name__", "").startswith(ROOT):
            continue
        if vars(module).get(item.name) is item.obj:
            doc = _data_comment(module, item.name)
            if doc:
                return doc
    return ""


def own_doc(obj: object) -> str:
    """The object's own docstring (a class does not inherit its base's here)."""
    doc = vars(obj).get("__doc__") if inspect.isclass(obj) else getattr(obj, "__doc__", None)
    return inspect.cleandoc(doc) if isinstance(doc, str) else ""


def undocumented_members(cls: type) -> list[str]:
    """Public methods and properties defined in ``cls`` with no docstring, not even an inherited one."""
    missing = []
    for attr, value in vars(cls).items():
        if attr.startswith("_"):
            continue
        function = value.fget if isinstance(value, property) else value
        if isinstance(function, staticmethod | classmethod):
            function = function.__func__
        if not inspect.isfunction(function):
            continue
        inherited = any(getattr(getattr(base, attr, None), "__doc__", None) for base in cls.__mro__[1:])
        if not function.__doc__ and not inherited:
            missing.append(attr)
    return missing


# Words whose final period ends no sentence when the text goes on ("Liu et al. 2023").
ABBREVIATIONS = frozenset({"al", "alg", "cf", "e.g", "eq", "eqs", "fig", "i.e", "resp", "sec", "vs"})

# Inline markup, whose periods end no sentence: ``literal``, :role:`text`, `text`, "quotation".
_MARKUP = re.compile(r"``.+?``|(?::[\w:.+-]+:)?`[^`]+`|\"[^\"]*\"", re.DOTALL)
# A sentence's final punctuation, possibly closed by brackets or quotes: before a space or
# the end of a paragraph (_END), at the very end of a summary (_FINAL).
_STOP = r"[.?!][)\]\"'*]*"
_END = re.compile(_STOP + r"(?=\s|$)")
_FINAL = re.compile(_STOP + r"$")
_FULL_STOPS = frozenset(".?!")


def _mask(text: str) -> str:
    """``text`` with its inline markup blanked out (same length)."""
    return _MARKUP.sub(lambda match: "_" * len(match.group()), text)


def _word_before(masked: str, index: int) -> str:
    """The lower-cased word that ends at ``index`` (``"al"`` in ``"Liu et al."``)."""
    return re.split(r"[\s(\[]", masked[:index])[-1].lower()


def _blocks(doc: str) -> list[tuple[str, str]]:
    """The docstring as ``("text", paragraph)`` and ``("math", formula)`` blocks, each on one line;
    any other directive ends the list."""
    blocks: list[tuple[str, str]] = []
    lines = doc.strip().splitlines()
    row = 0
    while row < len(lines):
        line = lines[row].strip()
        row += 1
        if not line:
            continue
        if line.startswith(".. "):
            if not line.startswith(".. math::"):
                break
            formula = [line.removeprefix(".. math::").strip()]
            while row < len(lines) and (not lines[row].strip() or lines[row][:1].isspace()):
                part = lines[row].strip()
                if not part.startswith(":"):  # an option such as :label:
                    formula.append(part)
                row += 1
            blocks.append(("math", " ".join(part for part in formula if part)))
            continue
        paragraph = [line]
        while row < len(lines) and lines[row].strip() and not lines[row].lstrip().startswith(".. "):
            paragraph.append(lines[row].strip())
            row += 1
        blocks.append(("text", " ".join(paragraph)))
    return blocks


def _sentence_end(text: str) -> int | None:
    """Where the first sentence of ``text`` ends (past its final punctuation); None if it runs on."""
    masked = _mask(text)
    for match in _END.finditer(masked):
        rest = masked[match.end() :].lstrip()
        runs_on = re.match(r"[a-z0-9]", rest) or _word_before(masked, match.start()) in ABBREVIATIONS
        if not (rest and runs_on):
            return match.end()
    return None


def _inline_math(formula: str) -> str:
    """A display formula as inline math: one ``:math:`` role per part between top-level
    ``\\quad``/``\\qquad`` (so that a table cell can wrap between them), commas outside."""
    parts, depth, start = [], 0, 0
    for match in re.finditer(r"\\[{}]|[{}]|\\q?quad(?![A-Za-z])", formula):
        token = match.group()
        if token in "{}":
            depth += 1 if token == "{" else -1
        elif "quad" in token and depth == 0:
            parts.append(formula[start : match.start()])
            start = match.end()
    parts.append(formula[start:])
    roles = []
    for part in parts:
        tex = part.strip().rstrip(",; ")
        roles.append(f":math:`{tex}`{part.strip()[len(tex) :].strip()}")
    return " ".join(roles)


def first_sentence(doc: str) -> str:
    """The first sentence of a reST docstring, on one line (empty for an empty docstring).

    A display formula in it becomes inline math, its trailing punctuation moved out; the
    sentence goes on after the formula if that punctuation is a comma, colon or semicolon,
    or if there is none and the next paragraph starts with a lower-case word or a bracket.
    """
    parts = []
    blocks = _blocks(doc)
    for index, (kind, content) in enumerate(blocks):
        if kind == "text":
            end = _sentence_end(content)
            parts.append(content[:end])  # all of it when the sentence runs on (end is None)
            if end is None:
                continue
            break
        formula = content.rstrip(".,;:?! ")
        punctuation = content[len(formula) :].strip()[-1:]
        parts.append(_inline_math(formula) + punctuation)
        following = blocks[index + 1][1] if index + 1 < len(blocks) else ""
        if punctuation in _FULL_STOPS or not (punctuation or re.match(r"[a-z(]", following)):
            break
    return " ".join(parts)


def sentence_problem(text: str) -> str | None:
    """Why ``text`` is not one whole sentence (None when it is)."""
    masked = _mask(text).rstrip()
    if not masked:
        return "no sentence"
    if "`" in masked or masked.count("(") != masked.count(")") or masked.count("[") != masked.count("]"):
        return f"cut inside markup or brackets: {text!r}"
    final = _FINAL.search(masked)
    if final is None:
        return f"does not end with a full stop: {text!r}"
    if _word_before(masked, final.start()) in ABBREVIATIONS:
        return f"ends at an abbreviation: {text!r}"
    if _sentence_end(text) != len(masked):
        return f"more than one sentence: {text!r}"
    return None


def problems(item: PublicName) -> list[str]:
    """Why ``item`` is not properly documented (empty when it is)."""
    label = f"{item.module}.{item.name}"
    doc = data_doc(item) if item.kind == "data" else own_doc(item.obj)
    if not doc:
        missing = "data without a '#:' comment or docstring" if item.kind == "data" else "no docstring"
        found = [f"{label}: {missing}"]
    else:
        problem = sentence_problem(first_sentence(doc))
        found = [] if problem is None else [f"{label}: the summary is not its first sentence, {problem}"]
    if inspect.isclass(item.obj):
        found += [f"{label}.{attr}: no docstring" for attr in undocumented_members(item.obj)]
    return found


def summary(item: PublicName) -> str:
    """The first sentence of the documentation, for the summary table."""
    return first_sentence(data_doc(item) if item.kind == "data" else own_doc(item.obj))
