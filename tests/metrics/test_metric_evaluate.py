"""Whole-case evaluation (tfrobseg.metrics.evaluate) against MedPy 0.5, on real and random masks."""

import numpy as np
import pytest
import SimpleITK as sitk
from metric_cases import assert_matches_medpy, blob, cube

from tfrobseg import metrics as M


def test_real_masks_reader1_vs_reader2_match_medpy(sample_dir):
    for patient in ("ProstateX-0000", "ProstateX-0001"):
        image1 = sitk.ReadImage(str(sample_dir / "masks" / "whole_gland" / f"{patient}.nii.gz"))
        image2 = sitk.ReadImage(str(sample_dir / "masks" / "whole_gland_second_reader" / f"{patient}.nii.gz"))
        reader1 = sitk.GetArrayFromImage(image1) > 0
        reader2 = sitk.GetArrayFromImage(image2) > 0
        spacing = image1.GetSpacing()[::-1]  # SimpleITK (x, y, z) → array (z, y, x)
        assert spacing == pytest.approx((3.0, 0.5, 0.5))
        # (MedPy's hd is left out here only to save time; the blob tests cover it.)
        assert_matches_medpy(
            reader2, reader1, spacing, keys=("dice", "hd95", "assd", "sensitivity", "specificity", "precision")
        )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_blobs_3d_match_medpy(seed):
    rng = np.random.default_rng(seed)
    shape = (12, 40, 36)
    pred = blob(rng, shape, (1.0, 3.0, 3.0), 0.3)
    gt = blob(rng, shape, (1.0, 3.0, 3.0), 0.3)
    assert pred.any() and gt.any()
    assert_matches_medpy(pred, gt, (3.0, 0.7, 0.45))
    assert_matches_medpy(pred, pred & ~cube(shape, (0, 10, 10), 12), (3.0, 0.7, 0.45))


@pytest.mark.parametrize("seed", [3, 4])
def test_random_blobs_2d_match_medpy(seed):
    rng = np.random.default_rng(seed)
    pred = blob(rng, (64, 48), 3.0, 0.2)
    gt = blob(rng, (64, 48), 3.0, 0.2)
    assert_matches_medpy(pred, gt, (0.5, 1.25))
    assert_matches_medpy(pred, gt, None)


def test_both_empty():
    empty = np.zeros((4, 8, 8), dtype=bool)
    row = M.evaluate_case(empty, empty, (3.0, 0.5, 0.5))
    assert row == {
        "dice": 1.0, "hd95": 0.0, "assd": 0.0, "hausdorff": 0.0, "sensitivity": 1.0,
        "specificity": 1.0, "precision": 1.0, "f2": 1.0, "empty_pred": True, "empty_gt": True,
    }


def test_evaluate_cases_keeps_every_case_flags_and_order():
    rng = np.random.default_rng(5)
    shape = (6, 32, 32)
    empty = np.zeros(shape, dtype=bool)
    cases = []
    for index in range(5):
        gt = blob(rng, shape, (1.0, 3.0, 3.0), 0.5)
        pred = empty if index == 1 else blob(rng, shape, (1.0, 3.0, 3.0), 0.5)
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
