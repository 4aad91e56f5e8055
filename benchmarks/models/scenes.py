"""Encoder-decoder networks for dense prediction: SegNet-lite and MTAN-lite.

Both share a SegNet-style backbone (Badrinarayanan et al. 2017): ``levels`` blocks of
two 3×3 conv-BN-ReLU layers with 2×2 max pooling, mirrored by a decoder that
un-pools with the saved indices. Width doubles per level from ``width``.

* :class:`SegNetLite` ("hard sharing"): every task head reads the decoder's output.
* :class:`MTANLite` (Liu et al. 2019, "End-to-End Multi-Task Learning with
  Attention"): each task owns soft attention masks, one per encoder and decoder
  block, that select from the shared features; shared transition convolutions
  carry a task's selected features from block to block.

Heads are ``3×3 conv-ReLU → 1×1 conv``; ``unit_outputs`` names heads whose
output is normalised to unit length across channels (surface normals).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """3×3 convolution, batch norm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class _Backbone(nn.Module):
    """SegNet encoder-decoder; returns every block's output on the way."""

    def __init__(self, in_channels: int, width: int, levels: int) -> None:
        super().__init__()
        if width < 1 or levels < 1:
            raise ValueError(f"width and levels must be >= 1, got {width}, {levels}")
        self.channels = [width * 2**level for level in range(levels)]
        self.decoder_channels = [self.channels[max(level - 1, 0)] for level in range(levels)]
        inputs = [in_channels, *self.channels[:-1]]
        self.encoder = nn.ModuleList(
            nn.Sequential(conv_block(cin, c), conv_block(c, c))
            for cin, c in zip(inputs, self.channels, strict=True)
        )
        self.decoder = nn.ModuleList(
            nn.Sequential(conv_block(c, c), conv_block(c, out))
            for c, out in zip(self.channels, self.decoder_channels, strict=True)
        )
        self.pool = nn.MaxPool2d(2, return_indices=True)
        self.unpool = nn.MaxUnpool2d(2)
        self.multiple = 2**levels

    def forward(self, x: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """Encoder block outputs (before pooling, finest first) and decoder block outputs (finest first)."""
        if x.shape[-2] % self.multiple or x.shape[-1] % self.multiple:
            raise ValueError(
                f"input height and width must be multiples of {self.multiple} for "
                f"{len(self.channels)} pooling levels, got {tuple(x.shape[-2:])}"
            )
        encoded, indices = [], []
        for block in self.encoder:
            x = block(x)
            encoded.append(x)
            x, index = self.pool(x)
            indices.append(index)
        decoded: list[Tensor] = []
        for level in reversed(range(len(self.channels))):
            x = self.unpool(x, indices[level], output_size=encoded[level].shape[-2:])
            x = self.decoder[level](x)
            decoded.insert(0, x)
        return encoded, decoded


def _head(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, in_channels, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(in_channels, out_channels, 1),
    )


def _check_heads(heads: Mapping[str, int], unit_outputs: tuple[str, ...]) -> None:
    if not heads:
        raise ValueError("heads must name at least one task")
    for task, channels in heads.items():
        if channels < 1:
            raise ValueError(f"head {task!r} needs >= 1 output channel, got {channels}")
    unknown = set(unit_outputs) - set(heads)
    if unknown:
        raise ValueError(f"unit_outputs names unknown head(s) {sorted(unknown)}")


class _DenseMultiTask(nn.Module):
    def __init__(self, heads: Mapping[str, int], width: int, unit_outputs: tuple[str, ...]) -> None:
        super().__init__()
        _check_heads(heads, unit_outputs)
        self.heads = nn.ModuleDict({task: _head(width, channels) for task, channels in heads.items()})
        self.unit_outputs = unit_outputs

    def _predict(self, task: str, features: Tensor) -> Tensor:
        out: Tensor = self.heads[task](features)
        return F.normalize(out, dim=1) if task in self.unit_outputs else out


class SegNetLite(_DenseMultiTask):
    """Shared SegNet encoder-decoder with one small head per task (hard parameter sharing)."""

    def __init__(
        self,
        heads: Mapping[str, int],
        in_channels: int = 3,
        width: int = 16,
        levels: int = 3,
        unit_outputs: tuple[str, ...] = (),
    ) -> None:
        super().__init__(heads, width, unit_outputs)
        self.backbone = _Backbone(in_channels, width, levels)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        _, decoded = self.backbone(x)
        return {task: self._predict(task, decoded[0]) for task in self.heads}


def _attention(in_channels: int, out_channels: int) -> nn.Sequential:
    """MTAN's attention mask: 1×1 conv-BN-ReLU, 1×1 conv-BN, sigmoid."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.Sigmoid(),
    )


class MTANLite(_DenseMultiTask):
    """SegNet backbone with per-task attention masks on every encoder and decoder block (MTAN)."""

    def __init__(
        self,
        heads: Mapping[str, int],
        in_channels: int = 3,
        width: int = 16,
        levels: int = 3,
        unit_outputs: tuple[str, ...] = (),
    ) -> None:
        super().__init__(heads, width, unit_outputs)
        self.backbone = _Backbone(in_channels, width, levels)
        enc, dec = self.backbone.channels, self.backbone.decoder_channels
        deepest = len(enc) - 1
        self.encoder_transitions = nn.ModuleList(
            conv_block(enc[level], enc[min(level + 1, deepest)]) for level in range(len(enc))
        )
        self.decoder_transitions = nn.ModuleList(
            conv_block(enc[deepest] if level == deepest else dec[level + 1], dec[level])
            for level in range(len(enc))
        )
        self.encoder_attention = nn.ModuleDict(
            {
                task: nn.ModuleList(_attention(c if level == 0 else 2 * c, c) for level, c in enumerate(enc))
                for task in heads
            }
        )
        self.decoder_attention = nn.ModuleDict(
            {task: nn.ModuleList(_attention(2 * c, c) for c in dec) for task in heads}
        )

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        encoded, decoded = self.backbone(x)
        outputs = {}
        for task in self.heads:
            encoder_attention = cast(nn.ModuleList, self.encoder_attention[task])
            decoder_attention = cast(nn.ModuleList, self.decoder_attention[task])
            selected: Tensor | None = None
            for level, shared in enumerate(encoded):
                inputs = shared if selected is None else torch.cat([shared, selected], dim=1)
                selected = encoder_attention[level](inputs) * shared
                selected = F.max_pool2d(self.encoder_transitions[level](selected), 2)
            assert selected is not None
            for level in reversed(range(len(decoded))):
                shared = decoded[level]
                selected = F.interpolate(selected, size=shared.shape[-2:], mode="nearest")
                selected = self.decoder_transitions[level](selected)
                mask = decoder_attention[level](torch.cat([shared, selected], dim=1))
                selected = mask * shared
            outputs[task] = self._predict(task, selected)
        return outputs
