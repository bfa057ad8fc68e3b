"""tfrobseg.dataset.synthetic: the built-in SYNTHETIC phantoms are varied, labelled, noisy and learnable."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from tfrobseg.dataset.dicom import list_series, read_series
from tfrobseg.dataset.manifest import FORMAT_VERSION, Manifest
from tfrobseg.dataset.synthetic import make_phantom, prepare_builtin, write_cohort


def _dice(a, b):
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_phantoms_are_deterministic_and_vary_by_patient():
    a, b, c = make_phantom(0, seed=0), make_phantom(0, seed=0), make_phantom(1, seed=0)
    np.testing.assert_array_equal(a["image"], b["image"])
    assert a["image"].dtype == np.uint16 and set(np.unique(a["mask"])) == {0, 1}
    # ProstateX-like acquisitions: 3.0 or 3.6 mm slices covering 64-76 mm, 0.5-0.625 mm in-plane.
    assert a["spacing"][2] in (3.0, 3.6) and 64 <= a["image"].shape[0] * a["spacing"][2] <= 76 + 3.6
    vol = [p["mask"].sum() * np.prod(p["spacing"]) / 1000 for p in (a, c, make_phantom(2, seed=0))]
    assert len({round(v, 1) for v in vol}) == 3 and all(19.5 < v < 81 for v in vol)  # drawn in 20-80 mL
    assert ndimage.center_of_mass(a["mask"]) != ndimage.center_of_mass(c["mask"])


def test_second_reader_close_but_not_identical():
    for i in range(3):
        ph = make_phantom(i)
        assert 0.85 < _dice(ph["mask"].astype(bool), ph["mask2"].astype(bool)) < 0.99


def test_gland_contrast_moderate_and_noise_present():
    ph = make_phantom(2)
    img, gland = ph["image"].astype(float), ph["mask"].astype(bool)
    ring = ndimage.binary_dilation(gland, iterations=8) & ~ndimage.binary_dilation(gland, iterations=2)
    values = np.concatenate([img[gland], img[ring]])
    truth = np.concatenate([np.ones(gland.sum(), bool), np.zeros(ring.sum(), bool)])
    # No intensity threshold separates the gland from its 1-4 mm surroundings well.
    best = max(max(((values >= t) == truth).mean(), ((values < t) == truth).mean())
               for t in np.percentile(values, np.arange(1, 100)))
    assert 0.6 < best < 0.92
    air = img[:, :8, :8]  # outside the body: Rician noise floor, not zero
    assert air.mean() > 0 and air.std() > 0


def test_written_cohort_is_readable_dicom_labelled_synthetic(tmp_path):
    raw = write_cohort(tmp_path / "raw", n_patients=2, seed=5)
    assert "SYNTHETIC" in (raw / "README.txt").read_text()
    (series,) = list_series(raw / "images" / "Synthetic-0001")
    img = read_series(series)
    ph = make_phantom(1, seed=5)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img), ph["image"])
    np.testing.assert_allclose(img.GetSpacing(), ph["spacing"], rtol=1e-4)
    reader = sitk.ImageFileReader()
    reader.SetFileName(series.files[0])
    reader.ReadImageInformation()
    assert reader.GetMetaData("0010|0010").strip() == "SYNTHETIC^PHANTOM"
    mask = sitk.ReadImage(str(raw / "masks" / "whole_gland" / "Synthetic-0001.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(mask), ph["mask"])
    assert mask.GetOrigin() == pytest.approx(img.GetOrigin(), abs=1e-3)
    zones = sitk.ReadImage(str(raw / "masks" / "zones" / "Synthetic-0001.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(zones), ph["zones"])
    assert zones.GetOrigin() == pytest.approx(img.GetOrigin(), abs=1e-3)


def test_builtin_prepared_by_an_older_format_is_prepared_again(tmp_path):
    # An older tfrobseg's prepared folder (e.g. z-scored over the crop, format 1) must not be
    # resumed or refused: the built-in cohort is generated data, so its preparation is redone.
    out = prepare_builtin(tmp_path / "b", n_patients=1)
    path = out / "manifest.json"
    d = json.loads(path.read_text())
    d["format_version"] = 1
    path.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="older tfrobseg"):
        Manifest.read(out)
    prepare_builtin(out, n_patients=1)
    m = Manifest.read(out)
    assert m.format_version == FORMAT_VERSION and m.ok_patients == ["Synthetic-0000"]


def test_builtin_of_format_2_only_gets_its_checksums(tmp_path):
    out = prepare_builtin(tmp_path / "b", n_patients=1)
    record = out / "records" / "Synthetic-0000.tfrecord"
    before, digest = record.stat().st_mtime_ns, Manifest.read(out).patients["Synthetic-0000"].sha256
    d = json.loads((out / "manifest.json").read_text())
    d["format_version"] = 2
    del d["patients"]["Synthetic-0000"]["sha256"]
    (out / "manifest.json").write_text(json.dumps(d))
    prepare_builtin(out, n_patients=1)
    m = Manifest.read(out)
    assert m.format_version == FORMAT_VERSION and m.patients["Synthetic-0000"].sha256 == digest
    assert record.stat().st_mtime_ns == before
