"""A balancer inside PyTorch Lightning's manual optimization.

    pip install lightning
    python examples/lightning_manual.py

``training_step`` follows a loss balancer's low-level path: weights from the detached
losses, ``manual_backward(weights @ losses)``, ``optimizer.step()``, then
``balancer.update(losses, losses_after)``, with the losses on the same batch after the
step for the balancers that need them (``"losses_after" in balancer.needs``: MARIGOLD,
FAMO). The balancer is a submodule, so Lightning checkpoints its state
(upper-level variables, their optimizer and the random generator) with the model's;
``configure_optimizers`` gives the model's optimizer the network's parameters only.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

import bilevel_mtl as bm
from bilevel_mtl.balancers import LossBalancer

NUM_TASKS = 2


def make_loader(batch_size: int = 32) -> DataLoader[tuple[Tensor, ...]]:
    """Two regression tasks on the same inputs, in a fixed order."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=generator)
    y = torch.stack([x[:, 0] - x[:, 1], 5 * torch.sin(x[:, 2])], dim=1)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False)


def make_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, NUM_TASKS))


def task_losses(net: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    return ((net(x) - y) ** 2).mean(dim=0)


class BalancedRegression(L.LightningModule):
    """Multi-task regression trained with a balancer by manual optimization."""

    def __init__(self, net: nn.Module, balancer: LossBalancer, lr: float = 1e-2) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.net = net
        self.balancer = balancer
        self.lr = lr

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        optimizer = self.optimizers()
        losses = task_losses(self.net, x, y)
        weights = self.balancer.weights(losses.detach())
        optimizer.zero_grad()
        self.manual_backward(weights @ losses)
        optimizer.step()
        after = None
        if self.balancer.needs_losses_after:
            with torch.no_grad():
                after = task_losses(self.net, x, y)
        self.balancer.update(losses.detach(), after)  # the balancer's state changes, after the step
        self.log_dict({f"loss/{i}": loss for i, loss in enumerate(losses.detach())})
        self.log_dict({f"weight/{i}": weight for i, weight in enumerate(weights)})

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.net.parameters(), lr=self.lr)


def main() -> None:
    module = BalancedRegression(make_net(), bm.Marigold(NUM_TASKS))
    trainer = L.Trainer(max_epochs=5, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False)
    trainer.fit(module, make_loader())
    print({name: round(float(value), 4) for name, value in trainer.callback_metrics.items()})


if __name__ == "__main__":
    main()
