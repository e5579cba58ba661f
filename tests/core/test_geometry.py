"""keyseg_core.inference.geometry on depth with a known answer: generated scenes as planes (scenes.depth)."""

from __future__ import annotations

import numpy as np
import pytest

from keyseg_core.inference.geometry import (
    Intrinsics,
    depth_to_metres,
    erode,
    target_geometry,
    transform_points,
    valid_depth,
)
from keyseg_core.scenes import make_sample
from keyseg_core.scenes.depth import analytic_centroid, object_depth, plane_depth, to_millimetres

K = Intrinsics(fx=300.0, fy=300.0, cx=160.0, cy=120.0)  # 320x240, the test camera


@pytest.fixture(scope="module")
def scenes():
    return [make_sample(3, "test", i).scene for i in range(12)]


def _instances(scene):
    return [(k, scene.labels == k + 1) for k in range(len(scene.objects)) if (scene.labels == k + 1).sum() >= 60]


def test_centroid_within_1cm_of_the_analytic_value_with_holes(scenes):
    checked = 0
    for i, scene in enumerate(scenes):
        depth = plane_depth(scene.labels, rng=np.random.default_rng(i), holes=0.05)
        assert np.isnan(depth).any() and (depth == 0).any()
        for k, mask in _instances(scene):
            geometry, invalid = target_geometry(mask, depth, K, max_depth=10.0, erode_px=2, min_points=10)
            truth = analytic_centroid(mask, object_depth(k), K)
            assert np.linalg.norm(geometry.centre - truth) < 0.01, (i, k)
            assert geometry.centre[2] == pytest.approx(object_depth(k), abs=1e-6)
            assert invalid == int(mask.sum()) - geometry.valid > 0
            checked += 1
    assert checked >= 30


def test_16uc1_millimetres_and_32fc1_metres_give_the_same_answer(scenes):
    scene = scenes[0]
    metres = plane_depth(scene.labels, rng=np.random.default_rng(1), holes=0.05)
    from_mm = depth_to_metres(to_millimetres(metres), "16UC1")
    from_m = depth_to_metres(metres, "32FC1")
    for k, mask in _instances(scene):
        a, _ = target_geometry(mask, from_mm, K, max_depth=10.0, erode_px=2, min_points=10)
        b, _ = target_geometry(mask, from_m, K, max_depth=10.0, erode_px=2, min_points=10)
        np.testing.assert_allclose(a.centre, b.centre, atol=1e-6)
        np.testing.assert_allclose(a.box_size, b.box_size, atol=1e-5)
        assert a.valid == b.valid


def test_invalid_depths_are_left_out_and_counted():
    depth = np.full((20, 30), 1.5, np.float32)
    depth[0, :10] = 0.0
    depth[1, :10] = np.nan
    depth[2, :10] = 7.0  # beyond max_depth
    depth[3, :10] = np.inf
    assert valid_depth(depth, 5.0).sum() == 20 * 30 - 40
    mask = np.ones_like(depth, bool)
    geometry, invalid = target_geometry(mask, depth, K, max_depth=5.0, erode_px=0, min_points=1)
    assert invalid == 40 and geometry.valid == 560
    assert geometry.centre[2] == pytest.approx(1.5)


def test_too_few_valid_points_give_no_geometry():
    depth = np.full((20, 20), np.nan, np.float32)
    depth[5:7, 5:7] = 1.0
    mask = np.zeros((20, 20), bool)
    mask[4:8, 4:8] = True
    geometry, invalid = target_geometry(mask, depth, K, max_depth=5.0, erode_px=0, min_points=5)
    assert geometry is None and invalid == 12
    # a 4x4 mask eroded by 2 px is empty: no geometry however many depths are valid
    assert target_geometry(mask, np.ones((20, 20), np.float32), K, max_depth=5.0, erode_px=2,
                           min_points=1)[0] is None


def test_box_of_a_tilted_plane_and_erosion():
    mask = np.zeros((40, 60), bool)
    mask[10:30, 20:50] = True
    assert erode(mask, 2).sum() == 16 * 26 and not erode(mask, 2)[10, 20]
    u = np.arange(60)[None, :].repeat(40, 0)
    depth = (1.0 + 0.01 * u).astype(np.float32)  # the plane recedes to the right
    depth[10, 20] = 9.0  # a flying pixel on the border: erosion keeps it out of the box
    geometry, _ = target_geometry(mask, depth, K, max_depth=10.0, erode_px=2, min_points=10)
    assert geometry.box_centre[2] == pytest.approx((1.22 + 1.47) / 2, abs=1e-5)
    assert geometry.box_size[2] == pytest.approx(0.25, abs=1e-5)
    assert geometry.centre[2] == pytest.approx(np.median(1.0 + 0.01 * np.arange(22, 48)), abs=1e-5)


def test_the_cloud_keeps_every_nth_pixel_row_and_column():
    mask = np.ones((24, 32), bool)
    depth = np.ones((24, 32), np.float32)
    whole, _ = target_geometry(mask, depth, K, max_depth=5.0, erode_px=0, min_points=1)
    assert len(whole.cloud) == whole.valid == 24 * 32
    sparse, _ = target_geometry(mask, depth, K, max_depth=5.0, erode_px=0, min_points=1, cloud_step=4)
    assert len(sparse.cloud) == 6 * 8
    np.testing.assert_allclose(sparse.cloud[1], [(4 - 160) / 300, (0 - 120) / 300, 1.0], rtol=1e-6)
    shifted = np.zeros((24, 32), bool)
    shifted[3:, 5:] = True  # the grid stays on image rows and columns divisible by 4
    cloud = target_geometry(shifted, depth, K, max_depth=5.0, erode_px=0, min_points=1, cloud_step=4)[0].cloud
    assert len(cloud) == 5 * 6 and np.allclose((cloud[:, 0] * 300 + 160) % 4, 0, atol=1e-3)


def test_box_matches_the_points_min_and_max():
    rng = np.random.default_rng(0)
    depth = rng.uniform(0.5, 4.0, (60, 80)).astype(np.float32)
    mask = np.zeros((60, 80), bool)
    mask[5:50, 10:70] = rng.random((45, 60)) > 0.2
    geometry, _ = target_geometry(mask, depth, K, max_depth=10.0, erode_px=0, min_points=1)
    v, u = np.nonzero(mask)
    z = depth[v, u].astype(np.float64)
    points = np.stack([(u - K.cx) * z / K.fx, (v - K.cy) * z / K.fy, z], axis=1)
    np.testing.assert_allclose(geometry.box_centre, (points.min(0) + points.max(0)) / 2, atol=1e-6)
    np.testing.assert_allclose(geometry.box_size, points.max(0) - points.min(0), atol=1e-6)


def test_zero_focal_length_is_refused():
    with pytest.raises(ValueError, match="zero or non-finite focal length"):
        Intrinsics.from_k([0.0] * 9)
    k = Intrinsics.from_k([300.0, 0, 160.0, 0, 300.0, 120.0, 0, 0, 1])
    assert k == K


def test_unknown_depth_encoding_is_refused():
    with pytest.raises(ValueError, match="unsupported depth encoding 'rgb8'"):
        depth_to_metres(np.zeros((2, 2), np.uint8), "rgb8")


def test_transform_points_by_a_rotation_and_translation():
    # 90 degrees about z: x -> y
    half = np.sqrt(0.5)
    moved = transform_points(np.array([[1.0, 0.0, 2.0]]), (0.5, 0.0, -1.0), (0.0, 0.0, half, half))
    np.testing.assert_allclose(moved, [[0.5, 1.0, 1.0]], atol=1e-12)
