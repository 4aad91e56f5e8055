"""``import bilevel_mtl`` and ``bilevel-mtl list`` load the library only: no benchmark harness,
no plotting, no scikit-learn, no progress bars (each checked in a fresh interpreter)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import bilevel_mtl

FORBIDDEN = ("benchmarks", "matplotlib", "sklearn", "tqdm")

# torch.hub imports tqdm whenever it is installed; hide it from torch only, so that the check
# sees what bilevel_mtl imports. Then run CODE and print the package's path and sys.modules.
PROBE = """
import json, sys
sys.modules["tqdm"] = None
import torch
del sys.modules["tqdm"]
{code}
import bilevel_mtl
print(json.dumps({{"package": bilevel_mtl.__file__, "modules": sorted(sys.modules)}}))
"""

CODE = {
    "import": "import bilevel_mtl",
    # what the `bilevel-mtl` console script runs
    "list": "from bilevel_mtl.cli import main\nassert main(['list']) == 0",
}


def loaded_modules(code: str) -> list[str]:
    """The modules a fresh interpreter holds after running ``code`` (with this copy of the package)."""
    env = dict(os.environ)
    here = str(Path(bilevel_mtl.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([here, *filter(None, [env.get("PYTHONPATH")])])
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(code=code)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(report["package"]).resolve() == Path(bilevel_mtl.__file__).resolve()
    modules: list[str] = report["modules"]
    return modules


@pytest.mark.parametrize("what", sorted(CODE))
def test_the_library_does_not_import_the_harness_or_its_dependencies(what: str) -> None:
    modules = loaded_modules(CODE[what])
    assert "bilevel_mtl" in modules
    unwanted = [m for m in modules if m.split(".")[0] in FORBIDDEN]
    assert unwanted == [], f"{what} imported {unwanted}"


def test_the_probe_sees_an_import_of_a_forbidden_module() -> None:
    modules = loaded_modules("import tqdm")
    assert "tqdm" in modules
