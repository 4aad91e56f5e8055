"""Analytic ray casting of boxes, spheres and vertical cylinders, vectorised over rays (numpy).

World coordinates have ``y`` up. A :class:`Camera` follows the computer-vision
convention (``x`` right, ``y`` down, ``z`` forward); its depth is the distance
along the optical axis (``z``-depth, as a Kinect reports it), not along the ray.
Every primitive returns, per ray, the nearest hit distance ``t > EPSILON`` (``inf``
where it misses), the unit normal facing the ray origin and the index of the face
it hit, which :class:`Scene` maps to a global surface id.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

EPSILON = 1e-6
"""Hits closer than this to the ray origin are ignored (self-intersection guard)."""

PARALLEL = 1e-12
"""Direction components at most this large count as parallel to an axis or plane."""

Intersection = tuple[np.ndarray, np.ndarray, np.ndarray]
"""Per ray: distance ``t`` ``[N]``, unit normal ``[N, 3]``, face index ``[N]``."""


def yaw_matrix(yaw: float) -> np.ndarray:
    """Rotation by ``yaw`` radians about the world ``y`` axis (columns: the local axes in world)."""
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _miss(count: int) -> Intersection:
    return np.full(count, np.inf), np.zeros((count, 3)), np.zeros(count, dtype=np.int64)


class Primitive(ABC):
    """A solid (or, for a room, hollow) shape; ``surfaces[face]`` is the scene's surface id of each face."""

    surfaces: tuple[int, ...]

    @abstractmethod
    def intersect(self, origins: np.ndarray, directions: np.ndarray) -> Intersection:
        """Nearest hit of each ray ``origins[i] + t directions[i]`` (directions of unit length)."""

    @abstractmethod
    def bounds(self) -> tuple[np.ndarray, float] | None:
        """A bounding sphere (centre, radius) for culling rays, or ``None`` to test every ray."""


@dataclass
class Box(Primitive):
    """A box of half-extents ``half`` rotated by ``yaw`` about the vertical axis through ``center``.

    Faces are ordered ``-x, +x, -y, +y, -z, +z`` (local axes). With ``inside=True``
    the box is a room seen from within: rays starting inside hit its far walls and
    the normals point into the room.
    """

    center: np.ndarray
    half: np.ndarray
    surfaces: tuple[int, ...]
    yaw: float = 0.0
    inside: bool = False
    rotation: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.center = np.asarray(self.center, dtype=float)
        self.half = np.asarray(self.half, dtype=float)
        if self.center.shape != (3,) or self.half.shape != (3,) or np.any(self.half <= 0):
            raise ValueError(f"a box needs a 3-vector center and positive half-extents, got {self.half}")
        if len(self.surfaces) != 6:
            raise ValueError(f"a box needs 6 surface ids (one per face), got {len(self.surfaces)}")
        self.rotation = yaw_matrix(self.yaw)

    def bounds(self) -> tuple[np.ndarray, float] | None:
        return None if self.inside else (self.center, float(np.linalg.norm(self.half)))

    def intersect(self, origins: np.ndarray, directions: np.ndarray) -> Intersection:
        o = (origins - self.center) @ self.rotation
        d = directions @ self.rotation
        parallel = np.abs(d) <= PARALLEL
        safe = np.where(parallel, 1.0, d)
        t1, t2 = (-self.half - o) / safe, (self.half - o) / safe
        within = np.abs(o) <= self.half
        t_low = np.where(parallel, np.where(within, -np.inf, np.inf), np.minimum(t1, t2))
        t_high = np.where(parallel, np.where(within, np.inf, -np.inf), np.maximum(t1, t2))
        t_near, t_far = t_low.max(axis=1), t_high.min(axis=1)
        rows = np.arange(len(o))
        if self.inside:
            axis = t_high.argmin(axis=1)
            t = np.where((t_near <= t_far) & (t_far > EPSILON), t_far, np.inf)
            positive = d[rows, axis] > 0
        else:
            axis = t_low.argmax(axis=1)
            t = np.where((t_near <= t_far) & (t_near > EPSILON), t_near, np.inf)
            positive = d[rows, axis] < 0
        local = np.zeros_like(o)
        local[rows, axis] = -np.sign(d[rows, axis])
        normal = local @ self.rotation.T
        face = 2 * axis + positive.astype(np.int64)
        return t, normal, face


