"""Zonal labels (issue 17): the built-in phantoms' zones, their preparation label by label, the records and the
pipeline's zones, --zones on the command line, and folders prepared before zones existed."""

import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk
import tensorflow as tf

from tfrobseg.dataset import cli
from tfrobseg.dataset import pipeline as data
from tfrobseg.dataset.config import PrepConfig
from tfrobseg.dataset.manifest import MANIFEST_NAME, Manifest, PatientEntry
from tfrobseg.dataset.preprocessing import labels_from_indicators, resample_label_map
from tfrobseg.dataset.records import parse_example, write_patient_records
from tfrobseg.dataset.synthetic import make_phantom


def test_phantom_zones_make_up_the_reader1_gland():
    ph = make_phantom(1)
    zones, gland = ph["zones"], ph["mask"].astype(bool)
    assert zones.dtype == np.uint8 and set(np.unique(zones)) == {0, 1, 2}
    np.testing.assert_array_equal(zones > 0, gland)
    assert 0.15 < np.mean(zones[gland] == 2) < 0.5  # the transition zone: a part of the gland, not all of it
    # The transition zone lies in front of (smaller y index, LPS) the peripheral zone's centre.
    centre_y = lambda label: np.argwhere(zones == label)[:, 1].mean()
    assert centre_y(2) < centre_y(1)


# --------------------------------------------------------------------------- resampling label by label
def _indicators_ref(row: np.ndarray, positions: np.ndarray) -> dict[str, np.ndarray]:
    """Linear interpolation (NumPy) of each label's indicator of a 1-D label row at ``positions`` (input indices)."""
    grid = np.arange(len(row))
    return {name: np.interp(positions, grid, (row == k if k else row > 0).astype(float), right=0.0)
            for name, k in (("fg", 0), ("pz", 1), ("tz", 2))}


def test_label_map_resampled_label_by_label():
    # One row of labels along x, 1 mm voxels, resampled to 1.25 mm: output voxel i samples input 1.25 i
    # (weights 0.25, 0.5, 0.75 between neighbours).
    row = np.array([0, 2, 2, 2, 0, 0, 1, 1, 1, 2, 2, 2, 2, 1, 0, 0, 2, 0, 1, 1], np.uint8)
    image = sitk.GetImageFromArray(np.tile(row, (1, 2, 1)))
    out = sitk.GetArrayFromImage(resample_label_map(image, (1.25, 1.0, 1.0), 2))[0, 0]
    ref = _indicators_ref(row, 1.25 * np.arange(len(out)))
    expected = np.where(ref["fg"] < 0.5, 0, np.where(ref["tz"] > ref["pz"], 2, 1))
    np.testing.assert_array_equal(out, expected)
    assert {0, 1, 2} == set(out) and ref["fg"][3] == 0.25 and out[3] == 0  # input 3.75: the edge of a TZ, left out
    # Between TZ and background (input 3.0 .. 4.0) no PZ appears, as interpolating the values would make it.
    assert 1 not in out[:4]
    # The foreground is the gland resampled as a mask (linear, then >= 0.5).
    np.testing.assert_array_equal(out > 0, ref["fg"] >= 0.5)
    # The same grid: unchanged.
    same = resample_label_map(image, (1.0, 1.0, 1.0), 2)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(same), sitk.GetArrayFromImage(image))


def test_labels_from_indicators_ties_go_to_the_lower_label():
    fg = np.array([0.4, 0.5, 0.9, 0.9])
    out = labels_from_indicators(fg, [np.array([0.4, 0.25, 0.45, 0.3]), np.array([0.0, 0.25, 0.45, 0.6])])
    np.testing.assert_array_equal(out, [0, 1, 1, 2])


def _triangle(n_in: int, n_out: int) -> np.ndarray:
    """Antialiased bilinear resampling matrix (NumPy): a triangle of half-width n_in / n_out, renormalised."""
    scale = n_in / n_out
    w = np.maximum(0.0, 1 - np.abs(np.arange(n_in)[None] + 0.5 - (np.arange(n_out)[:, None] + 0.5) * scale) / scale)
    return w / w.sum(1, keepdims=True)


