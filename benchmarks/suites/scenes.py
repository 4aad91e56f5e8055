"""Scenes suites: ``scenes`` (NYUv2-like; segmentation, depth, normals) and ``scenes2``
(Cityscapes-like outdoor streets; segmentation, depth)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from ..data.scenes import ScenesConfig, load_scenes
from ..datasets import Splits, iterate_batches
from ..losses import depth_loss, normals_loss, segmentation_loss
from ..metrics import DepthMetric, Evaluator, Metric, NormalsMetric, SegmentationMetric
from ..models import ConstantModel, MTANLite, SegNetLite
from .base import Suite, TrainingDefaults


@dataclass(frozen=True)
class ScenesSuiteConfig:
    """Data, network and training recipe of a Scenes suite."""

    data: ScenesConfig = field(default_factory=ScenesConfig)
    architecture: Literal["segnet", "mtan"] = "segnet"
    width: int = 16
    levels: int = 3
    training: TrainingDefaults = field(default_factory=lambda: TrainingDefaults(10, 8, 1e-3))

    def __post_init__(self) -> None:
        if self.architecture not in ("segnet", "mtan"):
            raise ValueError(f"unknown architecture {self.architecture!r}; choose 'segnet' or 'mtan'")
        multiple = 2**self.levels
        if self.data.height % multiple or self.data.width % multiple:
            raise ValueError(
                f"image size {self.data.height}x{self.data.width} must be a multiple of {multiple} "
                f"for {self.levels} pooling levels"
            )


class ScenesSuite(Suite[ScenesSuiteConfig]):
    """Indoor scenes, three tasks (the NYUv2 setting of the MARIGOLD paper's Table 1)."""

    name = "scenes"
    _TASKS: tuple[str, ...] = ("segmentation", "depth", "normals")

    @classmethod
    def preset(cls, size: str) -> ScenesSuiteConfig:
        """``default``: 32×40 pixels, 2,400 training images, 17 epochs of 300 steps (5,100
        steps; sized for a full comparison on two CPU cores; see ``docs/benchmarks/scenes.md``)."""
        data = {
            "tiny": ScenesConfig(height=16, width=16, num_train=4, num_test=2, max_objects=2),
            "quick": ScenesConfig(height=32, width=40, num_train=64, num_test=32),
            "default": ScenesConfig(height=32, width=40, num_train=2400, num_test=400),
            "large": ScenesConfig(height=128, width=160, num_train=795, num_test=654),
        }[size]
        model = {"tiny": (4, 2), "quick": (8, 3), "default": (8, 3), "large": (32, 4)}[size]
        training = {
            "tiny": TrainingDefaults(1, 2, 1e-3, eval_batch_size=2),
            "quick": TrainingDefaults(2, 8, 1e-3),
            "default": TrainingDefaults(17, 8, 1e-3),
            "large": TrainingDefaults(100, 8, 1e-4),
        }[size]
        return ScenesSuiteConfig(data=data, width=model[0], levels=model[1], training=training)

    @property
    def tasks(self) -> tuple[str, ...]:
        return self._TASKS

    @property
    def num_classes(self) -> int:
        return len(self.config.data.classes)

    def datasets(
        self,
        seed: int = 0,
        cache_dir: str | os.PathLike[str] | None = None,
        progress: bool = True,
        use_cache: bool = True,
    ) -> Splits:
        return load_scenes(self.config.data, seed, self.tasks, cache_dir, progress, use_cache)

    def build_model(self) -> nn.Module:
        channels = {"segmentation": self.num_classes, "depth": 1, "normals": 3}
        heads = {task: channels[task] for task in self.tasks}
        network = SegNetLite if self.config.architecture == "segnet" else MTANLite
        unit = ("normals",) if "normals" in heads else ()
        return network(heads, width=self.config.width, levels=self.config.levels, unit_outputs=unit)

    def task_losses(self, outputs: Mapping[str, Tensor], targets: Mapping[str, Tensor]) -> Tensor:
        losses = {"segmentation": segmentation_loss, "depth": depth_loss, "normals": normals_loss}
        return torch.stack([losses[task](outputs[task], targets[task]) for task in self.tasks])

    def evaluator(self) -> Evaluator:
        metrics: dict[str, Metric] = {
            "segmentation": SegmentationMetric(self.num_classes),
            "depth": DepthMetric(),
            "normals": NormalsMetric(),
        }
        return Evaluator(metrics[task] for task in self.tasks)

    def trivial_scores(self, data: Splits) -> dict[str, float]:
        """Every metric on ``data.test`` of the trivial predictor fit on ``data.train``: at each
        pixel the training set's majority class, mean depth and mean normal (over valid pixels)."""
        _, targets = next(iterate_batches(data.train, len(data.train)))  # type: ignore[arg-type]
        outputs: dict[str, Tensor] = {}
        if "segmentation" in self.tasks:
            labels = targets["segmentation"]
            classes = torch.arange(self.num_classes).view(1, -1, 1, 1)
            outputs["segmentation"] = (labels.unsqueeze(1) == classes).sum(dim=0).float()
        if "depth" in self.tasks:
            depth = targets["depth"]
            valid = (depth != 0).sum(dim=0).clamp(min=1)
            outputs["depth"] = depth.sum(dim=0) / valid
        if "normals" in self.tasks:
            outputs["normals"] = torch.nn.functional.normalize(targets["normals"].sum(dim=0), dim=0)
        return self.evaluate(ConstantModel(outputs), data.test, device="cpu")


class Scenes2Suite(ScenesSuite):
    """Outdoor streets, two tasks (the Cityscapes setting of the MARIGOLD paper's Table 2)."""

    name = "scenes2"
    _TASKS = ("segmentation", "depth")

    @classmethod
    def preset(cls, size: str) -> ScenesSuiteConfig:
        """``default``: 24×48 pixels, 2,000 training images, 20 epochs of 250 steps (5,000 steps)."""
        data = {
            "tiny": ScenesConfig(
                variant="outdoor", height=16, width=32, num_train=4, num_test=2, max_objects=1
            ),
            "quick": ScenesConfig(variant="outdoor", height=24, width=48, num_train=64, num_test=32),
            "default": ScenesConfig(variant="outdoor", height=24, width=48, num_train=2000, num_test=400),
            "large": ScenesConfig(variant="outdoor", height=96, width=192, num_train=2975, num_test=500),
        }[size]
        base = ScenesSuite.preset(size)
        training = TrainingDefaults(20, 8, 1e-3) if size == "default" else base.training
        return ScenesSuiteConfig(data=data, width=base.width, levels=base.levels, training=training)
