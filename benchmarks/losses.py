"""Per-task loss functions of the benchmark suites (each returns a scalar tensor).

Dense losses follow the MTAN / LibMTL conventions: cross entropy with ignored
label ``-1``; L1 depth error over valid pixels (depth ``!= 0``); ``1 - cos`` of the
angle between predicted and true normals over valid pixels (true normal ``!= 0``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = -1


def segmentation_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Pixel-wise cross entropy; logits ``[B, C, H, W]``, labels ``[B, H, W]`` (``-1`` ignored)."""
    return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` where ``mask``; 0 (still attached to the graph) when nothing is valid."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def depth_loss(prediction: Tensor, depth: Tensor) -> Tensor:
    """Mean absolute error over valid pixels; both ``[B, 1, H, W]``."""
    return _masked_mean((prediction - depth).abs(), depth != 0)


def normals_loss(prediction: Tensor, normals: Tensor) -> Tensor:
    """Mean ``1 - <n̂, n>`` over valid pixels; ``[B, 3, H, W]``, prediction of unit length."""
    valid = normals.abs().sum(dim=1) != 0
    return _masked_mean(1.0 - (prediction * normals).sum(dim=1), valid)


def masked_binary_cross_entropy(logits: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
    """Binary cross entropy with logits (soft targets allowed), averaged where ``mask``."""
    values = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return values.mean() if mask is None else _masked_mean(values, mask)


def columnwise_mse(prediction: Tensor, target: Tensor) -> Tensor:
    """Mean squared error of each column: ``[B, m] → [m]``."""
    return (prediction - target).pow(2).mean(dim=0)


def columnwise_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross entropy of each task column: logits ``[B, m, C]``, labels ``[B, m]`` → ``[m]``."""
    return F.cross_entropy(logits.transpose(1, 2), labels, reduction="none").mean(dim=0)


def stack_losses(losses: list[Tensor]) -> Tensor:
    """Concatenate scalar and vector losses into one ``[m]`` vector."""
    return torch.cat([loss.reshape(-1) for loss in losses])