def test_resize_element_resizes_zones_label_by_label():
    row = np.array([0, 0, 2, 2, 2, 1, 1, 1, 1, 1, 2, 2, 0, 0, 0, 0, 0, 0, 1, 2, 2, 2, 0, 0], np.float32)
    zones = np.tile(row[None, :, None], (len(row), 1, 1))[None]  # (1, 24, 24, 1), labels vary along W
    element = {"image": tf.constant(zones), "mask": tf.constant((zones > 0).astype(np.float32)),
               "zones": tf.constant(zones), "spacing": tf.constant([[3.0, 0.5, 0.5]])}
    out = data.resize_element(element, 8)
    resample = _triangle(24, 8)
    fg, pz, tz = (resample @ ind.astype(float) for ind in (row > 0, row == 1, row == 2))
    expected = np.where(fg < 0.5, 0, np.where(tz > pz, 2, 1))
    got = out["zones"].numpy()[0, ..., 0]
    np.testing.assert_array_equal(got, np.tile(expected, (8, 1)))
    np.testing.assert_array_equal(got > 0, out["mask"].numpy()[0, ..., 0] > 0)  # zones' gland = the resized mask
    assert out["zones"].dtype == tf.float32 and set(np.unique(got)) == {0.0, 1.0, 2.0}


def test_to_xy_gives_one_hot_zones():
    zones = np.array([[0, 1], [2, 2]], np.float32)[None, ..., None]
    element = {"image": tf.zeros((1, 2, 2, 1)), "mask": tf.constant((zones > 0).astype(np.float32)),
               "zones": tf.constant(zones)}
    _x, y = data.to_xy(element, target="zones")
    assert y.shape == (1, 2, 2, 3) and y.dtype == tf.float32
    np.testing.assert_array_equal(y.numpy()[0], np.eye(3)[[[0, 1], [2, 2]]])
    volume = {k: v[:, None] for k, v in element.items()}  # (1, 1, 2, 2, 1): a volume of one slice
    assert data.to_xy(volume, target="zones")[1].shape == (1, 1, 2, 2, 3)
    with pytest.raises(ValueError, match="target must be one of"):
        data.to_xy(element, target="tz")
    with pytest.raises(ValueError, match="second_reader applies to target='mask'"):
        data.to_xy(element, target="zones", second_reader=True)


# --------------------------------------------------------------------------- the prepared built-in cohort
def test_prepared_zones_make_up_the_prepared_gland(tiny_cohort):
    m = Manifest.read(tiny_cohort)
    assert all(m.patients[p].has_zones for p in m.ok_patients) and "with zones" in m.summary()
    pid = m.patients_of("test")[0]
    entry = m.patients[pid]
    assert entry.details["zones"]["dice_with_mask"] == 1.0 and entry.details["zones"]["geometry"] == "same grid"
    slices = data.load_slices(tiny_cohort, [pid])
    zones, mask = slices["zones"][..., 0], slices["mask"][..., 0]
    assert zones.dtype == np.uint8 and set(np.unique(zones)) == {0, 1, 2} and slices["has_zones"].all()
    np.testing.assert_array_equal(zones > 0, mask > 0)
    # The zones add up to the prepared gland, and each keeps its share of it through the resampling to
    # 0.5 x 0.5 x 3.0 mm (the gland itself changes by up to ~5 % from 3.6 mm slices, as the masks always did).
    volumes = entry.details["zones"]["volume_ml_prepared"]
    assert volumes["PZ"] + volumes["TZ"] == pytest.approx(entry.details["mask"]["volume_ml_prepared"], abs=2e-3)
    raw = make_phantom(int(pid.split("-")[1]), seed=0)["zones"]
    for label, name in ((1, "PZ"), (2, "TZ")):
        assert np.count_nonzero(zones == label) * 0.75 / 1000 == pytest.approx(volumes[name], abs=1e-3)
        share = np.count_nonzero(zones == label) / np.count_nonzero(zones)
        assert share == pytest.approx(np.count_nonzero(raw == label) / np.count_nonzero(raw), abs=0.02)
    # The cached and streamed datasets give the same zones, float32 and per label after resizing.
    cached = data.make_dataset(tiny_cohort, [pid], batch_size=64, image_size=32, cache=True)
    streamed = data.make_dataset(tiny_cohort, [pid], batch_size=64, image_size=32)
    a, b = next(iter(cached)), next(iter(streamed))
    np.testing.assert_array_equal(a["zones"].numpy(), b["zones"].numpy())
    np.testing.assert_array_equal(a["zones"].numpy() > 0, a["mask"].numpy() > 0)


