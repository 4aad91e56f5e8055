"""FAMO: fast adaptive multitask optimization."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .._checks import check_nonnegative, check_positive
from .base import LossBalancer

OptimizerFactory = Callable[[list[nn.Parameter]], torch.optim.Optimizer]


def famo_weights(logits: Tensor, gaps: Tensor) -> Tensor:
    r"""FAMO's loss weights :math:`w_i = \frac{z_i/D_i}{\sum_j z_j/D_j}`.

    With :math:`z=\operatorname{softmax}(\xi)`, they are the gradient weights of FAMO's
    surrogate :math:`c\sum_i z_i\log D_i` with :math:`c=(\sum_j z_j/D_j)^{-1}` detached, where
    :math:`D_i = f_i - b_i + \epsilon` (``gaps``).
    """
    ratios = torch.softmax(logits, 0) / gaps
    return ratios / ratios.sum()


def famo_logit_gradient(logits: Tensor, gaps_before: Tensor, gaps_after: Tensor) -> Tensor:
    r"""The gradient FAMO feeds its logit optimizer: :math:`z\odot(\delta - z^\top\delta)`,

    with :math:`\delta_i = \log D_i - \log D_i'` the log-loss decrease of the step
    (the Jacobian of the softmax applied to δ).
    """
    z = torch.softmax(logits, 0)
    delta = gaps_before.log() - gaps_after.log()
    return z * (delta - z @ delta)


class FAMO(LossBalancer):
    r"""FAMO (Liu et al. 2023, "FAMO: Fast Adaptive Multitask Optimization", Algorithm 1).

    With logits ξ (0 at start), :math:`z=\operatorname{softmax}(\xi)` and
    :math:`D_i = f_i - b_i + 10^{-8}`, the model descends
    :math:`c\sum_i z_i \log D_i`, i.e. weights :math:`w_i\propto z_i/D_i` summing to 1
    (:func:`famo_weights`); after the model's step the losses :math:`D'` on the *same*
    batch give :math:`\delta=\log D-\log D'` and the logits take one step of
    Adam(``lr`` = 0.025, ``weight_decay`` = γ) on :math:`z\odot(\delta-z^\top\delta)`
    (:func:`famo_logit_gradient`). Costs one extra forward per step; O(1) in ``m``.

    Needs the losses after the step: :class:`~bilevel_mtl.BalancedOptimizer` recomputes them;
    in your own loop pass them to :meth:`update` (computed under ``no_grad``).
    Choices: γ = 1e-3 (the paper's NYUv2, CelebA and QM9 scripts; 1e-2 for Cityscapes and
    ``famo.py``; 0 for the toy; 1e-5 in the library class), lower bounds ``b`` = 0 unless
    ``min_losses`` is given (the toy's ``-21``). Losses must exceed ``b``. The update is
    invariant to per-task loss scales up to its length when ``b = 0``.
    """

    name = "famo"
    reference = "Liu et al. 2023 (NeurIPS)"
    summary = "log-loss decrease balancing, one extra forward"
    needs = frozenset({"losses_after"})
    simplex = True
    stateful = True
    scale_invariance = "direction"
    min_losses: Tensor

    def __init__(
        self,
        num_tasks: int,
        *,
        lr: float = 0.025,
        gamma: float = 1e-3,
        min_losses: Sequence[float] | Tensor | None = None,
        eps: float = 1e-8,
        optimizer: OptimizerFactory | None = None,
    ) -> None:
        super().__init__(num_tasks)
        lr = check_positive("lr", lr)
        gamma = check_nonnegative("gamma", gamma)
        eps = check_nonnegative("eps", eps)
        bounds = (
            torch.zeros(num_tasks) if min_losses is None else torch.as_tensor(min_losses, dtype=torch.float32)
        )
        if bounds.shape != (num_tasks,) or not bool(torch.isfinite(bounds).all()):
            raise ValueError(f"min_losses must be {num_tasks} finite numbers, got {min_losses!r}")
        self.eps = float(eps)
        self.logits = nn.Parameter(torch.zeros(num_tasks))
        self.register_buffer("min_losses", bounds.clone())
        factory = optimizer or (lambda params: torch.optim.Adam(params, lr=lr, weight_decay=gamma))
        self.optimizer = factory([self.logits])

    def _gaps_of(self, losses: Tensor) -> Tensor:
        gaps = losses.detach().to(self.logits) - self.min_losses + self.eps
        if bool((gaps <= 0).any()):
            bad = [i for i, value in enumerate(gaps.tolist()) if value <= 0]
            raise ValueError(
                f"FAMO takes the log of f_i - b_i: tasks {bad} are not above their lower bounds "
                f"min_losses={self.min_losses.tolist()}; pass lower bounds of the losses as min_losses"
            )
        return gaps

    def _weights(self, losses: Tensor) -> Tensor:
        return famo_weights(self.logits.detach(), self._gaps_of(losses)).to(losses)

    def _update(self, losses: Tensor, losses_after: Tensor | None) -> None:
        assert losses_after is not None
        before, after = self._gaps_of(losses), self._gaps_of(losses_after)
        self.optimizer.zero_grad(set_to_none=True)
        self.logits.grad = famo_logit_gradient(self.logits.detach(), before, after)
        self.optimizer.step()

    def get_extra_state(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
