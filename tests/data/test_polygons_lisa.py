"""ReasonSeg rasterisation is LISA's to the pixel: a reference written from LISA's rule (cv2 outline +
fill per polygon from int32-cast points, painted largest first, ties: the later shape first) on the
awkward cases: holes, overlapping target/ignore shapes, points outside the image, lines and points."""

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw

from keyseg_core.data.polygons import parse_shapes, shapes_to_mask

H, W = 40, 50


def reference(shapes: list[dict], height: int = H, width: int = W) -> np.ndarray:
    """LISA's get_mask_from_json rule, restated: one cv2 canvas per shape for its area, then paint."""
    kept = [s for s in shapes if s["label"].lower() != "flag"]

    def draw(canvas, points, value):
        pts = np.array([points], dtype=np.int32)
        cv2.polylines(canvas, pts, True, value, 1)
        cv2.fillPoly(canvas, pts, value)

    areas = []
    for s in kept:
        canvas = np.zeros((height, width), np.uint8)
        draw(canvas, s["points"], 1)
        areas.append(int(canvas.sum()))
    order = sorted(range(len(kept)), key=lambda i: (areas[i], i), reverse=True)  # reversed stable argsort
    mask = np.zeros((height, width), np.uint8)
    for i in order:
        draw(mask, kept[i]["points"], 255 if "ignore" in kept[i]["label"].lower() else 1)
    return mask


def ours(shapes: list[dict], height: int = H, width: int = W) -> np.ndarray:
    return shapes_to_mask(parse_shapes(shapes, "test.json", "r"), height, width)


def shape(label, points):
    return {"label": label, "shape_type": "polygon", "points": points}


KEYHOLE = [[5, 5], [35, 5], [35, 30], [20, 30], [20, 20], [28, 20], [28, 12], [12, 12], [12, 20], [20, 20],
           [20, 30], [5, 30]]  # an outer ring and a hole, joined by a cut: how labelme draws a donut
CASES = {
    "hole": [shape("target", KEYHOLE)],
    "hole_as_ignore": [shape("target", [[4, 4], [40, 4], [40, 34], [4, 34]]),
                       shape("ignore", [[15.7, 12.2], [25.9, 12.2], [25.9, 22.8], [15.7, 22.8]])],
    "overlap_partial": [shape("ignore", [[3.5, 3.5], [30.5, 6.1], [22.2, 28.9]]),
                        shape("target", [[10.2, 8.8], [45.9, 11.1], [38.4, 36.6], [12.1, 30.3]])],
    "target_inside_ignore": [shape("target", [[18, 14], [24, 14], [24, 20]]),
                             shape("ignore region", [[2, 2], [47, 2], [47, 37], [2, 37]])],
    "outside_image": [shape("target", [[-20.5, -7.9], [30.3, -12.0], [70.1, 25.5], [10.0, 60.7]]),
                      shape("ignore", [[45.0, 35.0], [90.0, 35.0], [90.0, 80.0]])],
    "negative_fractions": [shape("target", [[-0.9, -0.5], [12.6, -0.2], [6.4, 9.9]])],
    "self_intersecting": [shape("target", [[5, 5], [40, 30], [40, 5], [5, 30]])],
    "line_and_point": [shape("target", [[3, 3], [30, 20]]), shape("target", [[45.6, 2.2]])],
    "equal_areas_later_first": [shape("target", [[5, 5], [15, 5], [15, 15], [5, 15]]),
                                shape("ignore", [[10, 10], [20, 10], [20, 20], [10, 20]])],
    "flag_skipped": [shape("Flag", [[0, 0], [49, 0], [49, 39]]), shape("target", [[8, 8], [16, 8], [12, 16]])],
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_pixel_identical_to_lisas_rule(name):
    expected = reference(CASES[name])
    got = ours(CASES[name])
    assert got.dtype == np.uint8 and got.shape == (H, W)
    np.testing.assert_array_equal(got, expected)
    assert set(np.unique(got)) <= {0, 1, 255}


def test_cases_by_hand():
    hole = ours(CASES["hole"])
    assert hole[16, 16] == 0 and hole[8, 8] == 1 and hole[25, 30] == 1  # the hole stays background
    nested = ours(CASES["hole_as_ignore"])
    assert nested[17, 20] == 255 and nested[6, 6] == 1
    tie = ours(CASES["equal_areas_later_first"])
    assert tie[12, 12] == 1  # equal areas: the later shape (ignore) is painted first, the target over it
    outside = ours(CASES["outside_image"])
    assert outside[0, 0] == 1 and outside[39, 49] == 255  # clipped, not wrapped or refused
    line = ours(CASES["line_and_point"])
    assert line[3, 3] == 1 and line[20, 30] == 1 and line[2, 45] == 1 and line.sum() < 40


def test_pil_rasterisation_differs_so_the_reference_has_teeth():
    canvas = Image.new("L", (W, H), 0)
    points = [tuple(int(c) for c in p) for p in CASES["overlap_partial"][1]["points"]]
    ImageDraw.Draw(canvas).polygon(points, fill=1, outline=1)
    assert not np.array_equal(np.asarray(canvas), reference([CASES["overlap_partial"][1]]))
