"""The example scripts under examples/ run, and do what the tutorials say they do."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _example(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    # On sys.path (not loaded from a file spec) so that spawned workers can import it too.
    monkeypatch.syspath_prepend(str(EXAMPLES))
    return importlib.import_module(name)


def test_ddp_two_gloo_processes_train_like_one_process_on_the_whole_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ddp = _example("ddp_gloo", monkeypatch)
    single = ddp.run(1, steps=8, dtype=torch.float64)[0]
    replicas = ddp.run(2, steps=8, dtype=torch.float64)
    assert single.keys() == replicas[0].keys() == replicas[1].keys()
    for key in single:
        # the replicas are identical: same weights, same upper-level updates, DDP-averaged gradients
        torch.testing.assert_close(replicas[1][key], replicas[0][key], rtol=0, atol=0)
        # and equal to one process on the whole batch, up to the rounding of the all-reduce
        torch.testing.assert_close(replicas[0][key], single[key], rtol=0, atol=1e-12)
    # the upper level moved away from its initial zeros, so the comparison covers it
    assert float(single["balancer.parametrization.logits"].abs().max()) > 0


@pytest.mark.filterwarnings("ignore:`isinstance\\(treespec, LeafSpec\\)` is deprecated:FutureWarning")
def test_lightning_manual_optimization_equals_the_plain_low_level_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lightning = pytest.importorskip("lightning")
    example = _example("lightning_manual", monkeypatch)
    import bilevel_mtl as bm

    module = example.BalancedRegression(example.make_net(), bm.Marigold(2, lr=1e-2))
    trainer = lightning.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, example.make_loader())

    net, balancer = example.make_net(), bm.Marigold(2, lr=1e-2)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(2):
        for x, y in example.make_loader():
            losses = example.task_losses(net, x, y)
            weights = balancer.weights(losses.detach())
            optimizer.zero_grad()
            (weights @ losses).backward()
            optimizer.step()
            after = None
            if balancer.needs_losses_after:  # the default re-measures its batch on every 16th step
                with torch.no_grad():
                    after = example.task_losses(net, x, y)
            balancer.update(losses.detach(), after)

    assert trainer.global_step == 2 * len(example.make_loader())
    for mine, reference in zip(module.net.parameters(), net.parameters(), strict=True):
        torch.testing.assert_close(mine, reference, rtol=0, atol=0)
    for key, value in balancer.state_dict().items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(module.balancer.state_dict()[key], value, rtol=0, atol=0)
    assert float(balancer.parametrization.logits.detach().abs().max()) > 0
