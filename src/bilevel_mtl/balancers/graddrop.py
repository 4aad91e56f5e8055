"""GradDrop: keep, per coordinate, only the gradients of one sign, drawn by sign purity."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from .base import forked
from .gradient import Combination, GradientBalancer


def graddrop_direction(
    jacobian: Tensor,
    generator: torch.Generator | None = None,
    leak: float = 0.0,
    inputs: Tensor | None = None,
) -> Tensor:
    r"""GradDrop's combined gradient :math:`\frac1m\sum_i (\ell + (1-\ell) M_i)\odot g_i`.

    Per coordinate, the positive sign purity :math:`P=\frac12(1+\sum_i g_i/\sum_i|g_i|)`
    and one uniform draw ``U`` give the masks
    :math:`M_i = [P>U][g_i>0] + [P<U][g_i<0]`: with probability ``P`` only the positive
    gradients pass, otherwise only the negative ones. ``jacobian`` is ``[m, ...]``.
    With ``inputs`` (the layer's activations ``z``, ``jacobian`` of shape
    ``[m, *z.shape]``), the signs are taken on :math:`\sum_{\text{batch}}\operatorname{sign}(z)\odot g_i`
    and the mask is shared across the batch, as in the paper. ``leak`` ∈ [0, 1] lets a
    fraction of every gradient through (0 in the paper).
    """
    if not 0.0 <= leak <= 1.0:
        raise ValueError(f"leak must be in [0, 1], got {leak!r}")
    if jacobian.dim() < 2:
        raise ValueError(f"jacobian must have one row per task, got shape {tuple(jacobian.shape)}")
    if not bool(torch.isfinite(jacobian).all()):
        raise ValueError("jacobian has non-finite entries (NaN or inf task gradients)")
    if inputs is not None:
        if tuple(inputs.shape) != tuple(jacobian.shape[1:]) or inputs.dim() < 1:
            raise ValueError(
                f"inputs of shape {tuple(inputs.shape)} do not match gradients {tuple(jacobian.shape)}"
            )
        signed = (jacobian * inputs.sign()).sum(dim=1)
    else:
        signed = jacobian
    total = signed.abs().sum(0)
    purity = 0.5 * (
        1 + torch.where(total > 0, signed.sum(0) / total.clamp(min=torch.finfo(total.dtype).tiny), 0)
    )
    draw = torch.rand(purity.shape, generator=generator, dtype=purity.dtype).to(purity.device)
    keep = ((purity > draw) & (signed > 0)) | ((purity < draw) & (signed < 0))
    if inputs is not None:
        keep = keep.unsqueeze(1).expand_as(jacobian)
    factor = leak + (1 - leak) * keep.to(jacobian.dtype)
    return (factor * jacobian).sum(0) / jacobian.shape[0]


class GradDrop(GradientBalancer):
    r"""GradDrop (Chen et al. 2020, "Just Pick a Sign: Optimizing Deep Multitask Models with Gradient
    Sign Dropout", Algorithm 1).

    .. math:: P = \tfrac12\Big(1+\frac{\sum_i g_i}{\sum_i |g_i|}\Big),\quad
              M_i = [P>U]\,[g_i>0] + [P<U]\,[g_i<0],\quad
              \theta \leftarrow \theta - \eta\,\tfrac1m\sum_i M_i\odot g_i

    elementwise, with ``U`` uniform per coordinate (the balancer's generator, ``seed``,
    saved in ``state_dict``). The paper places GradDrop at a layer's activations:
    ``shared=encoder, representation=True`` does that (signs of
    :math:`\sum_{\text{batch}}\operatorname{sign}(z)\odot\nabla_z f_i`, LibMTL's only mode);
    without it the rule runs on parameter gradients (TorchJD's mode). The result is not a
    combination of whole task gradients: the reported weights are LS's ``1/m``, which is
    also what the parameters outside ``shared`` get. Scale: ×1/m against the papers' sum.
    Invariance: a common positive gradient scale only scales the update (same draws).
    """

    name = "graddrop"
    reference = "Chen et al. 2020 (NeurIPS)"
    summary = "sign dropout by gradient purity"
    simplex = True
    stateful = True
    randomized = True
    scale_invariance = "common"
    requires: ClassVar[Mapping[str, str]] = {
        "shared": "optional: the encoder module; with representation=True, the paper's layer"
    }

    def __init__(
        self,
        num_tasks: int,
        *,
        leak: float = 0.0,
        seed: int = 0,
        shared: nn.Module | None = None,
        representation: bool = False,
    ) -> None:
        super().__init__(num_tasks, shared=shared, representation=representation)
        if not (0.0 <= leak <= 1.0 and math.isfinite(leak)):
            raise ValueError(f"leak must be in [0, 1], got {leak!r}")
        self.leak = float(leak)
        self.generator = torch.Generator().manual_seed(seed)

    def combine(self, jacobian: Tensor, losses: Tensor, representation: Tensor | None) -> Combination:
        generator = forked(self.generator)
        direction = graddrop_direction(jacobian, generator, self.leak, representation)
        weights = torch.full(
            (self.num_tasks,), 1.0 / self.num_tasks, dtype=jacobian.dtype, device=jacobian.device
        )
        direction = direction.reshape(-1) if representation is None else direction
        return Combination(weights, direction, state={"generator": generator.get_state()})

    def get_extra_state(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
