"""MultiDigits: two of scikit-learn's bundled 8×8 digits overlapped in one image (MultiMNIST-style).

The left digit is pasted near the top-left of a ``height × width`` canvas and the
right digit near the bottom-right, each shifted inwards by 0..``max_shift`` pixels,
so that their strokes overlap while the right digit always starts right of the left
one; the canvas keeps the brighter pixel (``max``), scaled to [0, 1]. Tasks:
the class of the left digit and of the right digit. The 1,797 source digits are
split once (by the seed) so that test images are built from digits no training
image uses. Needs scikit-learn (the ``bench`` extra); the digits ship in its wheel.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ..cache import Arrays, cached_arrays
from ..datasets import Splits, TensorDictDataset

GENERATOR_VERSION = 1
DIGIT_TASKS = ("left", "right")
_DIGIT = 8


def load_sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits: images ``[1797, 8, 8]`` in 0..16 and labels ``[1797]``."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("MultiDigits needs scikit-learn: pip install 'bilevel-mtl[bench]'") from error
    bunch = load_digits()
    return np.asarray(bunch.images, dtype=np.float64), np.asarray(bunch.target, dtype=np.int64)


@dataclass(frozen=True)
class DigitsConfig:
    """Canvas size, shift ranges and number of composed images."""

    height: int = 12
    width: int = 14
    max_shift: int = 2
    """Each digit moves by 0..max_shift pixels from its corner, vertically and horizontally."""
    num_train: int = 6000
    num_test: int = 2000
    test_fraction: float = 0.3
    """Fraction of the source digits reserved for test images."""

    def __post_init__(self) -> None:
        for name in ("num_train", "num_test"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.max_shift < 0:
            raise ValueError(f"max_shift must be >= 0, got {self.max_shift}")
        if self.height < _DIGIT + self.max_shift or self.width - _DIGIT - self.max_shift <= self.max_shift:
            raise ValueError(
                f"a {self.height}x{self.width} canvas cannot hold two 8x8 digits shifted by up to "
                f"{self.max_shift} with the right one starting right of the left one "
                f"(need height >= {_DIGIT + self.max_shift}, width >= {_DIGIT + 2 * self.max_shift + 1})"
            )
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must lie in (0, 1), got {self.test_fraction}")


def compose(
    left: np.ndarray,
    right: np.ndarray,
    left_shift: np.ndarray,
    right_shift: np.ndarray,
    height: int,
    width: int,
) -> np.ndarray:
    """Overlay digit batches ``[N, 8, 8]``: left at ``left_shift`` (row, col) from the top-left
    corner, right at ``right_shift`` from the bottom-right corner; pixelwise maximum."""
    count = len(left)
    canvas = np.zeros((count, height, width))
    rows, cols = np.meshgrid(np.arange(_DIGIT), np.arange(_DIGIT), indexing="ij")
    samples = np.arange(count)[:, None, None]
    top, side = left_shift[:, 0, None, None] + rows, left_shift[:, 1, None, None] + cols
    canvas[samples, top, side] = left
    top = height - _DIGIT - right_shift[:, 0, None, None] + rows
    side = width - _DIGIT - right_shift[:, 1, None, None] + cols
    canvas[samples, top, side] = np.maximum(canvas[samples, top, side], right)
    return canvas


def generate_digits(config: DigitsConfig, seed: int, progress: bool = True) -> Arrays:
    """Both splits: ``{split}/image`` ``[N, 1, H, W]`` float32 in [0, 1], labels ``{split}/left`` and
        ``{split}/right``, ``{split}/source`` ``[N, 2]`` (the indices of the two scikit-learn digits) and
    ``{split}/shift`` ``[N, 4]`` (left row, left column, right row, right column shifts)."""
    images, labels = load_sklearn_digits()
    rng = np.random.default_rng([seed, 7])
    order = rng.permutation(len(images))
    num_test = round(config.test_fraction * len(images))
    pools = {"train": order[num_test:], "test": order[:num_test]}
    arrays: Arrays = {}
    for split in tqdm(("train", "test"), desc="digits", disable=not progress, leave=False):
        size = config.num_train if split == "train" else config.num_test
        split_rng = np.random.default_rng([seed, 7, 0 if split == "train" else 1])
        pair = split_rng.choice(pools[split], size=(size, 2))
        shifts = split_rng.integers(0, config.max_shift + 1, size=(size, 4))
        canvas = compose(
            images[pair[:, 0]], images[pair[:, 1]], shifts[:, :2], shifts[:, 2:], config.height, config.width
        )
        arrays[f"{split}/image"] = (canvas[:, None] / 16.0).astype(np.float32)
        arrays[f"{split}/left"] = labels[pair[:, 0]]
        arrays[f"{split}/right"] = labels[pair[:, 1]]
        arrays[f"{split}/source"] = pair
        arrays[f"{split}/shift"] = shifts
    return arrays


def load_digits_pairs(
    config: DigitsConfig,
    seed: int = 0,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    use_cache: bool = True,
) -> Splits:
    """Train/test :class:`TensorDictDataset` with targets ``left`` and ``right`` (int64 classes)."""
    key = {"generator": "digits", "version": GENERATOR_VERSION, "seed": seed, **asdict(config)}
    arrays = cached_arrays(
        "digits", key, lambda: generate_digits(config, seed, progress), cache_dir, use_cache
    )

    def split(name: str) -> TensorDictDataset:
        targets = {task: torch.from_numpy(arrays[f"{name}/{task}"]).long() for task in DIGIT_TASKS}
        return TensorDictDataset(torch.from_numpy(arrays[f"{name}/image"]), targets)

    return Splits(split("train"), split("test"))
