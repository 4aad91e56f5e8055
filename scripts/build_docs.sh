#!/usr/bin/env bash
# Build the documentation with warnings as errors, then run every example on it.
#   scripts/build_docs.sh            (from any directory; uses the active Python)
# Needs the package's `docs` extra (sphinx, myst-parser, furo, sphinx-mathjax-offline).
# Output: docs/_build/html; scripts/check_docs_math.py then checks its formulas in Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
rm -rf docs/_build
# -W: warnings are errors; --keep-going: report all of them; -n: every reference into the package resolves.
"$PYTHON" -m sphinx -W --keep-going -n -q -b html -d docs/_build/doctrees docs docs/_build/html
"$PYTHON" -m sphinx -W --keep-going -n -q -b doctest -d docs/_build/doctrees docs docs/_build/doctest
