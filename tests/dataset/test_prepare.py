"""The data preparation pipeline (tfrobseg.dataset.prepare and its command line) on the real ProstateX sample.

The sample is prepared once per session by the CLI with the acceptance command's inputs; N4 runs
with fewer iterations (8x shrink, 2 x 10) to keep the test fast; the checks below (grid, spacing,
gland volume, z-score) do not depend on the N4 iterations. Bad inputs are built from a temporary
copy of one patient and prepared without N4 (the tests are about the errors).
"""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import tensorflow as tf

from tfrobseg.dataset import cli
from tfrobseg.dataset.config import PrepConfig
from tfrobseg.dataset.integrity import verify_records
from tfrobseg.dataset.manifest import Manifest
from tfrobseg.dataset.prepare import prepare_cohort
from tfrobseg.dataset.records import parse_example
from tfrobseg.errors import InputError

FAST = PrepConfig(n4=False)


def _read_records(path):
    return [{k: v.numpy() for k, v in parse_example(s, 256, 256).items()} for s in tf.data.TFRecordDataset(str(path))]


@pytest.fixture(scope="module")
def prepared(sample_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("px") / "px"
    argv = ["--images", str(sample_dir / "images"), "--masks", str(sample_dir / "masks" / "whole_gland"),
            "--second-masks", str(sample_dir / "masks" / "whole_gland_second_reader"),
            "--image-list", str(sample_dir / "image_list.csv"), "--out", str(out),
            "--workers", "2", "--n4-shrink", "8", "--n4-iterations", "10,10", "--preview", "--quiet"]
    rc = cli.main(argv)
    return out, rc, argv


def test_sample_prepares_all_three_patients(prepared):
    out, rc, _ = prepared
    assert rc == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["skipped"] == {} and m["synthetic"] is False
    assert {p: e["status"] for p, e in m["patients"].items()} == dict.fromkeys(
        ["ProstateX-0000", "ProstateX-0001", "ProstateX-0218"], "ok")
    assert m["patients"]["ProstateX-0218"]["labelled"] is False
    assert m["patients"]["ProstateX-0001"]["series_number"] == 10
    assert set(m["versions"]) >= {"numpy", "SimpleITK", "tensorflow", "tfrobseg"}
    assert m["parameters"]["spacing_xyz"] == [0.5, 0.5, 3.0] and m["parameters"]["n4_iterations"] == [10, 10]
    assert m["split"]["unlabelled"] == ["ProstateX-0218"]
    assert (out / "preview.png").stat().st_size > 10_000
    assert not list(out.rglob(".tmp-*"))


def test_records_grid_spacing_and_labels(prepared, sample_dir):
    out, _, _ = prepared
    for pid, n_expected in (("ProstateX-0000", 19), ("ProstateX-0218", 24)):  # 20 x 3.6 mm -> 24 x 3.0 mm
        slices = _read_records(out / "records" / f"{pid}.tfrecord")
        assert len(slices) == n_expected
        for k, e in enumerate(slices):
            assert e["image"].shape == (256, 256, 1) and e["mask"].shape == (256, 256, 1)
            np.testing.assert_allclose(e["spacing"], (3.0, 0.5, 0.5))
            assert e["slice_index"] == k and e["n_slices"] == n_expected
            assert e["patient_id"].decode() == pid
        assert all(e["labelled"] == (pid != "ProstateX-0218") for e in slices)


@pytest.mark.parametrize("pid, volume_ml", [("ProstateX-0000", 44.3), ("ProstateX-0001", 32.2)])
def test_gland_volume_preserved(prepared, sample_dir, pid, volume_ml):
    out, _, _ = prepared
    for folder, key in (("whole_gland", "mask"), ("whole_gland_second_reader", "mask2")):
        nifti = sitk.ReadImage(str(sample_dir / "masks" / folder / f"{pid}.nii.gz"))
        original = sitk.GetArrayFromImage(nifti).sum() * np.prod(nifti.GetSpacing()) / 1000.0
        prepared_ml = sum(e[key].sum() for e in _read_records(out / "records" / f"{pid}.tfrecord")) * 0.5 * 0.5 * 3.0 / 1000
        assert prepared_ml == pytest.approx(original, rel=0.05)
        if key == "mask":
            assert original == pytest.approx(volume_ml, abs=0.05)


def test_zscore_statistics_recorded_and_smoothing_keeps_the_mean(prepared):
    out, _, _ = prepared
    m = json.loads((out / "manifest.json").read_text())
    assert m["format_version"] == 3 and "whole N4-corrected volume" in m["parameters"]["units"]["zscore"]
    for pid, e in m["patients"].items():
        stats = e["zscore_statistics"]
        assert "whole N4-corrected volume" in stats["over"] and stats["std"] > 0
        before = e["zscore_before_smoothing"]
        img = np.stack([s["image"] for s in _read_records(out / "records" / f"{pid}.tfrecord")])
        assert img.mean() == pytest.approx(before["mean"], abs=0.01) and img.std() < before["std"]


def _zscored_volume(pid, sample_dir):
    """NumPy reference of steps 1-5 without N4: whole-volume statistics applied to the resampled crop."""
    from tfrobseg.dataset import preprocessing as pp
    from tfrobseg.dataset.discovery import PatientSource, read_image_list
    from tfrobseg.dataset.prepare import load_image

    source = PatientSource(pid, "dicom", sample_dir / "images" / pid)
    listed = read_image_list(sample_dir / "image_list.csv").get(pid)
    image, _ = load_image(source, listed)
    whole = sitk.GetArrayFromImage(image).astype(np.float64)
    resampled = pp.resample_to_spacing(sitk.Cast(image, sitk.sitkFloat32), (0.5, 0.5, 3.0))
    volume = pp.center_crop_or_pad(sitk.GetArrayFromImage(resampled), (256, 256)).astype(np.float64)
    return source, listed, (volume - whole.mean()) / whole.std()


@pytest.mark.parametrize("pid, mean, std", [("ProstateX-0000", 0.0587, 0.8843), ("ProstateX-0001", 0.0260, 0.9750),
                                            ("ProstateX-0218", -0.2317, 0.5875)])
def test_prepared_image_is_zscored_then_smoothed(sample_dir, pid, mean, std):
    # Independent re-computation: z-score statistics of the whole volume as read (no N4 here), the
    # paper's order, applied to the resampled, cropped volume in NumPy, then SciPy's in-plane
    # Gaussian (sigma 1 voxel). Mean and std are pinned: statistics of the cropped block (the
    # order before issue 12) would give a block of mean 0, and smoothing before the z-score std 1.
    from scipy import ndimage

    from tfrobseg.dataset.prepare import process_patient

    source, listed, z = _zscored_volume(pid, sample_dir)
    prepared = process_patient(source, listed=listed, config=FAST).image
    expected = ndimage.gaussian_filter(z, sigma=(0, 1, 1), mode="nearest")
    np.testing.assert_allclose(prepared, expected, atol=1e-5)
    assert prepared.mean() == pytest.approx(mean, abs=2e-4) and prepared.std() == pytest.approx(std, abs=2e-4)


def test_zscore_statistics_come_from_the_whole_volume(tmp_path):
    # A volume whose central 256 x 256 block differs from the whole: a bright frame around a darker
    # centre. The prepared block must be z-scored with the whole volume's mean and std (NumPy),
    # not its own (which would give mean 0 and std 1).
    from tfrobseg.dataset.discovery import PatientSource
    from tfrobseg.dataset.prepare import process_patient

    rng = np.random.default_rng(0)
    whole = rng.gamma(4.0, 20.0, (3, 300, 320))
    whole[:, :20] += 400.0  # outside the crop (rows 22-277, columns 32-287)
    whole[:, :, -30:] += 250.0
    img = sitk.GetImageFromArray(whole.astype(np.float32))
    img.SetSpacing((0.5, 0.5, 3.0))  # already on the target grid: no resampling
    sitk.WriteImage(img, str(tmp_path / "P1.nii.gz"))
    source = PatientSource("P1", "volume", tmp_path / "P1.nii.gz")
    prepared = process_patient(source, config=PrepConfig(n4=False, smoothing_sigma=0.0))
    block = whole.astype(np.float32).astype(np.float64)[:, 22:278, 32:288]  # centre crop, NumPy
    ref = whole.astype(np.float32).astype(np.float64)
    expected = (block - ref.mean()) / ref.std()
    np.testing.assert_allclose(prepared.image, expected, rtol=1e-5, atol=1e-5)
    assert prepared.image.mean() == pytest.approx(expected.mean(), abs=1e-5) and expected.mean() < -0.1
    assert prepared.image.std() == pytest.approx(expected.std(), rel=1e-5) and expected.std() < 0.5
    stats = prepared.entry.details["zscore_statistics"]
    assert stats["mean"] == pytest.approx(ref.mean(), rel=1e-6) and stats["std"] == pytest.approx(ref.std(), rel=1e-6)


def test_rerun_resumes_without_redoing(prepared, capsys):
    # Issue 13, item 1: a re-run with nothing to do changed manifest.json (its timestamp), and with
    # it every results folder's fingerprint. Now neither the data's fingerprint nor the file changes.
    out, _, argv = prepared
    record = out / "records" / "ProstateX-0000.tfrecord"
    before = record.stat().st_mtime_ns
    manifest_bytes, content = (out / "manifest.json").read_bytes(), Manifest.read(out).content_hash()
    capsys.readouterr()
    assert cli.main(argv[:-2] + ["--quiet"]) == 0  # without --preview
    text = capsys.readouterr().out
    assert "resuming: 3 patient(s) already prepared, 0 to do" in text and "nothing changed" in text
    assert record.stat().st_mtime_ns == before
    assert (out / "manifest.json").read_bytes() == manifest_bytes and Manifest.read(out).content_hash() == content
    verify_records(out)


# ----------------------------------------------------------------------------- bad inputs
def _copy_patient(sample_dir, root, pid="ProstateX-0000"):
    """Copy one patient's images and masks into root (writable); returns (images, masks, series folder)."""
    shutil.copytree(sample_dir / "images" / pid, root / "images" / pid)
    (root / "masks").mkdir(parents=True)
    if (sample_dir / "masks" / "whole_gland" / f"{pid}.nii.gz").exists():
        shutil.copy(sample_dir / "masks" / "whole_gland" / f"{pid}.nii.gz", root / "masks")
    for p in root.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return root / "images", root / "masks", next((root / "images" / pid).glob("*/*"))


def _check_skipped(out, pid, pattern):
    m = json.loads((out / "manifest.json").read_text())
    assert list(m["skipped"]) == [pid]
    reason = m["skipped"][pid]
    assert "\n" not in reason
    assert re.search(pattern, reason), reason
    assert m["patients"][pid]["status"] == "skipped"
    assert not list((out / "records").iterdir())  # nothing partial left
    return reason


def _mutate_truncated(images, masks, series):
    data = (series / "1-10.dcm").read_bytes()
    (series / "1-10.dcm").write_bytes(data[: len(data) - 5000])


def _mutate_corrupt(images, masks, series):
    (series / "1-10.dcm").write_bytes(b"\x00not a dicom file" * 64)


def _mutate_missing_slice(images, masks, series):
    (series / "1-10.dcm").unlink()


def _rewrite_mask(masks, fn):
    path = masks / "ProstateX-0000.nii.gz"
    m = sitk.ReadImage(str(path))
    out = fn(m)
    sitk.WriteImage(out, str(path))


def _mutate_mask_off_image(images, masks, series):
    def shift(m):
        m.SetOrigin([o + 400.0 for o in m.GetOrigin()])
        return m
    _rewrite_mask(masks, shift)


def _mutate_mask_values(images, masks, series):
    def relabel(m):
        out = sitk.GetImageFromArray(sitk.GetArrayFromImage(m) * 255)
        out.CopyInformation(m)
        return out
    _rewrite_mask(masks, relabel)


def _mutate_no_t2(images, masks, series):
    from tfrobseg.dataset.synthetic import write_dicom_series

    shutil.rmtree(series)
    small = sitk.Image(16, 16, 3, sitk.sitkUInt16) + 7
    write_dicom_series(small, series.parent / "7.000000-ep2d_diff_tra_ADC-12345", patient_id="ProstateX-0000",
                       description="ep2d_diff_tra_ADC", series_number=7)


def _mutate_empty_patient(images, masks, series):
    shutil.rmtree(series.parent)


def _mutate_no_pixel_data(images, masks, series):
    # A header-only DICOM file: the slice cut right before its PixelData element (7FE0,0010).
    data = (series / "1-10.dcm").read_bytes()
    (series / "1-10.dcm").write_bytes(data[: data.rfind(b"\xe0\x7f\x10\x00")])


def _mutate_mask_nan(images, masks, series):
    def nan(m):
        arr = sitk.GetArrayFromImage(m).astype(np.float32)
        arr[9, 150:160, 150:160] = np.nan  # inside the gland of slice 9
        out = sitk.GetImageFromArray(arr)
        out.CopyInformation(m)
        return out
    _rewrite_mask(masks, nan)


def _volume_instead(values):
    def mutate(images, masks, series):
        shutil.rmtree(images / "ProstateX-0000")
        img = sitk.GetImageFromArray(values(np.zeros((4, 64, 64), np.float32)))
        img.SetSpacing((0.5, 0.5, 3.0))
        sitk.WriteImage(img, str(images / "ProstateX-0000.nii.gz"))
    return mutate


def _binary(a):
    a[:, 20:40, 20:40] = 1
    return a


@pytest.mark.parametrize("mutate, pattern", [
    (_mutate_truncated, r"^ProstateX-0000: .*1-10\.dcm: corrupt or truncated DICOM file"),
    (_mutate_corrupt, r"^ProstateX-0000: .*1-10\.dcm: corrupt or truncated DICOM file"),
    (_mutate_missing_slice, (r"^ProstateX-0000: .*t2tsetra-00702: uneven slice positions: step 6\.00 mm between "
                             r"1-(09|11)\.dcm and 1-(09|11)\.dcm")),
    (_mutate_mask_off_image, r"^ProstateX-0000: .*ProstateX-0000\.nii\.gz: mask does not overlap its image"),
    (_mutate_mask_values, r"^ProstateX-0000: .*ProstateX-0000\.nii\.gz: mask values \{0, 255\}: only \{0, 1\}"),
    (_mutate_no_t2, r"^ProstateX-0000: .*: no T2 axial series \(found: ep2d_diff_tra_ADC_7\)"),
    (_mutate_empty_patient, r"^ProstateX-0000: .*ProstateX-0000: empty patient folder"),
    (_mutate_no_pixel_data, r"^ProstateX-0000: .*1-10\.dcm: DICOM file has no pixel data \(PixelData"),
    (_mutate_mask_nan, r"^ProstateX-0000: .*ProstateX-0000\.nii\.gz: mask has 100 NaN voxel\(s\)"),
    (_volume_instead(lambda a: a + 7), r"^ProstateX-0000: .*ProstateX-0000\.nii\.gz: image is constant \(all voxels = 7\)"),
    (_volume_instead(_binary), (r"^ProstateX-0000: .*ProstateX-0000\.nii\.gz: image has only values \{0, 1\}: this "
                                r"looks like a mask \(--images and --masks swapped\?\)")),
], ids=["truncated", "corrupt", "missing-slice", "mask-no-overlap", "mask-values", "no-t2", "empty-patient",
        "no-pixel-data", "mask-nan", "constant-image", "binary-image"])
def test_bad_input_is_skipped_with_one_line_reason(sample_dir, tmp_path, mutate, pattern):
    images, masks, series = _copy_patient(sample_dir, tmp_path)
    mutate(images, masks, series)
    m = prepare_cohort(images, tmp_path / "out", masks=masks, config=FAST, progress=False)
    assert m.split["train"] == [] and m.skipped
    _check_skipped(tmp_path / "out", "ProstateX-0000", pattern)


def test_skip_continues_strict_stops_and_exit_codes(sample_dir, tmp_path, capsys):
    images, masks, series = _copy_patient(sample_dir, tmp_path)
    shutil.copytree(sample_dir / "images" / "ProstateX-0218", images / "ProstateX-0218")
    _mutate_missing_slice(images, masks, series)
    args = ["--images", str(images), "--masks", str(masks), "--no-n4", "--quiet"]
    assert cli.main(args + ["--out", str(tmp_path / "a")]) == 1
    text = capsys.readouterr().out
    assert "1 patient(s) prepared" in text and "1 skipped" in text and "skipped ProstateX-0000: ProstateX-0000:" in text
    assert (tmp_path / "a" / "records" / "ProstateX-0218.tfrecord").is_file()
    assert cli.main(args + ["--out", str(tmp_path / "b"), "--strict"]) == 2
    assert "uneven slice positions" in capsys.readouterr().err
    assert not (tmp_path / "b" / "records" / "ProstateX-0218.tfrecord").exists()
    with pytest.raises(InputError, match="ProstateX-0000"):
        prepare_cohort(images, tmp_path / "c", masks=masks, config=FAST, strict=True, progress=False)
    # Fixing the input and re-running retries the skipped patient and keeps the prepared one.
    shutil.copy(sample_dir / "images" / "ProstateX-0000" / series.parent.name / series.name / "1-10.dcm", series)
    kept = (tmp_path / "a" / "records" / "ProstateX-0218.tfrecord").stat().st_mtime_ns
    assert cli.main(args + ["--out", str(tmp_path / "a")]) == 0
    assert (tmp_path / "a" / "records" / "ProstateX-0218.tfrecord").stat().st_mtime_ns == kept
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["skipped"] == {}


def test_empty_input_folder_is_fatal(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    assert cli.main(["--images", str(tmp_path / "images"), "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert "empty input folder" in capsys.readouterr().err


def test_volume_file_input_and_changed_parameters(sample_dir, tmp_path):
    _, masks, series = _copy_patient(sample_dir, tmp_path / "src")
    (tmp_path / "vol").mkdir()
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(series)))
    sitk.WriteImage(reader.Execute(), str(tmp_path / "vol" / "ProstateX-0000.nii.gz"))
    m = prepare_cohort(tmp_path / "vol", tmp_path / "out", masks=masks, config=FAST, progress=False)
    e = m.patients["ProstateX-0000"]
    assert e.details["choice"] == "volume file" and e.labelled
    assert e.details["mask"]["volume_ml_prepared"] == pytest.approx(44.3, rel=0.05)
    with pytest.raises(ValueError, match="different parameters; use --overwrite"):
        prepare_cohort(tmp_path / "vol", tmp_path / "out", masks=masks, config=PrepConfig(n4=False, smoothing_sigma=2))


# ----------------------------------------------------------------------------- issue 13
def _linked_images(sample_dir, root, *pids):
    """An --images folder holding only ``pids`` (symlinks into the sample)."""
    root.mkdir(parents=True)
    for pid in pids:
        (root / pid).symlink_to(sample_dir / "images" / pid, target_is_directory=True)
    return root


def test_batches_into_one_out_keep_every_patient(sample_dir, tmp_path, capsys):
    # Item 2: a second run with another --images removed the first batch from the manifest.
    out, masks = tmp_path / "out", sample_dir / "masks" / "whole_gland"
    common = ["--masks", str(masks), "--out", str(out), "--no-n4", "--quiet"]
    assert cli.main(["--images", str(_linked_images(sample_dir, tmp_path / "a", "ProstateX-0000"))] + common) == 0
    first = (out / "records" / "ProstateX-0000.tfrecord").stat().st_mtime_ns
    capsys.readouterr()
    assert cli.main(["--images", str(_linked_images(sample_dir, tmp_path / "b", "ProstateX-0001"))] + common) == 0
    text = capsys.readouterr().out
    assert "resuming: 1 patient(s) already prepared, 1 to do" in text
    assert "changes: patients added: ProstateX-0001" in text
    m = Manifest.read(out)
    assert m.ok_patients == ["ProstateX-0000", "ProstateX-0001"] and m.skipped == {}
    assert (out / "records" / "ProstateX-0000.tfrecord").stat().st_mtime_ns == first
    assert sorted(m.split["train"] + m.split["val"] + m.split["test"]) == m.ok_patients
    verify_records(out)
    assert cli.main(["--out", str(out), "--remove-patients", "ProstateX-0000", "--quiet"]) == 0
    assert "changes: patients removed: ProstateX-0000" in capsys.readouterr().out
    assert Manifest.read(out).ok_patients == ["ProstateX-0001"]
    assert not (out / "records" / "ProstateX-0000.tfrecord").exists()


@pytest.mark.parametrize("case", ["masks-parent", "swapped", "masks-not-a-folder"])
def test_wrong_masks_fail_before_any_patient(sample_dir, tmp_path, capsys, case):
    # Item 5: --masks pointing at the parent folder, or images and masks swapped, ran N4 on every
    # patient and prepared them all "unlabelled" (exit 0).
    images, masks = sample_dir / "images", sample_dir / "masks"
    args = {"masks-parent": ["--images", str(images), "--masks", str(masks)],
            "swapped": ["--images", str(masks / "whole_gland"), "--masks", str(images)],
            "masks-not-a-folder": ["--images", str(images), "--masks", str(masks / "whole_gland" / "x")]}[case]
    out = tmp_path / "out"
    assert cli.main(args + ["--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    expected = {"masks-parent": f"did you mean --masks {masks / 'whole_gland'}?",
                "swapped": "it holds DICOM files or patient folders: --images and --masks swapped?",
                "masks-not-a-folder": f"error: --masks {masks / 'whole_gland' / 'x'}: not a folder"}[case]
    assert expected in err
    if case != "masks-not-a-folder":
        assert re.match(r"error: --masks \S+: no mask for any of the [23] patient\(s\) of --images \(ProstateX-0000, "
                        r"ProstateX-0001.*\); expected <PatientID>\.nii\.gz \(or .*\), e\.g\. ProstateX-0000\.nii\.gz; ", err)
    assert not out.exists()


@pytest.mark.parametrize("case", ["out-is-a-file", "parent-is-a-file", "read-only"])
def test_an_unusable_out_fails_before_any_patient(sample_dir, tmp_path, capsys, monkeypatch, case):
    # Item 7: a read-only --out, or one that is a file, gave a traceback.
    (tmp_path / "file").write_text("x")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    out = {"out-is-a-file": tmp_path / "file", "parent-is-a-file": tmp_path / "file" / "out",
           "read-only": ro / "out"}[case]
    if case == "read-only" and _can_create(ro):  # root ignores the mode: the file system refuses instead
        touch = Path.touch

        def refuse(self, *args, **kwargs):
            if self.parent == ro:
                raise PermissionError(13, "Permission denied", str(self))
            return touch(self, *args, **kwargs)
        monkeypatch.setattr(Path, "touch", refuse)
    try:
        assert cli.main(["--images", str(sample_dir / "images"), "--out", str(out), "--quiet"]) == 2
    finally:
        ro.chmod(0o755)
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert {"out-is-a-file": f"error: --out {out}: is a file, not a folder",
            "parent-is-a-file": f"{tmp_path / 'file'} is a file, so the folder cannot be created",
            "read-only": f"cannot write in {ro} (Permission denied)"}[case] in err
    assert not (ro / "out").exists()


def _can_create(folder):
    try:
        (folder / "probe").touch()
        (folder / "probe").unlink()
    except OSError:
        return False
    return True


def test_workers_below_one_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--workers", "0"])
    assert info.value.code == 2 and "--workers: expected an integer >= 1, got '0'" in capsys.readouterr().err


def test_a_record_that_cannot_be_written_stops_the_run_naming_it(sample_dir, tmp_path, capsys, monkeypatch):
    # Item 7 / H: disk full while writing a record -> one line naming the file, nothing half-written.
    images = _linked_images(sample_dir, tmp_path / "images", "ProstateX-0000", "ProstateX-0218")

    class FullDisk(tf.io.TFRecordWriter):
        def write(self, record):
            raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")

    monkeypatch.setattr(tf.io, "TFRecordWriter", FullDisk)
    out = tmp_path / "out"
    assert cli.main(["--images", str(images), "--out", str(out), "--no-n4", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith(f"error: {out / 'records' / 'ProstateX-0000.tfrecord'}: cannot write the record of "
                          "ProstateX-0000 (No space left on device)")
    assert not list((out / "records").iterdir())
    assert not (out / "manifest.json").exists()
