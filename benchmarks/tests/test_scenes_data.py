"""Scenes generator: determinism, shapes, ranges, label consistency, caching and the real-data reader."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks.cache import cache_path
from benchmarks.data.scenes import (
    OUTDOOR_CLASSES,
    ScenesConfig,
    ScenesDirectory,
    generate_scenes,
    load_scenes,
    write_scenes_directory,
)

INDOOR = ScenesConfig(height=16, width=20, num_train=3, num_test=2)
OUTDOOR = ScenesConfig(variant="outdoor", height=16, width=32, num_train=3, num_test=2)


@pytest.mark.parametrize("config", [INDOOR, OUTDOOR], ids=["indoor", "outdoor"])
def test_same_seed_same_arrays_other_seed_other_arrays(config: ScenesConfig) -> None:
    first = generate_scenes(config, seed=4, progress=False)
    again = generate_scenes(config, seed=4, progress=False)
    other = generate_scenes(config, seed=5, progress=False)
    assert first.keys() == again.keys()
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
    assert not np.array_equal(first["train/image"], other["train/image"])
    assert not np.array_equal(first["train/depth"], other["train/depth"])


def test_smaller_data_set_is_a_prefix_of_a_larger_one() -> None:
    small = generate_scenes(INDOOR, seed=1, progress=False)
    large = generate_scenes(
        ScenesConfig(height=16, width=20, num_train=5, num_test=2), seed=1, progress=False
    )
    np.testing.assert_array_equal(small["train/image"], large["train/image"][:3])
    np.testing.assert_array_equal(small["test/normals"], large["test/normals"])


def _ray_directions(config: ScenesConfig) -> np.ndarray:
    """Camera-frame pixel ray directions ``[3, H, W]`` (not normalised)."""
    focal = (config.width / 2) / math.tan(math.radians(config.fov_degrees) / 2)
    rows, cols = np.meshgrid(np.arange(config.height), np.arange(config.width), indexing="ij")
    return np.stack(
        [
            (cols + 0.5 - config.width / 2) / focal,
            (rows + 0.5 - config.height / 2) / focal,
            np.ones(rows.shape),
        ]
    )


@pytest.mark.parametrize("config", [INDOOR, OUTDOOR], ids=["indoor", "outdoor"])
def test_shapes_types_and_ranges(config: ScenesConfig) -> None:
    arrays = generate_scenes(config, seed=0, progress=False)
    n, h, w = config.num_train, config.height, config.width
    assert arrays["train/image"].shape == (n, 3, h, w) and arrays["train/image"].dtype == np.uint8
    assert arrays["train/segmentation"].shape == (n, h, w)
    assert arrays["train/depth"].shape == (n, 1, h, w) and arrays["train/depth"].dtype == np.float32
    assert arrays["train/normals"].shape == (n, 3, h, w) and arrays["train/normals"].dtype == np.float32
    assert arrays["test/image"].shape[0] == config.num_test
    labels, depth, normals = (
        arrays["train/segmentation"],
        arrays["train/depth"][:, 0],
        arrays["train/normals"],
    )
    assert labels.min() >= 0 and labels.max() < len(config.classes)
    assert np.all(np.isfinite(depth)) and depth.min() >= 0
    valid = depth > 0
    norms = np.linalg.norm(normals, axis=1)
    np.testing.assert_allclose(norms[valid], 1.0, atol=1e-5)
    assert np.all(norms[~valid] == 0)
    # Normals face the camera: the angle to the viewing ray exceeds 90 degrees.
    facing = np.einsum("nchw,chw->nhw", normals, _ray_directions(config))
    assert np.all(facing[valid] < 1e-6)
    if config.variant == "indoor":
        assert valid.all()  # a closed room: every ray hits something
        floor = labels == 0
        # The floor's normal is world-up; seen by a camera with pitch in [-25, -5] degrees it points
        # up in the image (negative y) and towards the camera (negative z).
        assert floor.any() and np.all(normals[:, 1][floor] < 0) and np.all(normals[:, 2][floor] < 0)
    else:
        sky = labels == OUTDOOR_CLASSES.index("sky")
        np.testing.assert_array_equal(sky, ~valid)
        assert sky.any()


def test_images_are_not_constant_and_noise_changes_them() -> None:
    clean = generate_scenes(
        ScenesConfig(height=16, width=20, num_train=2, num_test=1, noise_std=0.0), 0, False
    )
    noisy = generate_scenes(
        ScenesConfig(height=16, width=20, num_train=2, num_test=1, noise_std=0.05), 0, False
    )
    assert clean["train/image"].std() > 10
    np.testing.assert_array_equal(clean["train/depth"], noisy["train/depth"])
    assert not np.array_equal(clean["train/image"], noisy["train/image"])


def test_load_scenes_caches_by_config(tmp_path: Path) -> None:
    splits = load_scenes(INDOOR, seed=2, cache_dir=tmp_path, progress=False)
    files = sorted(tmp_path.glob("scenes-indoor-*.npz"))
    assert len(files) == 1
    again = load_scenes(INDOOR, seed=2, cache_dir=tmp_path, progress=False)
    image, targets = splits.train[1]
    image_again, targets_again = again.train[1]
    torch.testing.assert_close(image, image_again)
    assert image.dtype == torch.float32 and float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    assert targets["segmentation"].dtype == torch.int64
    for task in ("segmentation", "depth", "normals"):
        torch.testing.assert_close(targets[task], targets_again[task])
    load_scenes(INDOOR, seed=3, cache_dir=tmp_path, progress=False, tasks=("segmentation", "depth"))
    assert len(list(tmp_path.glob("scenes-indoor-*.npz"))) == 2
    assert cache_path("x", {"a": 1, "b": 2}, tmp_path) == cache_path("x", {"b": 2, "a": 1}, tmp_path)


def test_directory_reader_round_trips_the_generated_data(tmp_path: Path) -> None:
    splits = load_scenes(INDOOR, seed=0, progress=False, use_cache=False)
    write_scenes_directory(splits.test, tmp_path, "val")
    reader = ScenesDirectory(tmp_path, "val")
    assert len(reader) == len(splits.test)
    for index in range(len(reader)):
        image, targets = reader[index]
        expected_image, expected = splits.test[index]
        torch.testing.assert_close(image, expected_image)
        for task, value in expected.items():
            torch.testing.assert_close(targets[task], value)
    with pytest.raises(IndexError):
        reader[len(reader)]
    with pytest.raises(FileNotFoundError, match="no image folder"):
        ScenesDirectory(tmp_path, "train")


def test_bad_configs_are_refused() -> None:
    with pytest.raises(ValueError, match="variant"):
        ScenesConfig(variant="underwater")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_train"):
        ScenesConfig(num_train=0)
    with pytest.raises(ValueError, match="unknown scene task"):
        load_scenes(INDOOR, tasks=("edges",), use_cache=False)
