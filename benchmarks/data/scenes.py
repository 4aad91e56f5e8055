"""Scenes: procedural RGB-D images with per-pixel semantic class, depth and surface normal.

Stands in for NYUv2 (``variant="indoor"``: a room with floor, walls, ceiling,
paintings, boxes, spheres and cylinders under a point light) and for Cityscapes
(``variant="outdoor"``: a street with road, sidewalks, buildings, cars, poles,
trees and sky under the sun). Each image is ray-cast analytically
(:mod:`benchmarks.data.raycast`), shaded (Lambert, shadows, procedural
textures, exposure jitter, Gaussian noise) and labelled exactly:

* ``segmentation`` ``[H, W]`` int64 class ids (``-1`` would mean unlabelled);
* ``depth`` ``[1, H, W]`` float32 ``z``-depth in metres, ``0`` where invalid (sky);
* ``normals`` ``[3, H, W]`` float32 unit normals in camera coordinates
  (x right, y down, z forward) facing the camera, ``0`` where invalid.

Image ``i`` of a split is drawn from its own generator seeded by ``(seed, split, i)``,
so a smaller data set is a prefix of a larger one with the same seed.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..cache import Arrays, cached_arrays
from ..datasets import Batch, Splits, TensorDictDataset
from .raycast import Box, Camera, Cylinder, Primitive, Scene, Sphere

GENERATOR_VERSION = 1

INDOOR_CLASSES = ("floor", "wall", "ceiling", "box", "sphere", "cylinder", "painting")
OUTDOOR_CLASSES = ("road", "sidewalk", "building", "vehicle", "pole", "vegetation", "sky")
SCENE_TASKS = ("segmentation", "depth", "normals")
_SPLITS = {"train": 0, "test": 1}
_PATTERNS = ("plain", "checker", "stripes", "noise")


@dataclass(frozen=True)
class ScenesConfig:
    """Size and look of a Scenes data set."""

    variant: Literal["indoor", "outdoor"] = "indoor"
    height: int = 64
    width: int = 80
    num_train: int = 795
    num_test: int = 654
    max_objects: int = 6
    """Indoor: objects on the floor; outdoor: cars (poles and trees come on top)."""
    noise_std: float = 0.02
    """Standard deviation of the Gaussian noise added to RGB values in [0, 1]."""
    fov_degrees: float = 60.0

    def __post_init__(self) -> None:
        if self.variant not in ("indoor", "outdoor"):
            raise ValueError(f"unknown variant {self.variant!r}; choose 'indoor' or 'outdoor'")
        for name in ("height", "width", "num_train", "num_test"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.max_objects < 0:
            raise ValueError(f"max_objects must be >= 0, got {self.max_objects}")
        if self.noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {self.noise_std}")
        if not 1.0 <= self.fov_degrees <= 170.0:
            raise ValueError(f"fov_degrees must lie in [1, 170], got {self.fov_degrees}")

    @property
    def classes(self) -> tuple[str, ...]:
        return INDOOR_CLASSES if self.variant == "indoor" else OUTDOOR_CLASSES


@dataclass(frozen=True)
class Surface:
    """A material: semantic class, base colour and a procedural pattern in world coordinates."""

    label: int
    color: np.ndarray
    pattern: str = "plain"
    scale: float = 1.0
    contrast: float = 0.0
    phase: float = 0.0

    def albedo(self, points: np.ndarray, normals: np.ndarray) -> np.ndarray:
        """Colour ``[N, 3]`` at world ``points`` with ``normals`` (patterns run across the face)."""
        dominant = np.abs(normals).argmax(axis=1)
        first = np.where(dominant == 0, points[:, 1], points[:, 0])
        second = np.where(dominant == 2, points[:, 1], points[:, 2])
        if self.pattern == "checker":
            value = (np.floor(first / self.scale) + np.floor(second / self.scale)) % 2
        elif self.pattern == "stripes":
            value = 0.5 + 0.5 * np.sin(2 * math.pi * first / self.scale + self.phase)
        elif self.pattern == "noise":
            waves = np.sin(first * 7.1 / self.scale + self.phase) * np.sin(
                second * 5.3 / self.scale - self.phase
            )
            value = 0.5 + 0.5 * waves * np.sin((first + second) * 3.7 / self.scale)
        else:
            value = np.zeros(len(points))
        return self.color[None, :] * (1.0 - self.contrast * value[:, None])


class _Builder:
    """Collects surfaces and primitives while a scene is sampled."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.surfaces: list[Surface] = []
        self.primitives: list[Primitive] = []

    def surface(self, label: int, base: tuple[float, float, float], spread: float = 0.15) -> int:
        color = np.clip(np.asarray(base) + self.rng.uniform(-spread, spread, 3), 0.05, 1.0)
        pattern = str(self.rng.choice(_PATTERNS))
        self.surfaces.append(
            Surface(
                label=label,
                color=color,
                pattern=pattern,
                scale=float(self.rng.uniform(0.15, 0.8)),
                contrast=float(self.rng.uniform(0.1, 0.5)) if pattern != "plain" else 0.0,
                phase=float(self.rng.uniform(0, 2 * math.pi)),
            )
        )
        return len(self.surfaces) - 1

    def random_color(self) -> tuple[float, float, float]:
        r, g, b = self.rng.uniform(0.15, 0.95, 3)
        return float(r), float(g), float(b)


