"""Ray-caster geometry: hand-made scenes with known answers and geometric properties of every hit."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.data.raycast import Box, Camera, Cylinder, Scene, Sphere, yaw_matrix

FRONT_WALL = 5  # +z face of a room box


def _room(distance: float) -> Box:
    """A huge room whose +z wall is ``distance`` ahead of a camera at the origin."""
    return Box(
        center=np.array([0.0, 0.0, distance - 100.0]),
        half=np.array([100.0, 100.0, 100.0]),
        surfaces=tuple(range(6)),
        inside=True,
    )


def test_camera_facing_a_wall_sees_its_distance_and_normal_everywhere() -> None:
    camera = Camera(position=(0.0, 0.0, 0.0), yaw=0.0, pitch=0.0, height=6, width=8)
    rays = camera.rays()
    hits = Scene([_room(3.0)]).cast(rays.origins, rays.directions)
    np.testing.assert_allclose(hits.distance * rays.axial, 3.0, rtol=1e-12)
    assert np.all(hits.surface == FRONT_WALL)
    np.testing.assert_allclose(camera.to_camera(hits.normal), np.tile([0.0, 0.0, -1.0], (48, 1)), atol=1e-12)
    # Off-axis rays travel further than the z-depth: t = depth / cos(angle to the axis).
    np.testing.assert_allclose(hits.distance, 3.0 / rays.axial, rtol=1e-12)


def test_turned_camera_sees_the_side_wall() -> None:
    # yaw = +90° looks along +x; the +x wall of a room centred at the origin with half-width 2.5.
    camera = Camera(position=(0.0, 1.0, 0.0), yaw=math.pi / 2, pitch=0.0, height=1, width=1)
    room = Box(
        center=np.array([0.0, 0.0, 0.0]),
        half=np.array([2.5, 3.0, 4.0]),
        surfaces=tuple(range(6)),
        inside=True,
    )
    rays = camera.rays()
    hits = Scene([room]).cast(rays.origins, rays.directions)
    np.testing.assert_allclose(hits.distance, [2.5])
    assert hits.surface.tolist() == [1]
    np.testing.assert_allclose(hits.normal, [[-1.0, 0.0, 0.0]], atol=1e-12)


def test_single_pixel_ray_is_the_optical_axis_and_hits_a_sphere_in_front() -> None:
    camera = Camera(position=(0.0, 0.0, 0.0), yaw=0.0, pitch=0.0, height=1, width=1)
    rays = camera.rays()
    sphere = Sphere(center=np.array([0.0, 0.0, 5.0]), radius=1.0, surfaces=(7,))
    hits = Scene([_room(10.0), sphere]).cast(rays.origins, rays.directions)
    np.testing.assert_allclose(hits.distance, [4.0])
    assert hits.surface.tolist() == [7]
    np.testing.assert_allclose(camera.to_camera(hits.normal), [[0.0, 0.0, -1.0]], atol=1e-12)


def test_nearest_primitive_wins_and_occlusion_stops_at_the_limit() -> None:
    origins = np.zeros((1, 3))
    directions = np.array([[0.0, 0.0, 1.0]])
    near = Box(center=np.array([0.0, 0.0, 2.0]), half=np.array([0.5, 0.5, 0.5]), surfaces=(1,) * 6)
    far = Sphere(center=np.array([0.0, 0.0, 6.0]), radius=1.0, surfaces=(2,))
    scene = Scene([far, near])
    hits = scene.cast(origins, directions)
    assert hits.distance.tolist() == [1.5] and hits.surface.tolist() == [1]
    assert scene.occluded(origins, directions, 1.6).tolist() == [True]
    assert scene.occluded(origins, directions, 1.4).tolist() == [False]


def test_rotated_box_corner_faces_the_ray() -> None:
    # A unit cube turned by 45° shows its vertical edge at distance 5 - sqrt(2) along +z.
    box = Box(
        center=np.array([0.0, 0.0, 5.0]),
        half=np.array([1.0, 1.0, 1.0]),
        surfaces=tuple(range(6)),
        yaw=math.pi / 4,
    )
    t, _, _ = box.intersect(np.zeros((1, 3)), np.array([[0.0, 0.0, 1.0]]))
    np.testing.assert_allclose(t, [5.0 - math.sqrt(2.0)])


def test_cylinder_caps_and_side() -> None:
    cylinder = Cylinder(base=np.array([0.0, 0.0, 0.0]), radius=1.0, height=2.0, surfaces=(10, 11, 12))
    origins = np.array([[0.3, 5.0, 0.2], [0.3, -5.0, 0.2], [0.0, 1.0, -4.0], [0.0, 3.0, -4.0]])
    directions = np.array([[0.0, -1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    t, normal, face = cylinder.intersect(origins, directions)
    np.testing.assert_allclose(t[:3], [3.0, 5.0, 3.0])
    assert face[:3].tolist() == [2, 1, 0]
    np.testing.assert_allclose(normal[:3], [[0, 1, 0], [0, -1, 0], [0, 0, -1]], atol=1e-12)
    assert math.isinf(t[3])  # passes above the top


def test_camera_basis_is_right_handed_and_orthonormal() -> None:
    camera = Camera(position=(0.0, 0.0, 0.0), yaw=0.7, pitch=-0.3, height=2, width=2)
    right, down, forward = camera.basis()
    np.testing.assert_allclose(camera.basis() @ camera.basis().T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(np.cross(right, down), forward, atol=1e-12)
    assert down[1] < 0  # down points towards the floor
    level = Camera(position=(0.0, 0.0, 0.0), yaw=0.0, pitch=0.0, height=2, width=2).basis()
    np.testing.assert_allclose(level, [[-1, 0, 0], [0, -1, 0], [0, 0, 1]], atol=1e-12)


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="positive half-extents"):
        Box(center=np.zeros(3), half=np.array([1.0, 0.0, 1.0]), surfaces=(0,) * 6)
    with pytest.raises(ValueError, match="6 surface ids"):
        Box(center=np.zeros(3), half=np.ones(3), surfaces=(0,))
    with pytest.raises(ValueError, match="fov_x"):
        Camera(position=(0.0, 0.0, 0.0), yaw=0.0, pitch=0.0, height=2, width=2, fov_x=4.0).rays()


def _inside_box(box: Box, points: np.ndarray) -> np.ndarray:
    return np.abs((points - box.center) @ yaw_matrix(box.yaw)) / box.half


def _check_first_hit(
    points_ratio: np.ndarray, t: np.ndarray, origins: np.ndarray, directions: np.ndarray, inside
) -> None:  # type: ignore[no-untyped-def]
    """Every hit lies on the surface (ratio 1) and no earlier sampled point is inside the solid."""
    fractions = np.linspace(0.0, 0.999, 200)
    for i in range(len(t)):
        horizon = t[i] if np.isfinite(t[i]) else 40.0
        samples = origins[i] + (fractions * horizon)[:, None] * directions[i]
        assert not np.any(inside(samples) < 1.0 - 1e-9), f"ray {i} passes through the solid before its hit"
        if np.isfinite(t[i]):
            np.testing.assert_allclose(points_ratio[i], 1.0, atol=1e-9)


rays_strategy = st.tuples(
    st.lists(st.floats(-6, 6), min_size=3, max_size=3), st.lists(st.floats(-1, 1), min_size=3, max_size=3)
).filter(lambda r: np.linalg.norm(r[1]) > 0.1)


@settings(max_examples=25, deadline=None)
@given(
    rays=st.lists(rays_strategy, min_size=1, max_size=8),
    half=st.lists(st.floats(0.2, 2.0), min_size=3, max_size=3),
    yaw=st.floats(-math.pi, math.pi),
)
def test_box_hits_are_first_surface_points_with_outward_normals(rays, half, yaw) -> None:  # type: ignore[no-untyped-def]
    box = Box(center=np.array([0.5, -0.2, 0.3]), half=np.array(half), surfaces=tuple(range(6)), yaw=yaw)
    origins = np.array([r[0] for r in rays], dtype=float)
    directions = np.array([r[1] for r in rays], dtype=float)
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    outside = _inside_box(box, origins).max(axis=1) > 1.0 + 1e-6
    origins, directions = origins[outside], directions[outside]
    if len(origins) == 0:
        return
    t, normal, face = box.intersect(origins, directions)
    hit = np.isfinite(t)
    points = origins + np.where(hit, t, 0.0)[:, None] * directions
    _check_first_hit(
        _inside_box(box, points).max(axis=1),
        t,
        origins,
        directions,
        lambda p: _inside_box(box, p).max(axis=1),
    )
    for i in np.flatnonzero(hit):
        local_normal = normal[i] @ yaw_matrix(yaw)
        axis, sign = face[i] // 2, 1.0 if face[i] % 2 else -1.0
        np.testing.assert_allclose(local_normal, sign * np.eye(3)[axis], atol=1e-9)
        assert normal[i] @ directions[i] < 0


@settings(max_examples=25, deadline=None)
@given(
    rays=st.lists(rays_strategy, min_size=1, max_size=8),
    radius=st.floats(0.2, 2.0),
    height=st.floats(0.2, 3.0),
)
def test_sphere_and_cylinder_hits_are_first_surface_points(rays, radius, height) -> None:  # type: ignore[no-untyped-def]
    origins = np.array([r[0] for r in rays], dtype=float)
    directions = np.array([r[1] for r in rays], dtype=float)
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    center = np.array([0.3, 0.1, -0.4])
    sphere = Sphere(center=center, radius=radius, surfaces=(0,))
    cylinder = Cylinder(base=center, radius=radius, height=height, surfaces=(0, 1, 2))

    def in_sphere(p: np.ndarray) -> np.ndarray:
        return np.linalg.norm(p - center, axis=1) / radius

    def in_cylinder(p: np.ndarray) -> np.ndarray:
        radial = np.hypot(p[:, 0] - center[0], p[:, 2] - center[2]) / radius
        vertical = np.abs(p[:, 1] - center[1] - height / 2) / (height / 2)
        return np.maximum(radial, vertical)

    for shape, inside in ((sphere, in_sphere), (cylinder, in_cylinder)):
        keep = inside(origins) > 1.0 + 1e-6
        o, d = origins[keep], directions[keep]
        if len(o) == 0:
            continue
        t, normal, _ = shape.intersect(o, d)
        hit = np.isfinite(t)
        points = o + np.where(hit, t, 0.0)[:, None] * d
        _check_first_hit(inside(points), t, o, d, inside)
        np.testing.assert_allclose(np.linalg.norm(normal[hit], axis=1), 1.0, atol=1e-9)
        assert np.all(np.einsum("ij,ij->i", normal[hit], d[hit]) <= 1e-9)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_culled_scene_cast_equals_brute_force_nearest_hit(seed: int) -> None:
    rng = np.random.default_rng(seed)
    primitives = [
        Box(
            center=rng.uniform(-3, 3, 3),
            half=rng.uniform(0.2, 1.0, 3),
            surfaces=tuple(range(6)),
            yaw=rng.uniform(0, 3),
        ),
        Sphere(center=rng.uniform(-3, 3, 3), radius=float(rng.uniform(0.2, 1.0)), surfaces=(6,)),
        Cylinder(
            base=rng.uniform(-3, 3, 3), radius=float(rng.uniform(0.2, 1.0)), height=1.5, surfaces=(7, 8, 9)
        ),
        Box(center=np.zeros(3), half=np.full(3, 8.0), surfaces=tuple(range(10, 16)), inside=True),
    ]
    camera = Camera(
        position=(0.0, 0.0, -6.0), yaw=float(rng.uniform(-0.3, 0.3)), pitch=0.0, height=12, width=12
    )
    rays = camera.rays()
    hits = Scene(primitives).cast(rays.origins, rays.directions)
    each = [p.intersect(rays.origins, rays.directions) for p in primitives]
    distances = np.stack([t for t, _, _ in each], axis=1)
    nearest = distances.argmin(axis=1)
    np.testing.assert_array_equal(hits.distance, distances.min(axis=1))
    expected_surface = [primitives[k].surfaces[each[k][2][i]] for i, k in enumerate(nearest)]
    np.testing.assert_array_equal(hits.surface, expected_surface)
    limit = np.full(len(nearest), 5.0)
    np.testing.assert_array_equal(
        Scene(primitives).occluded(rays.origins, rays.directions, limit), distances.min(1) < 5.0
    )