@dataclass
class Sphere(Primitive):
    """A sphere; one face."""

    center: np.ndarray
    radius: float
    surfaces: tuple[int, ...]

    def __post_init__(self) -> None:
        self.center = np.asarray(self.center, dtype=float)
        if self.radius <= 0:
            raise ValueError(f"a sphere needs a positive radius, got {self.radius}")

    def bounds(self) -> tuple[np.ndarray, float] | None:
        return self.center, self.radius

    def intersect(self, origins: np.ndarray, directions: np.ndarray) -> Intersection:
        offset = origins - self.center
        b = np.einsum("ij,ij->i", offset, directions)
        c = np.einsum("ij,ij->i", offset, offset) - self.radius**2
        discriminant = b * b - c
        root = np.sqrt(np.maximum(discriminant, 0.0))
        t_near = -b - root
        t = np.where((discriminant >= 0) & (t_near > EPSILON), t_near, np.inf)
        finite = np.isfinite(t)
        points = origins + np.where(finite, t, 0.0)[:, None] * directions
        normal = np.where(finite[:, None], (points - self.center) / self.radius, 0.0)
        return t, normal, np.zeros(len(origins), dtype=np.int64)


@dataclass
class Cylinder(Primitive):
    """A vertical cylinder standing on ``base`` (the centre of its bottom disc).

    Faces: 0 the side, 1 the bottom disc, 2 the top disc.
    """

    base: np.ndarray
    radius: float
    height: float
    surfaces: tuple[int, ...]

    def __post_init__(self) -> None:
        self.base = np.asarray(self.base, dtype=float)
        if self.radius <= 0 or self.height <= 0:
            raise ValueError(f"a cylinder needs positive radius and height, got {self.radius}, {self.height}")
        if len(self.surfaces) != 3:
            raise ValueError(f"a cylinder needs 3 surface ids (side, bottom, top), got {len(self.surfaces)}")

    def bounds(self) -> tuple[np.ndarray, float] | None:
        center = self.base + np.array([0.0, self.height / 2, 0.0])
        return center, math.hypot(self.radius, self.height / 2)

    def intersect(self, origins: np.ndarray, directions: np.ndarray) -> Intersection:
        count = len(origins)
        ox, oz = origins[:, 0] - self.base[0], origins[:, 2] - self.base[2]
        dx, dz = directions[:, 0], directions[:, 2]
        a = dx * dx + dz * dz
        b = ox * dx + oz * dz
        c = ox * ox + oz * oz - self.radius**2
        discriminant = b * b - a * c
        steep = a <= PARALLEL**2
        t_side = (-b - np.sqrt(np.maximum(discriminant, 0.0))) / np.where(steep, 1.0, a)
        y_side = origins[:, 1] + t_side * directions[:, 1]
        side_ok = ~steep & (discriminant >= 0) & (t_side > EPSILON)
        side_ok &= (y_side >= self.base[1]) & (y_side <= self.base[1] + self.height)
        candidates = [np.where(side_ok, t_side, np.inf)]
        for cap_y in (self.base[1], self.base[1] + self.height):
            crossing = np.abs(directions[:, 1]) > PARALLEL
            t_cap = np.where(
                crossing, (cap_y - origins[:, 1]) / np.where(crossing, directions[:, 1], 1.0), 0.0
            )
            px, pz = ox + t_cap * dx, oz + t_cap * dz
            cap_ok = crossing & (t_cap > EPSILON) & (px * px + pz * pz <= self.radius**2)
            candidates.append(np.where(cap_ok, t_cap, np.inf))
        stacked = np.stack(candidates, axis=1)
        face = stacked.argmin(axis=1)
        t = stacked[np.arange(count), face]
        hit = np.isfinite(t)
        points = origins + np.where(hit, t, 0.0)[:, None] * directions
        side_normal = np.stack([points[:, 0] - self.base[0], np.zeros(count), points[:, 2] - self.base[2]], 1)
        side_normal /= self.radius
        cap_normal = np.zeros((count, 3))
        cap_normal[:, 1] = np.where(face == 2, 1.0, -1.0)
        normal = np.where((face == 0)[:, None], side_normal, cap_normal)
        normal = np.where(hit[:, None], normal, 0.0)
        return t, normal, np.where(hit, face, 0)


class Hits(NamedTuple):
    """The nearest hit of each ray in a scene."""

    distance: np.ndarray
    """Ray parameter ``t`` ``[N]``; ``inf`` where the ray escapes."""
    normal: np.ndarray
    """Unit world normal facing the ray origin ``[N, 3]``; zero where the ray escapes."""
    surface: np.ndarray
    """Surface id ``[N]``; ``-1`` where the ray escapes."""