@dataclass(frozen=True)
class _Lighting:
    ambient: float
    intensity: float
    position: np.ndarray | None
    """A point light's position, or ``None`` for the sun along ``direction``."""
    direction: np.ndarray | None


def _place(
    rng: np.random.Generator,
    low: np.ndarray,
    high: np.ndarray,
    radius: float,
    taken: list[tuple[float, float, float]],
) -> tuple[float, float] | None:
    """A floor position at least ``radius`` from every taken disc (or ``None`` after 30 tries)."""
    for _ in range(30):
        x, z = rng.uniform(low, high)
        if all(math.hypot(x - tx, z - tz) >= radius + tr for tx, tz, tr in taken):
            taken.append((float(x), float(z), radius))
            return float(x), float(z)
    return None


def _indoor(rng: np.random.Generator, config: ScenesConfig) -> tuple[_Builder, Camera, _Lighting]:
    build = _Builder(rng)
    floor, wall, ceiling, box, sphere, cylinder, painting = range(len(INDOOR_CLASSES))
    size = rng.uniform([4.0, 2.5, 4.0], [7.0, 3.2, 8.0])
    half = size / 2
    floor_id = build.surface(floor, (0.55, 0.4, 0.3), 0.2)
    ceiling_id = build.surface(ceiling, (0.85, 0.85, 0.82), 0.08)
    wall_color = build.random_color()
    walls = [build.surface(wall, wall_color, 0.05) for _ in range(4)]
    room = Box(
        center=np.array([0.0, half[1], 0.0]),
        half=half,
        surfaces=(walls[0], walls[1], floor_id, ceiling_id, walls[2], walls[3]),
        inside=True,
    )
    build.primitives.append(room)
    margin = np.array([0.5, 0.5])
    camera_xz = rng.uniform(-half[[0, 2]] + margin, half[[0, 2]] - margin)
    to_center = -camera_xz
    yaw = math.atan2(to_center[0], to_center[1]) + rng.uniform(-0.5, 0.5)
    camera = Camera(
        position=(float(camera_xz[0]), float(rng.uniform(1.0, 1.8)), float(camera_xz[1])),
        yaw=yaw,
        pitch=float(rng.uniform(math.radians(-25), math.radians(-5))),
        height=config.height,
        width=config.width,
        fov_x=math.radians(config.fov_degrees),
    )
    for _ in range(int(rng.integers(0, 4))):
        axis = int(rng.integers(0, 2)) * 2  # 0: x walls, 2: z walls
        sign = float(rng.choice([-1.0, 1.0]))
        across = 2 - axis
        extent = np.array([0.0, rng.uniform(0.15, 0.45), 0.0])
        extent[axis] = 0.02
        extent[across] = rng.uniform(0.2, 0.6)
        center = np.zeros(3)
        center[axis] = sign * (half[axis] - 0.02)
        center[1] = rng.uniform(1.2, min(2.1, size[1] - 0.5))
        center[across] = rng.uniform(-half[across] + 0.7, half[across] - 0.7)
        art = build.surface(painting, build.random_color(), 0.0)
        build.primitives.append(Box(center=center, half=extent, surfaces=(art,) * 6))
    taken = [(float(camera_xz[0]), float(camera_xz[1]), 0.6)]
    low, high = -half[[0, 2]] + 0.3, half[[0, 2]] - 0.3
    for _ in range(int(rng.integers(min(2, config.max_objects), config.max_objects + 1))):
        kind = rng.integers(0, 3)
        if kind == 0:
            extent = rng.uniform([0.2, 0.2, 0.2], [0.6, 0.6, 0.6])
            spot = _place(rng, low, high, float(np.hypot(extent[0], extent[2])), taken)
            if spot is not None:
                surface = build.surface(box, build.random_color(), 0.0)
                center = np.array([spot[0], extent[1], spot[1]])
                yaw_box = float(rng.uniform(0, math.pi))
                build.primitives.append(Box(center=center, half=extent, surfaces=(surface,) * 6, yaw=yaw_box))
        elif kind == 1:
            radius = float(rng.uniform(0.15, 0.45))
            spot = _place(rng, low, high, radius, taken)
            if spot is not None:
                surface = build.surface(sphere, build.random_color(), 0.0)
                build.primitives.append(
                    Sphere(center=np.array([spot[0], radius, spot[1]]), radius=radius, surfaces=(surface,))
                )
        else:
            radius, height = float(rng.uniform(0.1, 0.35)), float(rng.uniform(0.3, 1.6))
            spot = _place(rng, low, high, radius, taken)
            if spot is not None:
                surface = build.surface(cylinder, build.random_color(), 0.0)
                base = np.array([spot[0], 0.0, spot[1]])
                build.primitives.append(
                    Cylinder(base=base, radius=radius, height=height, surfaces=(surface,) * 3)
                )
    light = np.array(
        [
            rng.uniform(-half[0] + 0.3, half[0] - 0.3),
            size[1] - 0.1,
            rng.uniform(-half[2] + 0.3, half[2] - 0.3),
        ]
    )
    lighting = _Lighting(
        ambient=float(rng.uniform(0.2, 0.35)),
        intensity=float(rng.uniform(3.0, 6.0)),
        position=light,
        direction=None,
    )
    return build, camera, lighting