def _one_patient(raw, tmp_path):
    """An --images folder holding Synthetic-0000 of ``raw`` only."""
    images = tmp_path / "images"
    images.mkdir()
    (images / "Synthetic-0000").symlink_to(raw / "images" / "Synthetic-0000")
    return images


def _prepare(images, raw, out, zones, *extra):
    argv = ["--images", str(images), "--masks", str(raw / "masks" / "whole_gland"), "--zones", str(zones),
            "--out", str(out), "--no-n4", "--quiet", *extra]
    return cli.main(argv)


def test_zones_option_with_other_label_values(tiny_cohort, tmp_path):
    raw = tiny_cohort / "raw"
    images = _one_patient(raw, tmp_path)
    relabelled = tmp_path / "zones"
    relabelled.mkdir()
    src = sitk.ReadImage(str(raw / "masks" / "zones" / "Synthetic-0000.nii.gz"))
    arr = sitk.GetArrayFromImage(src)
    out_img = sitk.GetImageFromArray(np.select([arr == 1, arr == 2], [5, 7], 0).astype(np.uint8))
    out_img.CopyInformation(src)
    sitk.WriteImage(out_img, str(relabelled / "Synthetic-0000.nii.gz"))
    assert _prepare(images, raw, tmp_path / "a", relabelled, "--zone-labels", "5,7") == 0
    assert _prepare(images, raw, tmp_path / "b", raw / "masks" / "zones") == 0
    a, b = (data.load_slices(tmp_path / out, ["Synthetic-0000"]) for out in ("a", "b"))
    np.testing.assert_array_equal(a["zones"], b["zones"])
    assert Manifest.read(tmp_path / "a").patients["Synthetic-0000"].details["zones"]["labels"] == {"PZ": 5, "TZ": 7}


def test_zones_added_to_a_folder_prepared_without_them(tiny_cohort, tmp_path, capsys):
    raw = tiny_cohort / "raw"
    images, out = _one_patient(raw, tmp_path), tmp_path / "out"
    assert cli.main(["--images", str(images), "--masks", str(raw / "masks" / "whole_gland"), "--out", str(out),
                     "--no-n4", "--quiet"]) == 0
    assert not Manifest.read(out).patients["Synthetic-0000"].has_zones
    capsys.readouterr()
    assert _prepare(images, raw, out, raw / "masks" / "zones") == 0  # kept as it was, and the log says how to add them
    assert "--zones: 1 patient(s) prepared earlier without zones keep their records (Synthetic-0000); add " \
           "--overwrite" in capsys.readouterr().out
    assert not Manifest.read(out).patients["Synthetic-0000"].has_zones
    assert _prepare(images, raw, out, raw / "masks" / "zones", "--overwrite") == 0
    assert "changes: records changed: Synthetic-0000; labels changed: Synthetic-0000" in capsys.readouterr().out
    assert Manifest.read(out).patients["Synthetic-0000"].has_zones


def test_a_zone_map_with_other_values_is_skipped_naming_the_file(tiny_cohort, tmp_path, capsys):
    raw = tiny_cohort / "raw"
    images = _one_patient(raw, tmp_path)
    bad = tmp_path / "zones"
    shutil.copytree(raw / "masks" / "zones", bad)
    path = bad / "Synthetic-0000.nii.gz"
    img = sitk.ReadImage(str(path))
    arr = sitk.GetArrayFromImage(img)
    arr[arr == 2] = 3  # e.g. a map with the stroma as its own label
    stray = sitk.GetImageFromArray(arr)
    stray.CopyInformation(img)
    sitk.WriteImage(stray, str(path))
    assert _prepare(images, raw, tmp_path / "out", bad) == 1
    reason = Manifest.read(tmp_path / "out").skipped["Synthetic-0000"]
    assert str(path) in reason and "zone map has value(s) {3}" in reason and "--zone-labels" in reason
    assert _prepare(images, raw, tmp_path / "out2", bad, "--zone-labels", "1,1") == 2
    assert "--zone-labels: two different positive values" in capsys.readouterr().err


