"""Tests for tfrobseg.metrics against hand-derived values, MedPy 0.5 and scikit-image."""

import math

import medpy.metric.binary as medpy_binary
import numpy as np
import pytest
import SimpleITK as sitk
import skimage.metrics as skimage_metrics
from scipy import ndimage

from tfrobseg import metrics as M

ANISO = (0.5, 0.5, 3.0)  # array axis order; the last axis is the thick one


def _cube(shape, start, size):
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(s, s + size) for s in start)] = True
    return mask


def _blob(rng, shape, sigma, level):
    """Smoothed noise thresholded into several irregular components (seeded)."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return field > level * field.std()


MEDPY = {
    "dice": lambda p, g, s: medpy_binary.dc(p, g),
    "hd95": medpy_binary.hd95,
    "assd": medpy_binary.assd,
    "hausdorff": medpy_binary.hd,
    "sensitivity": lambda p, g, s: medpy_binary.sensitivity(p, g),
    "specificity": lambda p, g, s: medpy_binary.specificity(p, g),
    "precision": lambda p, g, s: medpy_binary.precision(p, g),
}


def _assert_matches_medpy(pred, gt, spacing, keys=tuple(MEDPY)):
    ours = M.evaluate_case(pred, gt, spacing)
    for key in keys:
        assert ours[key] == pytest.approx(MEDPY[key](pred, gt, spacing), abs=1e-6), key
        assert isinstance(ours[key], float)


# ---------------------------------------------------------------- analytic cases


def test_cube_shifted_one_slice_along_thick_axis():
    # 5^3 cube and the same cube shifted by one 3 mm slice. Per direction (98 surface voxels):
    # the uncovered 5x5 face is 3.0 mm away (25 voxels), the 9 inner voxels of the opposite face
    # see the other cube's side wall in-plane (8 at 0.5 mm, the centre at 1.0 mm), the other 64
    # are shared surface (0 mm). Sum 75 + 4 + 1 = 80 → ASSD = 160 / 196 = 40 / 49 mm.
    a = _cube((9, 9, 9), (2, 2, 1), 5)
    b = _cube((9, 9, 9), (2, 2, 2), 5)
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
    a = _cube((9, 9, 9), (1, 2, 2), 5)
    b = _cube((9, 9, 9), (2, 2, 2), 5)
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


def test_overlap_counts_by_hand():
    pred = np.array([1, 1, 1, 0, 0, 0, 0, 1], dtype=np.uint8)
    gt = np.array([1, 1, 0, 1, 0, 0, 0, 0], dtype=np.uint8)
    # TP 2, FP 2, FN 1, TN 3
    assert M.confusion(pred, gt) == M.Confusion(tp=2, fp=2, fn=1, tn=3)
    assert M.dice(pred, gt) == pytest.approx(4 / 7)
    assert M.sensitivity(pred, gt) == pytest.approx(2 / 3)
    assert M.specificity(pred, gt) == pytest.approx(3 / 5)
    assert M.precision(pred, gt) == pytest.approx(2 / 4)
    assert M.f_beta(pred, gt, beta=2) == pytest.approx(5 * 2 / (5 * 2 + 4 * 1 + 2))
    assert M.f_beta(pred, gt, beta=1) == pytest.approx(M.dice(pred, gt))


def test_attack_success():
    assert M.attack_success(0.8, 0.2) == pytest.approx(0.75)
    assert M.attack_success(0.5, 0.6) == pytest.approx(-0.2)
    assert M.attack_success(0.0, 0.0) == 0.0
    assert M.attack_success(0.0, 0.3) == 0.0
    np.testing.assert_allclose(M.attack_success([1.0, 0.0, 0.5], [0.5, 0.1, 0.0]), [0.5, 0.0, 1.0])
    with pytest.raises(ValueError):
        M.attack_success(1.2, 0.5)


# ---------------------------------------------------------------- against MedPy


def test_real_masks_reader1_vs_reader2_match_medpy(sample_dir):
    for patient in ("ProstateX-0000", "ProstateX-0001"):
        image1 = sitk.ReadImage(str(sample_dir / "masks" / "whole_gland" / f"{patient}.nii.gz"))
        image2 = sitk.ReadImage(str(sample_dir / "masks" / "whole_gland_second_reader" / f"{patient}.nii.gz"))
        reader1 = sitk.GetArrayFromImage(image1) > 0
        reader2 = sitk.GetArrayFromImage(image2) > 0
        spacing = image1.GetSpacing()[::-1]  # SimpleITK (x, y, z) → array (z, y, x)
        assert spacing == pytest.approx((3.0, 0.5, 0.5))
        # (MedPy's hd is left out here only to save time; the blob tests cover it.)
        _assert_matches_medpy(
            reader2, reader1, spacing, keys=("dice", "hd95", "assd", "sensitivity", "specificity", "precision")
        )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_blobs_3d_match_medpy(seed):
    rng = np.random.default_rng(seed)
    shape = (12, 40, 36)
    pred = _blob(rng, shape, (1.0, 3.0, 3.0), 0.3)
    gt = _blob(rng, shape, (1.0, 3.0, 3.0), 0.3)
    assert pred.any() and gt.any()
    _assert_matches_medpy(pred, gt, (3.0, 0.7, 0.45))
    _assert_matches_medpy(pred, pred & ~_cube(shape, (0, 10, 10), 12), (3.0, 0.7, 0.45))


@pytest.mark.parametrize("seed", [3, 4])
def test_random_blobs_2d_match_medpy(seed):
    rng = np.random.default_rng(seed)
    pred = _blob(rng, (64, 48), 3.0, 0.2)
    gt = _blob(rng, (64, 48), 3.0, 0.2)
    _assert_matches_medpy(pred, gt, (0.5, 1.25))
    _assert_matches_medpy(pred, gt, None)


def test_masks_touching_array_border_match_medpy():
    # MedPy erodes with border_value=0: voxels on the array border are surface. Cropping to the
    # bounding box must keep that.
    rng = np.random.default_rng(7)
    shape = (6, 30, 30)
    gt = np.ones(shape, dtype=bool)  # fills the array: its surface is the array's outer layer
    pred = _blob(rng, shape, (1.0, 2.0, 2.0), -0.5)
    assert pred[0].any() and pred[:, 0].any()
    # (specificity is undefined with no negatives: MedPy gives NaN, we give 0.0, tested below)
    _assert_matches_medpy(pred, gt, ANISO[::-1], keys=("dice", "hd95", "assd", "hausdorff", "sensitivity", "precision"))
    assert M.specificity(pred, gt) == 0.0 and M.specificity(gt, gt) == 1.0
    corner = _cube(shape, (0, 0, 0), 4)
    _assert_matches_medpy(corner, pred, ANISO[::-1])
    assert M.surface_voxels(gt).sum() == gt.size - (4 * 28 * 28)
    np.testing.assert_array_equal(
        M.surface_voxels(pred), pred ^ ndimage.binary_erosion(pred, ndimage.generate_binary_structure(3, 1))
    )


def test_connectivity_option_matches_medpy():
    rng = np.random.default_rng(11)
    pred = _blob(rng, (10, 30, 30), 2.0, 0.3)
    gt = _blob(rng, (10, 30, 30), 2.0, 0.3)
    for connectivity in (2, 3):
        assert M.hd95(pred, gt, ANISO, connectivity=connectivity) == pytest.approx(
            medpy_binary.hd95(pred, gt, ANISO, connectivity=connectivity), abs=1e-9
        )
        assert M.assd(pred, gt, ANISO, connectivity=connectivity) == pytest.approx(
            medpy_binary.assd(pred, gt, ANISO, connectivity=connectivity), abs=1e-9
        )


# ---------------------------------------------------------------- empty masks


def test_both_empty():
    empty = np.zeros((4, 8, 8), dtype=bool)
    row = M.evaluate_case(empty, empty, (3.0, 0.5, 0.5))
    assert row == {
        "dice": 1.0, "hd95": 0.0, "assd": 0.0, "hausdorff": 0.0, "sensitivity": 1.0,
        "specificity": 1.0, "precision": 1.0, "f2": 1.0, "empty_pred": True, "empty_gt": True,
    }


def test_exactly_one_empty_gets_the_documented_worst_case():
    empty = np.zeros((4, 8, 10), dtype=bool)
    full = _cube(empty.shape, (1, 2, 2), 3)
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


def test_evaluate_cases_keeps_every_case_flags_and_order():
    rng = np.random.default_rng(5)
    shape = (6, 32, 32)
    empty = np.zeros(shape, dtype=bool)
    cases = []
    for index in range(5):
        gt = _blob(rng, shape, (1.0, 3.0, 3.0), 0.5)
        pred = empty if index == 1 else _blob(rng, shape, (1.0, 3.0, 3.0), 0.5)
        cases.append({"patient_id": f"P{index}", "epsilon": 0.1 * index, "pred": pred, "gt": gt,
                      "spacing": (3.0, 0.5, 0.5)})
    cases.append({"patient_id": "P5", "epsilon": 0.5, "pred": empty, "gt": empty, "spacing": (3.0, 0.5, 0.5)})
    serial = M.evaluate_cases(cases, workers=1)
    parallel = M.evaluate_cases(cases, workers=2)
    assert list(serial.columns) == ["patient_id", "epsilon", *M.METRIC_KEYS]
    assert list(serial["patient_id"]) == [f"P{i}" for i in range(6)]
    assert serial.equals(parallel)
    assert not serial[["dice", "hd95", "assd"]].isna().any().any()
    assert serial["empty_pred"].sum() == 2 and serial["empty_gt"].sum() == 1
    for row, case in zip(serial.to_dict("records"), cases):
        expected = M.evaluate_case(case["pred"], case["gt"], case["spacing"])
        assert {k: row[k] for k in M.METRIC_KEYS} == expected
    tuples = M.evaluate_cases([(c["pred"], c["gt"], c["spacing"]) for c in cases[:2]])
    assert list(tuples.columns) == list(M.METRIC_KEYS) and len(tuples) == 2


def test_evaluate_slices_uses_in_plane_spacing():
    pred = np.zeros((3, 10, 10), dtype=bool)
    gt = np.zeros_like(pred)
    pred[1, 2, 2] = gt[1, 2, 5] = True
    pred[2, 4:7, 4:7] = gt[2, 4:7, 4:7] = True
    table = M.evaluate_slices(pred, gt, (3.0, 0.5, 0.8))
    assert list(table["slice_index"]) == [0, 1, 2]
    assert table.loc[0, "dice"] == 1.0 and table.loc[0, "empty_pred"] and table.loc[0, "empty_gt"]
    assert table.loc[1, "hd95"] == pytest.approx(3 * 0.8)
    assert table.loc[2, "dice"] == 1.0 and table.loc[2, "hd95"] == 0.0
    along_x = M.evaluate_slices(pred, gt, (3.0, 0.5, 0.8), axis=2)
    assert len(along_x) == 10


def test_stack_slices():
    slices = [(2, np.full((4, 4, 1), 2.0)), (0, np.zeros((4, 4))), (1, np.ones((4, 4, 1)))]
    volume = M.stack_slices(slices, n_slices=3)
    assert volume.shape == (3, 4, 4)
    np.testing.assert_array_equal(volume[:, 0, 0], [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="missing"):
        M.stack_slices(slices[:2], n_slices=3)
    with pytest.raises(ValueError, match="duplicate"):
        M.stack_slices(slices + [(0, np.zeros((4, 4)))])


def test_invalid_inputs_are_rejected_clearly():
    mask = np.zeros((4, 5), dtype=bool)
    with pytest.raises(ValueError, match="threshold"):
        M.dice(np.full((4, 5), 0.3), mask)
    with pytest.raises(ValueError, match="shapes differ"):
        M.dice(mask, np.zeros((5, 4), dtype=bool))
    with pytest.raises(ValueError, match="spacing"):
        M.hd95(mask, mask, (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="positive"):
        M.hd95(mask, mask, (1.0, 0.0))
    with pytest.raises(ValueError, match="convention"):
        M.hd95(mask, mask, convention="monai")
    with pytest.raises(ValueError, match="connectivity"):
        M.assd(mask, mask, connectivity=3)
    with pytest.raises(ValueError, match="P9"):
        M.evaluate_cases([{"patient_id": "P9", "pred": mask, "gt": mask[:, :4]}])
    with pytest.raises(ValueError, match="workers"):
        M.evaluate_cases([], workers=0)


# ---------------------------------------------------------------- image quality


def _images(seed, shape=(48, 40)):
    rng = np.random.default_rng(seed)
    clean = ndimage.gaussian_filter(rng.standard_normal(shape), 2.0) * 3.0 + 1.0
    adv = clean + 0.1 * np.sign(rng.standard_normal(shape))
    return clean, adv


def test_psnr_rmse_match_skimage_and_numpy():
    clean, adv = _images(0)
    data_range = clean.max() - clean.min()
    assert M.psnr(clean, adv) == pytest.approx(
        skimage_metrics.peak_signal_noise_ratio(clean, adv, data_range=data_range), rel=1e-12
    )
    assert M.psnr(clean, adv, data_range=4.0) == pytest.approx(
        skimage_metrics.peak_signal_noise_ratio(clean, adv, data_range=4.0), rel=1e-12
    )
    # FGSM-like ±0.1 everywhere: RMSE is exactly 0.1.
    assert M.rmse(clean, adv) == pytest.approx(0.1)
    assert M.psnr(clean, clean) == float("inf")
    with pytest.raises(ValueError, match="data range"):
        M.psnr(np.ones((4, 4)), np.zeros((4, 4)))


def test_ssim_matches_skimage_gaussian_window():
    clean, adv = _images(1)
    data_range = clean.max() - clean.min()

    def reference(x, y, r):
        return skimage_metrics.structural_similarity(
            x, y, data_range=r, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
        )

    assert M.ssim(clean, adv) == pytest.approx(reference(clean, adv, data_range), abs=1e-10)
    assert M.ssim(clean[..., None], adv[..., None], data_range=5.0) == pytest.approx(
        reference(clean, adv, 5.0), abs=1e-10
    )
    clean2, adv2 = _images(2)
    stack_clean, stack_adv = np.stack([clean, clean2]), np.stack([adv, adv2])
    expected = np.mean([reference(clean, adv, 7.0), reference(clean2, adv2, 7.0)])
    assert M.ssim(stack_clean, stack_adv, data_range=7.0) == pytest.approx(expected, abs=1e-10)
    assert M.ssim(clean, clean) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 11"):
        M.ssim(np.ones((8, 8)), np.ones((8, 8)))