def _outdoor(rng: np.random.Generator, config: ScenesConfig) -> tuple[_Builder, Camera, _Lighting]:
    build = _Builder(rng)
    road, sidewalk, building, vehicle, pole, vegetation, _sky = range(len(OUTDOOR_CLASSES))
    road_half = float(rng.uniform(3.0, 5.0))
    walk = float(rng.uniform(1.5, 3.0))
    near, far = -10.0, 60.0
    length_half, middle = (far - near) / 2, (far + near) / 2
    build.primitives.append(
        Box(
            center=np.array([0.0, -0.05, middle]),
            half=np.array([road_half, 0.05, length_half]),
            surfaces=(build.surface(road, (0.3, 0.3, 0.32), 0.05),) * 6,
        )
    )
    for side in (-1.0, 1.0):
        surface = build.surface(sidewalk, (0.6, 0.58, 0.55), 0.08)
        center = np.array([side * (road_half + walk / 2), 0.075, middle])
        build.primitives.append(
            Box(center=center, half=np.array([walk / 2, 0.075, length_half]), surfaces=(surface,) * 6)
        )
        z = near
        while z < far:
            extent_z = float(rng.uniform(3.0, 7.5))
            depth_half, height_half = float(rng.uniform(2.5, 5.0)), float(rng.uniform(2.0, 8.0))
            facade = build.surface(building, build.random_color(), 0.1)
            x = side * (road_half + walk + depth_half + rng.uniform(0.0, 3.0))
            build.primitives.append(
                Box(
                    center=np.array([x, height_half, z + extent_z]),
                    half=np.array([depth_half, height_half, extent_z]),
                    surfaces=(facade,) * 6,
                )
            )
            z += 2 * extent_z
        for _ in range(int(rng.integers(0, 4))):
            spot_z = float(rng.uniform(2.0, far - 10))
            x = side * (road_half + walk * rng.uniform(0.3, 0.7))
            if rng.random() < 0.5:
                surface = build.surface(pole, (0.35, 0.35, 0.38), 0.05)
                build.primitives.append(
                    Cylinder(
                        base=np.array([x, 0.15, spot_z]),
                        radius=0.08,
                        height=float(rng.uniform(4.0, 6.0)),
                        surfaces=(surface,) * 3,
                    )
                )
            else:
                trunk_height, crown = float(rng.uniform(1.8, 3.0)), float(rng.uniform(1.0, 1.8))
                bark = build.surface(vegetation, (0.4, 0.28, 0.15), 0.05)
                leaves = build.surface(vegetation, (0.2, 0.5, 0.15), 0.1)
                build.primitives.append(
                    Cylinder(
                        base=np.array([x, 0.15, spot_z]),
                        radius=0.15,
                        height=trunk_height,
                        surfaces=(bark,) * 3,
                    )
                )
                build.primitives.append(
                    Sphere(
                        center=np.array([x, 0.15 + trunk_height + crown * 0.8, spot_z]),
                        radius=crown,
                        surfaces=(leaves,),
                    )
                )
    end_half = float(rng.uniform(2.0, 6.0))
    end = build.surface(building, build.random_color(), 0.1)
    build.primitives.append(
        Box(
            center=np.array([0.0, end_half, far + 5.0]),
            half=np.array([40.0, end_half, 5.0]),
            surfaces=(end,) * 6,
        )
    )
    camera_x = float(rng.uniform(-road_half / 2, road_half / 2))
    taken = [(camera_x, 0.0, 2.5)]
    for _ in range(int(rng.integers(0, config.max_objects + 1))):
        lane = float(rng.choice([-0.5, 0.5])) * road_half
        spot = _place(rng, np.array([lane - 0.3, 5.0]), np.array([lane + 0.3, far - 10.0]), 2.4, taken)
        if spot is None:
            continue
        paint = build.surface(vehicle, build.random_color(), 0.0)
        glass = build.surface(vehicle, (0.2, 0.25, 0.3), 0.05)
        yaw = float(rng.uniform(-0.1, 0.1))
        build.primitives.append(
            Box(
                center=np.array([spot[0], 0.7, spot[1]]),
                half=np.array([0.9, 0.45, 2.1]),
                surfaces=(paint,) * 6,
                yaw=yaw,
            )
        )
        build.primitives.append(
            Box(
                center=np.array([spot[0], 1.45, spot[1] - 0.2]),
                half=np.array([0.8, 0.3, 1.1]),
                surfaces=(glass,) * 6,
                yaw=yaw,
            )
        )
    camera = Camera(
        position=(camera_x, float(rng.uniform(1.2, 1.7)), 0.0),
        yaw=float(rng.uniform(-0.25, 0.25)),
        pitch=float(rng.uniform(-0.1, 0.05)),
        height=config.height,
        width=config.width,
        fov_x=math.radians(config.fov_degrees),
    )
    elevation, azimuth = rng.uniform(math.radians(30), math.radians(70)), rng.uniform(0, 2 * math.pi)
    sun = np.array(
        [
            math.cos(elevation) * math.sin(azimuth),
            math.sin(elevation),
            math.cos(elevation) * math.cos(azimuth),
        ]
    )
    lighting = _Lighting(
        ambient=float(rng.uniform(0.45, 0.6)),
        intensity=float(rng.uniform(0.7, 1.0)),
        position=None,
        direction=sun,
    )
    return build, camera, lighting


