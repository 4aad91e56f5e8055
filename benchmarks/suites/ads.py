"""Ads suite (auxiliary learning, the MARIGOLD paper's Table 4 analogue): click is the main task;
conv|click, conv and distillation from a teacher are auxiliary tasks. Metric: NE per task."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..data.ads import ADS_TASKS, AdsConfig, load_ads
from ..datasets import Splits
from ..losses import masked_binary_cross_entropy
from ..metrics import Evaluator, NormalizedEntropy
from ..models import AdsModel
from .base import Suite, TrainingDefaults


@dataclass(frozen=True)
class AdsSuiteConfig:
    """Data (with the teacher), the student's size and its training recipe."""

    data: AdsConfig = field(default_factory=AdsConfig)
    embedding_dim: int = 8
    hidden: tuple[int, ...] = (64, 32)
    training: TrainingDefaults = field(
        default_factory=lambda: TrainingDefaults(10, 512, 1e-3, eval_batch_size=4096)
    )


class AdsSuite(Suite[AdsSuiteConfig]):
    """Student tasks ``click``, ``conv_given_click`` (on clicked impressions), ``conv``, ``distill``."""

    name = "ads"
    main_task = "click"

    @classmethod
    def preset(cls, size: str) -> AdsSuiteConfig:
        data = {
            "tiny": AdsConfig(
                num_users=50, num_ads=20, num_categories=5, num_sites=5, num_train=512, num_test=256,
                num_teacher_extra=512, teacher_epochs=1, teacher_batch_size=256, teacher_hidden=(16,),
            ),
            "quick": AdsConfig(num_train=20_000, num_test=10_000, num_teacher_extra=40_000),
            "default": AdsConfig(num_train=20_000, num_test=50_000, num_teacher_extra=200_000),
            "large": AdsConfig(
                num_users=50_000, num_ads=5_000, num_sites=500, num_train=1_000_000, num_test=200_000,
                num_teacher_extra=2_000_000, teacher_hidden=(256, 128),
            ),
        }[size]  # fmt: skip
        training = {
            "tiny": TrainingDefaults(1, 128, 1e-3, eval_batch_size=256),
            "quick": TrainingDefaults(1, 512, 1e-3, eval_batch_size=4096),
            "default": TrainingDefaults(10, 512, 1e-3, eval_batch_size=4096),
            "large": TrainingDefaults(2, 2048, 1e-3, eval_batch_size=8192),
        }[size]
        return AdsSuiteConfig(data=data, training=training)

    @property
    def tasks(self) -> tuple[str, ...]:
        return ADS_TASKS

    def datasets(
        self,
        seed: int = 0,
        cache_dir: str | os.PathLike[str] | None = None,
        progress: bool = True,
        use_cache: bool = True,
    ) -> Splits:
        return load_ads(self.config.data, seed, cache_dir, progress, use_cache)

    def build_model(self) -> nn.Module:
        data = self.config.data
        return AdsModel(
            data.vocab_sizes, data.num_dense, self.tasks, self.config.embedding_dim, self.config.hidden
        )

    def task_losses(self, outputs: Mapping[str, Tensor], targets: Mapping[str, Tensor]) -> Tensor:
        clicked = targets["click"] > 0
        return torch.stack(
            [
                masked_binary_cross_entropy(
                    outputs[task], targets[task], clicked if task == "conv_given_click" else None
                )
                for task in self.tasks
            ]
        )

    def evaluator(self) -> Evaluator:
        return Evaluator(
            NormalizedEntropy(task, mask="click" if task == "conv_given_click" else None)
            for task in self.tasks
        )
