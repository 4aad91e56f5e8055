"""Embedding + MLP ranking model: one embedding table per categorical id, dense features concatenated."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class AdsModel(nn.Module):
    """Logits ``[B]`` per task from inputs ``[B, len(vocab_sizes) + num_dense]``.

    The first ``len(vocab_sizes)`` input columns hold integer ids (stored as
    floats so that one tensor carries a sample); the rest are dense features.
    """

    def __init__(
        self,
        vocab_sizes: Sequence[int],
        num_dense: int,
        tasks: Sequence[str],
        embedding_dim: int = 8,
        hidden: Sequence[int] = (64, 32),
    ) -> None:
        super().__init__()
        if not tasks:
            raise ValueError("tasks must name at least one task")
        if not vocab_sizes or min(vocab_sizes) < 1:
            raise ValueError(f"vocab_sizes must be positive, got {list(vocab_sizes)}")
        self.num_ids = len(vocab_sizes)
        self.embeddings = nn.ModuleList(nn.Embedding(size, embedding_dim) for size in vocab_sizes)
        layers: list[nn.Module] = []
        width = self.num_ids * embedding_dim + num_dense
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        self.trunk = nn.Sequential(*layers)
        self.heads = nn.ModuleDict({task: nn.Linear(width, 1) for task in tasks})

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        ids = x[:, : self.num_ids].long()
        embedded = [table(ids[:, column]) for column, table in enumerate(self.embeddings)]
        features = self.trunk(torch.cat([*embedded, x[:, self.num_ids :]], dim=1))
        return {task: head(features).squeeze(1) for task, head in self.heads.items()}
