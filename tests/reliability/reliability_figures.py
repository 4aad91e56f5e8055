"""Print the figures quoted in docs/reliability.md and docs/tutorials/ddp.md:

    PYTHONPATH=src python tests/reliability/reliability_figures.py

For every case: the largest difference between the two DDP (and FSDP2) ranks and
between rank 0 and one process on the global batch; whether a resumed run in a new
process is bit-identical; whether a fresh balancer would change the resumed run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torch.multiprocessing as mp
from reliability_cases import CASE_NAMES, STATEFUL, identical, max_abs_difference, train
from reliability_workers import UNSYNCED_CONTROLS, data_parallel_rank
from test_data_parallel import STEPS, WORLD, _free_port, _tutorial_script

import bilevel_mtl as bm


def main() -> None:
    folder = Path(tempfile.mkdtemp())
    args = (WORLD, str(folder / "init"), str(folder), STEPS, str(_tutorial_script(folder)), _free_port())
    mp.spawn(data_parallel_rank, args=args, nprocs=WORLD)
    ranks = [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    full = {name: train(name, 6, save_at=3) for name in CASE_NAMES}
    torch.save({name: run.pop("checkpoint") for name, run in full.items()}, folder / "in.pt")
    here = Path(__file__).parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(bm.__file__).parents[1]), str(here)])}
    script = str(here / "reliability_resume.py")
    paths = [str(folder / "in.pt"), str(folder / "out.pt")]
    subprocess.run([sys.executable, script, *paths, "6"], check=True, env=env)
    resumed = torch.load(folder / "out.pt", weights_only=False)

    def cell(kind: str, name: str, single: dict[str, object]) -> str:
        a, b = ranks[0][kind][name], ranks[1][kind][name]
        if isinstance(a, str) or isinstance(b, str):
            return "refused" if "NotImplementedError" in str(a) else "error"
        return f"{max_abs_difference(a, b):.1e} / {max_abs_difference(a, single):.1e}"

    print(f"{WORLD} ranks, {STEPS} steps, float64; cells: ranks / rank 0 vs one process\n")
    print("| case | DDP | FSDP2 | resume bit-identical | state matters |")
    print("|---|---|---|---|---|")
    for name in CASE_NAMES:
        single = train(name, STEPS)
        tail = {**full[name], "records": full[name]["records"][3:]}
        same = identical(resumed[name]["resumed"], tail)
        matters = not identical(resumed[name]["fresh_balancer"]["records"], tail["records"])
        print(
            f"| {name} | {cell('ddp', name, single)} | {cell('fsdp', name, single)} | {same} | "
            f"{matters} ({'stateful' if name in STATEFUL else 'stateless'}) |"
        )
    for name in UNSYNCED_CONTROLS:
        a, b = ranks[0]["unsynced"][name], ranks[1]["unsynced"][name]
        print(f"control {name}, process_group=None: ranks differ by {max_abs_difference(a, b):.1e}")


if __name__ == "__main__":
    main()
