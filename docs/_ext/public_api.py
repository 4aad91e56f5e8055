"""Sphinx extension: ``.. public-api:: MODULE`` documents every name of ``MODULE.__all__``.

Each name is documented once, in the most specific public module exporting it
(see ``api_inventory``); elsewhere the summary table links there, and a reference to
the alias (``bilevel_mtl.Marigold``, or a member such as ``bilevel_mtl.Balancer.decide``)
resolves to it. The table shows each name's first sentence, whole. Undocumented names,
summaries that are not one whole sentence, public modules without a ``public-api``
directive, and names that did not end up in the Python domain are reported as
warnings, so ``sphinx-build -W`` fails on them.
"""

from __future__ import annotations

from typing import Any

import api_inventory as inventory
from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)

AUTODOC = {"class": "autoclass", "exception": "autoexception", "function": "autofunction"}


class PublicApi(SphinxDirective):
    """Summary table of ``MODULE.__all__`` followed by the entries documented here."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        module = self.arguments[0]
        items = inventory.public_names(module)
        pages: dict[str, set[str]] = _pages(self.env)
        pages.setdefault(self.env.docname, set()).add(module)
        lines = [f".. py:module:: {module}", "", ".. list-table::", "   :widths: 35 65", ""]
        for item in items:
            where = "" if item.home == module else f" (documented in :py:mod:`{item.home}`)"
            lines += [f"   * - :py:obj:`~{item.target}`", f"     - {inventory.summary(item)}{where}"]
        lines.append("")
        for item in items:
            if item.home != module:
                continue
            for problem in inventory.problems(item):
                logger.warning("public name %s", problem, location=self.get_location())
            if item.kind == "data":
                lines += [f".. py:data:: {item.name}", f"   :module: {item.home}", ""]
                lines += [f"   {line}" for line in inventory.data_doc(item).splitlines()] + [""]
            else:
                lines += [f".. {AUTODOC[item.kind]}:: {item.target}", ""]
        content = StringList(lines, source=self.get_source_info()[0])
        container = nodes.container()
        self.state.nested_parse(content, self.content_offset, container)
        return list(container.children)


def _check_complete(app: Sphinx, env: Any) -> None:
    """Every public module has a ``public-api`` directive and every public name a Python entry."""
    seen = set().union(*_pages(env).values())
    objects = env.get_domain("py").objects
    for module in inventory.public_modules():
        if module not in seen:
            logger.warning("public module %s has no '.. public-api:: %s' page in the docs", module, module)
            continue
        for item in inventory.public_names(module):
            if item.target not in objects:
                logger.warning("public name %s.%s is missing from the API reference", module, item.name)


def _resolve_alias(app: Sphinx, env: Any, node: Any, contnode: nodes.Element) -> nodes.Element | None:
    """``bilevel_mtl.Marigold`` (a re-export), or one of its members (``bilevel_mtl.Balancer.decide``),
    resolves to where it is documented."""
    if node.get("refdomain") != "py":
        return None
    parts = node.get("reftarget", "").split(".")
    modules = inventory.public_modules()
    for split in range(len(parts) - 1, 0, -1):
        module, name, member = ".".join(parts[:split]), parts[split], parts[split + 1 :]
        if module not in modules:
            continue
        for item in inventory.public_names(module, modules):
            if item.name == name and item.home != module:
                target = ".".join([item.target, *member])
                domain = env.get_domain("py")
                node["reftarget"] = target
                resolved: nodes.Element | None = domain.resolve_xref(
                    env, node["refdoc"], app.builder, node["reftype"], target, node, contnode
                )
                return resolved
        return None
    return None


def _pages(env: Any) -> dict[str, set[str]]:
    """``{docname: modules documented there}``, kept in the build environment."""
    if not hasattr(env, "public_api_pages"):
        env.public_api_pages = {}
    pages: dict[str, set[str]] = env.public_api_pages
    return pages


def _purge(app: Sphinx, env: Any, docname: str) -> None:
    _pages(env).pop(docname, None)


def _merge(app: Sphinx, env: Any, docnames: set[str], other: Any) -> None:
    _pages(env).update({d: m for d, m in _pages(other).items() if d in docnames})


def setup(app: Sphinx) -> dict[str, Any]:
    app.setup_extension("sphinx.ext.autodoc")
    app.add_directive("public-api", PublicApi)
    app.connect("env-check-consistency", _check_complete)
    app.connect("missing-reference", _resolve_alias)
    app.connect("env-purge-doc", _purge)
    app.connect("env-merge-info", _merge)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
