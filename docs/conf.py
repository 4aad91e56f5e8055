"""Sphinx configuration of the bilevel-mtl documentation (MyST Markdown pages, autodoc API)."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Document (and run the examples of) this checkout's package, even where another copy is installed.
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE / "_ext"))

import bilevel_mtl  # noqa: E402

project = "bilevel-mtl"
author = "bilevel-mtl developers"
copyright = "2026, bilevel-mtl developers"
release = bilevel_mtl.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    # MathJax 3 copied into _static/mathjax: formulas render with no network (no CDN).
    "sphinx-mathjax-offline",
    "sphinx.ext.doctest",
    "public_api",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "_ext", "benchmarks/_tables", "Thumbs.db", ".DS_Store"]
root_doc = "index"

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autoclass_content = "class"
napoleon_google_docstring = True
napoleon_numpy_docstring = True

# Every cross-reference into the package must resolve (torch and the standard library
# are not linked: the build runs offline, without intersphinx inventories).
nitpicky = True
# StepContext is built by BalancedOptimizer; the random-state snapshot it takes is internal.
nitpick_ignore = [("py:class", "bilevel_mtl.context.RngSnapshot")]
nitpick_ignore_regex = [(r"py:.*", r"(?!bilevel_mtl\.).*"), (r"py:.*", r"bilevel_mtl\.(.*\.)?_.*")]

doctest_global_setup = """
import importlib.util

import torch
torch.set_num_threads(1)
torch.manual_seed(0)
"""
doctest_test_doctest_blocks = "default"

html_theme = "furo"
html_title = f"bilevel-mtl {release}"
html_static_path: list[str] = []
