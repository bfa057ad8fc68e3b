"""Surface distances (tfrobseg.metrics.surface) against hand-derived values and MedPy 0.5."""

import math

import medpy.metric.binary as medpy_binary
import numpy as np
import pytest
from metric_cases import ANISO, assert_matches_medpy, blob, cube
from scipy import ndimage

from tfrobseg import metrics as M


def test_cube_shifted_one_slice_along_thick_axis():
    # 5^3 cube and the same cube shifted by one 3 mm slice. Per direction (98 surface voxels):
    # the uncovered 5x5 face is 3.0 mm away (25 voxels), the 9 inner voxels of the opposite face
    # see the other cube's side wall in-plane (8 at 0.5 mm, the centre at 1.0 mm), the other 64
    # are shared surface (0 mm). Sum 75 + 4 + 1 = 80 → ASSD = 160 / 196 = 40 / 49 mm.
    a = cube((9, 9, 9), (2, 2, 1), 5)
    b = cube((9, 9, 9), (2, 2, 2), 5)
    assert M.assd(a, b, ANISO) == pytest.approx(40 / 49)
    assert M.assd(a, b, ANISO, convention="mean_directed") == pytest.approx(40 / 49)
    # Pooled sorted: 128 x 0, 16 x 0.5, 2 x 1.0, 50 x 3.0; rank 0.95 * 195 = 185.25 → 3.0.
    assert M.hd95(a, b, ANISO) == pytest.approx(3.0)
    assert M.hd95(a, b, ANISO, convention="max_directed") == pytest.approx(3.0)
    assert M.hausdorff(a, b, ANISO) == pytest.approx(3.0)
    assert M.dice(a, b) == pytest.approx(2 * 100 / 250)


def test_cube_shifted_one_voxel_along_fine_axis():
    # Same cubes shifted by one 0.5 mm voxel along axis 0: the 25 uncovered face voxels and the
    # 9 inner voxels of the opposite face are 0.5 mm away, 64 are shared, in each direction
    # → ASSD = 2 * 34 * 0.5 / 196 = 17 / 98 mm.
    a = cube((9, 9, 9), (1, 2, 2), 5)
    b = cube((9, 9, 9), (2, 2, 2), 5)
    assert M.assd(a, b, ANISO) == pytest.approx(17 / 98)
    assert M.hd95(a, b, ANISO) == pytest.approx(0.5)
    assert M.hausdorff(a, b, ANISO) == pytest.approx(0.5)


@pytest.mark.parametrize("shift", [1, 2, 4])
def test_plates_offset_by_known_mm(shift):
    # Two identical single-slice plates k slices apart: every voxel's nearest partner is the
    # one straight across, 3 k mm away.
    a = np.zeros((10, 10, 8), dtype=bool)
    b = np.zeros_like(a)
    a[2:8, 1:9, 1] = True
    b[2:8, 1:9, 1 + shift] = True
    for value in (M.hd95(a, b, ANISO), M.assd(a, b, ANISO), M.hausdorff(a, b, ANISO)):
        assert value == pytest.approx(3.0 * shift)


def test_single_voxels_3d_and_2d():
    a = np.zeros((6, 7, 5), dtype=bool)
    b = np.zeros_like(a)
    a[1, 1, 1] = True
    b[4, 5, 3] = True
    expected = math.sqrt((3 * 0.5) ** 2 + (4 * 0.5) ** 2 + (2 * 3.0) ** 2)
    assert M.hd95(a, b, ANISO) == pytest.approx(expected)
    assert M.assd(a, b, ANISO) == pytest.approx(expected)
    assert M.dice(a, b) == 0.0
    assert M.hd95(a[:, :, 1], b[:, :, 3], (0.5, 0.5)) == pytest.approx(math.hypot(1.5, 2.0))
    same = M.evaluate_case(a, a, ANISO)
    assert (same["dice"], same["hd95"], same["assd"], same["hausdorff"]) == (1.0, 0.0, 0.0, 0.0)


def test_pooled_and_directed_conventions_differ_as_derived():
    # 2-D: a single pixel vs a 3-pixel row starting at it, along an axis of spacing 3 mm.
    # pixel→row: [0]; row→pixel: [0, 3, 6].
    a = np.zeros((3, 5), dtype=bool)
    b = np.zeros_like(a)
    a[1, 1] = True
    b[1, 1:4] = True
    spacing = (0.5, 3.0)
    assert M.assd(a, b, spacing) == pytest.approx(9 / 4)  # mean of [0, 0, 3, 6]
    assert M.assd(a, b, spacing, convention="mean_directed") == pytest.approx((0 + 3) / 2)
    assert M.hd95(a, b, spacing) == pytest.approx(3 + 0.85 * 3)  # rank 0.95 * 3 = 2.85
    assert M.hd95(a, b, spacing, convention="max_directed") == pytest.approx(3 + 0.9 * 3)  # rank 1.9
    assert M.hausdorff(a, b, spacing) == pytest.approx(6.0)
    distances = M.surface_distances(a, b, spacing)
    np.testing.assert_allclose(np.sort(distances.gt_to_pred), [0.0, 3.0, 6.0])