def render_scene(
    scene: Scene, surfaces: list[Surface], camera: Camera, lighting: _Lighting, sky_label: int | None
) -> dict[str, np.ndarray]:
    """Ray-cast one image: noiseless ``rgb`` ``[3, H, W]`` in [0, 1] and the three label maps."""
    rays = camera.rays()
    hits = scene.cast(rays.origins, rays.directions)
    hit = np.isfinite(hits.distance)
    count = len(hit)
    labels = np.array([s.label for s in surfaces])
    segmentation = np.where(hit, labels[np.maximum(hits.surface, 0)], -1 if sky_label is None else sky_label)
    depth = np.where(hit, hits.distance * rays.axial, 0.0)
    normals = camera.to_camera(hits.normal)
    rgb = np.zeros((count, 3))
    index = np.flatnonzero(hit)
    points = rays.origins[index] + hits.distance[index, None] * rays.directions[index]
    normal = hits.normal[index]
    for surface_id in np.unique(hits.surface[index]):
        chosen = hits.surface[index] == surface_id
        rgb[index[chosen]] = surfaces[surface_id].albedo(points[chosen], normal[chosen])
    if lighting.position is not None:
        to_light = lighting.position - points
        distance = np.linalg.norm(to_light, axis=1)
        direction = to_light / distance[:, None]
        falloff = lighting.intensity / (1.0 + 0.15 * distance**2)
        limit: np.ndarray | float = distance - 1e-3
    else:
        assert lighting.direction is not None
        direction = np.broadcast_to(lighting.direction, points.shape)
        falloff = np.full(len(points), lighting.intensity)
        limit = np.inf
    lambert = np.maximum(np.einsum("ij,ij->i", normal, direction), 0.0)
    shadowed = scene.occluded(points + 1e-4 * normal, np.ascontiguousarray(direction), limit)
    rgb[index] *= (lighting.ambient + falloff * lambert * ~shadowed)[:, None]
    if sky_label is not None:
        up = np.clip(rays.directions[~hit, 1], 0.0, 1.0)[:, None]
        rgb[~hit] = (1 - up) * np.array([0.75, 0.85, 0.95]) + up * np.array([0.3, 0.5, 0.85])
    shape = (camera.height, camera.width)
    return {
        "rgb": rgb.T.reshape(3, *shape),
        "segmentation": segmentation.reshape(shape),
        "depth": depth.reshape(1, *shape),
        "normals": normals.T.reshape(3, *shape),
    }