# --------------------------------------------------------------------------- folders prepared before zones
def _old_folder(tmp_path):
    """A prepared folder as a tfrobseg before issue 17 wrote it: records and manifest without zones."""
    out = tmp_path / "old"
    m = Manifest(parameters=PrepConfig(size_hw=(8, 8)), seed=0)
    rng = np.random.default_rng(0)
    for k in range(3):
        pid = f"P{k}"
        image = rng.normal(size=(4 + k, 8, 8)).astype(np.float32)
        n = write_patient_records(out / "records" / f"{pid}.tfrecord", pid, image, (image > 0).astype(np.uint8), None,
                                  (3.0, 0.5, 0.5))
        m.patients[pid] = PatientEntry(status="ok", labelled=True, n_slices=n, record=f"records/{pid}.tfrecord",
                                       sha256="0" * 64)
    m.resplit()
    m.write(out)
    return out


def test_a_folder_prepared_before_zones_reads_with_empty_zones(tmp_path):
    out = _old_folder(tmp_path)
    raw = json.loads((out / MANIFEST_NAME).read_text())
    assert all("has_zones" not in e for e in raw["patients"].values())  # the file as before
    m = Manifest.read(out)
    assert not any(m.patients[p].has_zones for p in m.ok_patients)
    # The fingerprint of a folder without zones has the keys it always had (its content hash is unchanged).
    assert all(set(e) == {"sha256", "n_slices", "labelled", "second_reader"} for e in m.fingerprint()["patients"].values())
    slices = data.load_slices(out, ["P0", "P2"], image_size=4)
    assert slices["zones"].shape == (10, 4, 4, 1) and not slices["zones"].any() and not slices["has_zones"].any()
    (_x, y), = data.make_dataset(out, ["P1"], batch_size=8).map(lambda e: data.to_xy(e, target="zones"))
    np.testing.assert_array_equal(y.numpy(), np.broadcast_to(np.eye(3)[0], (5, 8, 8, 3)))


def test_a_record_without_zones_holds_no_zones_field(tmp_path):
    image = np.arange(2 * 4 * 3, dtype=np.float32).reshape(2, 4, 3) / 7
    mask = (image > 1).astype(np.uint8)
    path = tmp_path / "P.tfrecord"
    write_patient_records(path, "P", image, mask, None, (3.0, 0.5, 0.5))
    # The bytes a tfrobseg before issue 17 wrote for the same slices (so checksums stay as recorded).
    import hashlib
    assert hashlib.sha256(path.read_bytes()).hexdigest() == \
        "865dcbcdc1bd308e6e87617e944bc615a00b96442edb54e5ab835e06571c9499"
    zones = np.where(mask > 0, 2, 0).astype(np.uint8)
    write_patient_records(tmp_path / "Z.tfrecord", "P", image, mask, None, (3.0, 0.5, 0.5), zones)
    for name, expected in (("P", np.zeros_like(zones)), ("Z", zones)):
        parsed = [parse_example(s, 4, 3) for s in tf.data.TFRecordDataset(str(tmp_path / f"{name}.tfrecord"))]
        np.testing.assert_array_equal(np.stack([e["zones"].numpy()[..., 0] for e in parsed]), expected)
        assert all(bool(e["has_zones"]) == (name == "Z") for e in parsed)
    with pytest.raises(ValueError, match="zones must hold only 0, 1"):
        write_patient_records(tmp_path / "X.tfrecord", "P", image, mask, None, (3.0, 0.5, 0.5), zones + 1)
    with pytest.raises(ValueError, match="zones shape"):
        write_patient_records(tmp_path / "X.tfrecord", "P", image, mask, None, (3.0, 0.5, 0.5), zones[:1])