def test_masks_touching_array_border_match_medpy():
    # MedPy erodes with border_value=0: voxels on the array border are surface. Cropping to the
    # bounding box must keep that.
    rng = np.random.default_rng(7)
    shape = (6, 30, 30)
    gt = np.ones(shape, dtype=bool)  # fills the array: its surface is the array's outer layer
    pred = blob(rng, shape, (1.0, 2.0, 2.0), -0.5)
    assert pred[0].any() and pred[:, 0].any()
    # (specificity is undefined with no negatives: MedPy gives NaN, we give 0.0, tested below)
    assert_matches_medpy(pred, gt, ANISO[::-1], keys=("dice", "hd95", "assd", "hausdorff", "sensitivity", "precision"))
    assert M.specificity(pred, gt) == 0.0 and M.specificity(gt, gt) == 1.0
    corner = cube(shape, (0, 0, 0), 4)
    assert_matches_medpy(corner, pred, ANISO[::-1])
    assert M.surface_voxels(gt).sum() == gt.size - (4 * 28 * 28)
    np.testing.assert_array_equal(
        M.surface_voxels(pred), pred ^ ndimage.binary_erosion(pred, ndimage.generate_binary_structure(3, 1))
    )


def test_connectivity_option_matches_medpy():
    rng = np.random.default_rng(11)
    pred = blob(rng, (10, 30, 30), 2.0, 0.3)
    gt = blob(rng, (10, 30, 30), 2.0, 0.3)
    for connectivity in (2, 3):
        assert M.hd95(pred, gt, ANISO, connectivity=connectivity) == pytest.approx(
            medpy_binary.hd95(pred, gt, ANISO, connectivity=connectivity), abs=1e-9
        )
        assert M.assd(pred, gt, ANISO, connectivity=connectivity) == pytest.approx(
            medpy_binary.assd(pred, gt, ANISO, connectivity=connectivity), abs=1e-9
        )


def test_exactly_one_empty_gets_the_documented_worst_case():
    empty = np.zeros((4, 8, 10), dtype=bool)
    full = cube(empty.shape, (1, 2, 2), 3)
    worst = math.sqrt((4 * 3.0) ** 2 + (8 * 0.5) ** 2 + (10 * 0.5) ** 2)
    assert M.worst_case_distance(empty.shape, (3.0, 0.5, 0.5)) == pytest.approx(worst)
    missed = M.evaluate_case(empty, full, (3.0, 0.5, 0.5))
    assert missed["dice"] == 0.0 and missed["f2"] == 0.0 and missed["sensitivity"] == 0.0
    assert missed["hd95"] == missed["assd"] == missed["hausdorff"] == pytest.approx(worst)
    assert (missed["empty_pred"], missed["empty_gt"]) == (True, False)
    spurious = M.evaluate_case(full, empty, (3.0, 0.5, 0.5))
    assert spurious["precision"] == 0.0 and spurious["hd95"] == pytest.approx(worst)
    assert (spurious["empty_pred"], spurious["empty_gt"]) == (False, True)
    assert M.hd95(full, empty, (3.0, 0.5, 0.5), empty_distance=50.0) == 50.0
    with pytest.raises(ValueError):
        M.surface_distances(full, empty)
    with pytest.raises(ValueError):
        M.hd95(full, empty, empty_distance=float("nan"))


def test_single_metrics_pass_their_options_on_to_surface_metrics():
    rng = np.random.default_rng(13)
    pred = blob(rng, (8, 24, 24), (1.0, 2.0, 2.0), 0.3)
    gt = blob(rng, (8, 24, 24), (1.0, 2.0, 2.0), 0.3)
    conventions = {"hd95_convention": "max_directed", "assd_convention": "mean_directed"}
    default = M.surface_metrics(pred, gt, ANISO)
    for options in ({"connectivity": 3}, {"connectivity": 2, "empty_distance": 7.0}):
        full = M.surface_metrics(pred, gt, ANISO, **conventions, **options)
        assert all(full[k] != default[k] for k in ("hd95", "assd"))  # the premise: the options matter here
        assert M.hd95(pred, gt, ANISO, convention="max_directed", **options) == full["hd95"]
        assert M.assd(pred, gt, ANISO, convention="mean_directed", **options) == full["assd"]
        assert M.hausdorff(pred, gt, ANISO, **options) == full["hausdorff"]
        row = M.evaluate_case(pred, gt, ANISO, **conventions, **options)
        assert {k: row[k] for k in full} == full
    empty = np.zeros_like(pred)
    assert M.hausdorff(pred, empty, ANISO, empty_distance=7.0) == M.evaluate_case(empty, gt, empty_distance=7.0)["hd95"] == 7.0
    with pytest.raises(TypeError):
        M.hd95(pred, gt, ANISO, spacing_order="xyz")
