"""Input side: DICOM series (tfrobseg.dataset.dicom), discovery and series choice (tfrobseg.dataset.discovery),
masks (tfrobseg.dataset.masks), checked on the real ProstateX sample and small hand-made files."""

import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from tfrobseg.dataset.dicom import list_series, read_series
from tfrobseg.dataset.discovery import (
    choose_t2_series,
    find_patients,
    is_t2_axial,
    read_image_list,
)
from tfrobseg.dataset.masks import mask_volume_ml, match_mask, read_mask
from tfrobseg.errors import InputError


@pytest.fixture(scope="module")
def series_0001(sample_dir):
    return list_series(sample_dir / "images" / "ProstateX-0001")


def test_image_list_parses_prostatex_format(sample_dir, tmp_path):
    listed = read_image_list(sample_dir / "image_list.csv")
    assert listed == {"ProstateX-0000": ("t2_tse_tra", 4), "ProstateX-0001": ("t2_tse_tra", 10)}
    bad = tmp_path / "list.csv"
    bad.write_text("T2\nProstateX-0000_t2_tse_tra_x\n")
    with pytest.raises(InputError, match=r"list.csv: line 2"):
        read_image_list(bad)


@pytest.mark.parametrize("desc, expected", [
    ("t2_tse_tra", True), ("t2_tse_tra_320_p2", True), ("t2tsetra", True), ("T2W TSE ax", True),
    ("t2_tse_sag", False), ("t2_tse_cor", False), ("t2_loc", False), ("ep2d_diff_tra", False), ("ADC", False)])
def test_is_t2_axial(desc, expected):
    assert is_t2_axial(desc) is expected


def test_series_choice_image_list_and_rule(series_0001):
    assert sorted(s.number for s in series_0001) == [6, 10]
    assert all(s.description == "t2_tse_tra" and len(s.files) == 19 and not s.unreadable for s in series_0001)
    chosen, reason = choose_t2_series("ProstateX-0001", series_0001, ("t2_tse_tra", 10))
    assert chosen.number == 10 and "image list" in reason
    chosen, reason = choose_t2_series("ProstateX-0001", series_0001, ("t2_tse_tra", 6))
    assert chosen.number == 6
    chosen, reason = choose_t2_series("ProstateX-0001", series_0001)
    assert chosen.number == 10 and "highest series number" in reason
    with pytest.raises(InputError, match=r"ProstateX-0001: .*series 99"):
        choose_t2_series("ProstateX-0001", series_0001, ("t2_tse_tra", 99))


def test_read_series_geometry(sample_dir):
    (series,) = list_series(sample_dir / "images" / "ProstateX-0218")
    img = read_series(series, patient="ProstateX-0218")
    assert img.GetSize() == (320, 320, 20)
    np.testing.assert_allclose(img.GetSpacing(), (0.625, 0.625, 3.6), rtol=1e-6)


def _copy_series(sample_dir, tmp_path):
    src = next((sample_dir / "images" / "ProstateX-0000").glob("*/*"))
    dst = tmp_path / "ProstateX-0000" / src.parent.name / src.name
    shutil.copytree(src, dst)
    for p in dst.iterdir():
        p.chmod(0o644)
    return dst


def test_read_series_reports_truncated_file_and_missing_slice(sample_dir, tmp_path):
    d = _copy_series(sample_dir, tmp_path)
    data = (d / "1-07.dcm").read_bytes()
    (d / "1-07.dcm").write_bytes(data[: len(data) // 3])
    (series,) = list_series(tmp_path / "ProstateX-0000")
    with pytest.raises(InputError, match=r"^P0: .*1-07\.dcm: corrupt or truncated DICOM"):
        read_series(series, patient="P0")
    (d / "1-07.dcm").unlink()
    (series,) = list_series(tmp_path / "ProstateX-0000")
    with pytest.raises(InputError, match=r"uneven slice positions: step 6\.00 mm between 1-0[68]\.dcm and 1-0[68]\.dcm"):
        read_series(series, patient="P0")


def test_find_patients_empty_folder(tmp_path):
    with pytest.raises(InputError, match="empty input folder"):
        find_patients(tmp_path)
    (tmp_path / "A.nii.gz").write_bytes(b"")
    (tmp_path / "B").mkdir()
    found = find_patients(tmp_path)
    assert {p: s.kind for p, s in found.items()} == {"A": "volume", "B": "dicom"}


def _mask_image(arr, spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0)):
    m = sitk.GetImageFromArray(np.asarray(arr, np.uint8))
    m.SetSpacing(spacing)
    m.SetOrigin(origin)
    return m


def test_sample_mask_tolerance_and_volume(sample_dir):
    (series,) = [s for s in list_series(sample_dir / "images" / "ProstateX-0000")]
    image = read_series(series)
    path = sample_dir / "masks" / "whole_gland" / "ProstateX-0000.nii.gz"
    mask = read_mask(path)
    assert not np.allclose(mask.GetDirection(), image.GetDirection(), atol=1e-5)  # the ~2e-4 difference
    matched, how = match_mask(mask, image, path=path)
    assert how == "same grid" and matched.GetDirection() == image.GetDirection()
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(path))).sum() * 0.5 * 0.5 * 3.0 / 1000
    assert mask_volume_ml(matched) == pytest.approx(reference, rel=1e-6)
    assert reference == pytest.approx(44.3, abs=0.05)


def test_match_mask_resamples_shifted_grid_and_rejects_no_overlap(tmp_path):
    image = _mask_image(np.zeros((4, 10, 10)))
    arr = np.zeros((4, 10, 10), np.uint8)
    arr[1:3, 2:5, 3:6] = 1
    shifted = _mask_image(arr, origin=(2.0, 0.0, 0.0))  # 2 voxels to +x
    out, how = match_mask(shifted, image)
    assert how == "resampled"
    np.testing.assert_array_equal(sitk.GetArrayFromImage(out), np.roll(arr, 2, axis=2))
    far = _mask_image(arr, origin=(500.0, 0.0, 0.0))
    with pytest.raises(InputError, match=r"P1: m\.nii\.gz: mask does not overlap its image"):
        match_mask(far, image, patient="P1", path="m.nii.gz")


def test_mask_value_policy(tmp_path):
    arr = np.zeros((3, 6, 6), np.uint8)
    arr[1, 2:4, 2:4] = 1
    arr[1, 0, 0] = 2
    path = tmp_path / "P2.nii.gz"
    sitk.WriteImage(_mask_image(arr), str(path))
    with pytest.raises(InputError, match=r"P2: .*P2\.nii\.gz: mask values \{0, 1, 2\}: only \{0, 1\}"):
        read_mask(path, patient="P2")
    label = sitk.GetArrayFromImage(read_mask(path, mask_label=2))
    assert label.sum() == 1 and label[1, 0, 0] == 1
    sitk.WriteImage(_mask_image(np.zeros((3, 6, 6))), str(path))
    with pytest.raises(InputError, match="mask is empty"):
        read_mask(path)