@dataclass
class Scene:
    """A list of primitives; casts rays against all of them and keeps the nearest hit."""

    primitives: list[Primitive] = field(default_factory=list)

    @staticmethod
    def _reachable(primitive: Primitive, origins: np.ndarray, directions: np.ndarray) -> np.ndarray:
        """Indices of the rays that meet the primitive's bounding sphere ahead of their origin."""
        bounds = primitive.bounds()
        if bounds is None:
            return np.arange(len(origins))
        center, radius = bounds
        offset = origins - center
        b = np.einsum("ij,ij->i", offset, directions)
        c = np.einsum("ij,ij->i", offset, offset) - (radius * (1 + 1e-9) + EPSILON) ** 2
        return np.flatnonzero((b * b >= c) & ((b <= 0) | (c <= 0)))

    def cast(self, origins: np.ndarray, directions: np.ndarray) -> Hits:
        distance, normal, _ = _miss(len(origins))
        surface = np.full(len(origins), -1, dtype=np.int64)
        for primitive in self.primitives:
            index = self._reachable(primitive, origins, directions)
            t, n, face = primitive.intersect(origins[index], directions[index])
            closer = t < distance[index]
            chosen = index[closer]
            distance[chosen] = t[closer]
            normal[chosen] = n[closer]
            surface[chosen] = np.asarray(primitive.surfaces)[face[closer]]
        return Hits(distance, normal, surface)

    def occluded(self, origins: np.ndarray, directions: np.ndarray, limit: np.ndarray | float) -> np.ndarray:
        """Whether anything lies on each ray before distance ``limit`` (shadow test)."""
        blocked = np.zeros(len(origins), dtype=bool)
        limits = np.broadcast_to(limit, (len(origins),))
        for primitive in self.primitives:
            index = self._reachable(primitive, origins, directions)
            t, _, _ = primitive.intersect(origins[index], directions[index])
            blocked[index[t < limits[index]]] = True
        return blocked


class Rays(NamedTuple):
    """One ray per pixel, row-major."""

    origins: np.ndarray
    """``[H·W, 3]``."""
    directions: np.ndarray
    """Unit directions ``[H·W, 3]``."""
    axial: np.ndarray
    """Cosine between each ray and the optical axis ``[H·W]`` (``z``-depth = ``t · axial``)."""


@dataclass(frozen=True)
class Camera:
    """A pinhole camera at ``position`` turned by ``yaw`` (about world ``y``; 0 looks along ``+z``)
    and ``pitch`` (positive looks up), with horizontal field of view ``fov_x`` radians."""

    position: tuple[float, float, float]
    yaw: float
    pitch: float
    height: int
    width: int
    fov_x: float = math.radians(60.0)

    def basis(self) -> np.ndarray:
        """Rows: the camera's right, down and forward axes in world coordinates."""
        forward = np.array(
            [
                math.sin(self.yaw) * math.cos(self.pitch),
                math.sin(self.pitch),
                math.cos(self.yaw) * math.cos(self.pitch),
            ]
        )
        right = np.cross(forward, [0.0, 1.0, 0.0])
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        return np.stack([right, down, forward])

    def rays(self) -> Rays:
        """The ray through each pixel's centre."""
        if self.height < 1 or self.width < 1:
            raise ValueError(f"image size must be positive, got {self.height}x{self.width}")
        if not 0 < self.fov_x < math.pi:
            raise ValueError(f"fov_x must lie in (0, pi) radians, got {self.fov_x}")
        focal = (self.width / 2) / math.tan(self.fov_x / 2)
        rows, cols = np.meshgrid(np.arange(self.height), np.arange(self.width), indexing="ij")
        u = (cols.ravel() + 0.5 - self.width / 2) / focal
        v = (rows.ravel() + 0.5 - self.height / 2) / focal
        camera_dirs = np.stack([u, v, np.ones_like(u)], axis=1)
        lengths = np.linalg.norm(camera_dirs, axis=1)
        directions = (camera_dirs / lengths[:, None]) @ self.basis()
        origins = np.broadcast_to(np.asarray(self.position, dtype=float), directions.shape)
        return Rays(np.ascontiguousarray(origins), directions, 1.0 / lengths)

    def to_camera(self, vectors: np.ndarray) -> np.ndarray:
        """World vectors ``[N, 3]`` in camera coordinates (right, down, forward)."""
        rotated: np.ndarray = vectors @ self.basis().T
        return rotated