def sample_image(config: ScenesConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Sample one scene and render it with exposure jitter and noise (arrays as stored)."""
    sampler = _indoor if config.variant == "indoor" else _outdoor
    build, camera, lighting = sampler(rng, config)
    sky_label = None if config.variant == "indoor" else OUTDOOR_CLASSES.index("sky")
    arrays = render_scene(Scene(build.primitives), build.surfaces, camera, lighting, sky_label)
    rgb = arrays.pop("rgb") * rng.uniform(0.8, 1.2) + rng.normal(
        0.0, config.noise_std, (3, config.height, config.width)
    )
    arrays["image"] = np.round(np.clip(rgb, 0.0, 1.0) * 255).astype(np.uint8)
    arrays["segmentation"] = arrays["segmentation"].astype(np.int8)
    arrays["depth"] = arrays["depth"].astype(np.float32)
    arrays["normals"] = arrays["normals"].astype(np.float32)
    return arrays


def generate_scenes(config: ScenesConfig, seed: int, progress: bool = True) -> Arrays:
    """All images of both splits: ``{split}/{image,segmentation,depth,normals}`` arrays."""
    arrays: Arrays = {}
    for split, code in _SPLITS.items():
        size = config.num_train if split == "train" else config.num_test
        samples = [
            sample_image(config, np.random.default_rng([seed, code, i]))
            for i in tqdm(
                range(size), desc=f"scenes-{config.variant} {split}", disable=not progress, leave=False
            )
        ]
        for key in samples[0]:
            arrays[f"{split}/{key}"] = np.stack([sample[key] for sample in samples])
    return arrays


def load_scenes(
    config: ScenesConfig,
    seed: int = 0,
    tasks: tuple[str, ...] = SCENE_TASKS,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    use_cache: bool = True,
) -> Splits:
    """Train/test :class:`TensorDictDataset` of float images in [0, 1] and the requested targets."""
    unknown = set(tasks) - set(SCENE_TASKS)
    if unknown:
        raise ValueError(f"unknown scene task(s) {sorted(unknown)}; choose from {list(SCENE_TASKS)}")
    key = {"generator": "scenes", "version": GENERATOR_VERSION, "seed": seed, **asdict(config)}
    arrays = cached_arrays(
        f"scenes-{config.variant}", key, lambda: generate_scenes(config, seed, progress), cache_dir, use_cache
    )

    def split(name: str) -> TensorDictDataset:
        images = torch.from_numpy(arrays[f"{name}/image"]).float().div_(255.0)
        targets = {task: torch.from_numpy(arrays[f"{name}/{task}"]) for task in tasks}
        if "segmentation" in targets:
            targets["segmentation"] = targets["segmentation"].long()
        return TensorDictDataset(images, targets)

    return Splits(split("train"), split("test"))


class ScenesDirectory(Dataset[Batch]):
    """Real NYUv2/Cityscapes data in the per-sample ``.npy`` layout of the MTAN preprocessing.

    ``root/<split>/image/<i>.npy`` (``H×W×3`` float), ``label/<i>.npy`` (``H×W``,
    ``-1`` unlabelled), ``depth/<i>.npy`` (``H×W×1``, ``0`` invalid) and
    ``normal/<i>.npy`` (``H×W×3``). Yields samples shaped like :func:`load_scenes`.
    """

    _FOLDERS: ClassVar[dict[str, str]] = {"segmentation": "label", "depth": "depth", "normals": "normal"}

    def __init__(
        self, root: str | os.PathLike[str], split: str, tasks: tuple[str, ...] = SCENE_TASKS
    ) -> None:
        self.folder = Path(root) / split
        unknown = set(tasks) - set(SCENE_TASKS)
        if unknown:
            raise ValueError(f"unknown scene task(s) {sorted(unknown)}; choose from {list(SCENE_TASKS)}")
        if not (self.folder / "image").is_dir():
            raise FileNotFoundError(f"no image folder at {self.folder / 'image'}")
        self.tasks = tasks
        self.size = len(list((self.folder / "image").glob("*.npy")))

    def __len__(self) -> int:
        return self.size

    def _load(self, folder: str, index: int) -> torch.Tensor:
        return torch.from_numpy(np.load(self.folder / folder / f"{index}.npy"))

    def __getitem__(self, index: int) -> Batch:
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.size} samples")
        image = self._load("image", index).float().permute(2, 0, 1)
        targets: dict[str, torch.Tensor] = {}
        for task in self.tasks:
            value = self._load(self._FOLDERS[task], index)
            targets[task] = value.long() if task == "segmentation" else value.float().permute(2, 0, 1)
        return image, targets


def write_scenes_directory(dataset: Dataset[Batch], root: str | os.PathLike[str], split: str) -> None:
    """Write a scenes data set in the layout :class:`ScenesDirectory` reads."""
    folder = Path(root) / split
    for index in range(len(dataset)):  # type: ignore[arg-type]
        image, targets = dataset[index]
        (folder / "image").mkdir(parents=True, exist_ok=True)
        np.save(folder / "image" / f"{index}.npy", image.permute(1, 2, 0).numpy())
        for task, value in targets.items():
            name = ScenesDirectory._FOLDERS[task]
            (folder / name).mkdir(parents=True, exist_ok=True)
            array = value.numpy() if task == "segmentation" else value.permute(1, 2, 0).numpy()
            np.save(folder / name / f"{index}.npy", array)
