"""tfrobseg.experiment.preflight and the experiment scripts' checks: one `error:` line, exit 2, before any
folder is created or any unit starts."""

import json
import os
import shutil
from pathlib import Path

import pytest
import tensorflow as tf

from tfrobseg.dataset.manifest import Manifest
from tfrobseg.errors import OptionError, RecordError
from tfrobseg.experiment import cli, preflight

TINY = ["--model", "unet", "--loss", "bce", "--epsilons", "0.5", "--max-epochs", "1", "--filters", "4,8",
        "--image-size", "32", "--no-xla", "--no-progress", "--jobs", "1"]


def _settings(data_dir):
    from tfrobseg.experiment.settings import resolve_settings

    args = cli.build_parser("crossval").parse_args(["--max-epochs", "1", "--filters", "4,8", "--image-size", "32",
                                                    "--no-xla", "--epsilons", "0.5"])
    return resolve_settings(args, Path(data_dir), None, gpus=0)[0]


def _main(capsys, phase, *argv):
    code = cli.main(phase, [str(a) for a in argv])
    return code, capsys.readouterr().err


def _copy(tiny_cohort, tmp_path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(tiny_cohort, data, ignore=shutil.ignore_patterns("raw"))
    return data


def _truncate(record: Path, keep: int) -> None:
    """Keep the first ``keep`` slices of a record: a file cut at a record boundary reads without error."""
    kept = [r.numpy() for r in tf.data.TFRecordDataset(str(record)).take(keep)]
    with tf.io.TFRecordWriter(str(record)) as writer:
        for r in kept:
            writer.write(r)


@pytest.mark.parametrize("argv, message", [
    (["--jobs", "0"], "--jobs 0: must be >= 1"),
    (["--max-units", "0"], "--max-units 0: must be >= 1"),
    (["--early-stopping-patience", "-1"], "--early-stopping-patience -1: must be >= 0"),
    (["--learning-rate", "0"], "--learning-rate 0: must be > 0"),
    (["--image-size", "50", "--filters", "4,8,16"], ("--image-size 50: the networks with --filters 4,8,16 (3 levels) halve "
                                                     "it 2 times, so it must be a multiple of 4 (e.g. 48 or 52; the "
                                                     "study's 256)")),
    (["--image-size", "40", "--filters", "8,16,32,64,128"], ("--image-size 40: the networks with --filters 8,16,32,64,128 "
                                                             "(5 levels) halve it 4 times, so it must be a multiple of 16 "
                                                             "(e.g. 32 or 48; the study's 256)")),
])
def test_bad_counts_and_sizes_stop_before_the_results_folder(tiny_cohort, tmp_path, capsys, argv, message):
    out = tmp_path / "res"
    code, err = _main(capsys, "crossval", "--data", tiny_cohort, "--out", out, *TINY, *argv)
    assert code == 2 and err.startswith(f"error: {message}") and err.count("\n") == 1 and not out.exists(), err


def test_an_out_that_cannot_be_a_folder_is_refused(tiny_cohort, tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    for out, message in ((a_file, f"--out {a_file}: is a file, not a folder"),
                         (a_file / "res", f"--out {a_file / 'res'}: {a_file} is a file, so the folder cannot be created")):
        code, err = _main(capsys, "crossval", "--data", tiny_cohort, "--out", out, *TINY)
        assert code == 2 and err.startswith(f"error: {message}"), err


def test_an_out_in_a_folder_that_cannot_be_written_is_refused(tmp_path):
    if os.geteuid() == 0:  # root ignores permission bits; /sys refuses new files even to root
        parent = Path("/sys")
        if not parent.is_dir() or not _unwritable(parent):
            pytest.skip("no folder root cannot write to on this machine")
    else:
        parent = tmp_path / "ro"
        parent.mkdir(mode=0o500)
    target = parent / "tfrobseg-probe" / "res"
    with pytest.raises(OptionError, match=rf"^--out {target}: cannot write in {parent} \(.+\); choose a folder"):
        preflight.check_out_dir(target)
    preflight.check_out_dir(tmp_path / "new" / "res")  # a folder that can be created passes
    assert not (tmp_path / "new").exists()


def _unwritable(folder: Path) -> bool:
    try:
        (folder / ".tfrobseg-w").write_text("x")
    except OSError:
        return True
    (folder / ".tfrobseg-w").unlink()
    return False


def test_too_few_labelled_patients_are_named_with_the_count_needed(tiny_cohort, tmp_path, capsys):
    data = _copy(tiny_cohort, tmp_path)
    manifest = json.loads((data / "manifest.json").read_text(encoding="utf-8"))
    manifest["split"]["val"] = []  # as a 4-patient cohort splits: no validation patient
    (data / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    code, err = _main(capsys, "crossval", "--data", data, "--out", tmp_path / "res", *TINY)
    assert code == 2 and not (tmp_path / "res").exists()
    assert err.startswith("error: crossval fold 0: no labelled patients for validation; the data in") and \
        "has 6 labelled patient(s) (train 4 in folds [2, 1, 1], val 0, test 1). Prepare at least 6 labelled" in err
    manifest["split"]["folds"][2] = []
    (data / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(OptionError, match="^holdout: no labelled patients for validation"):
        preflight.check_patients("holdout", data, Manifest.read(data), [None])
    manifest["split"]["val"] = tiny_manifest_val = Manifest.read(tiny_cohort).split["val"]
    (data / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    assert tiny_manifest_val
    with pytest.raises(OptionError, match="crossval fold 2: no labelled patients for evaluation"):
        preflight.check_patients("crossval", data, Manifest.read(data), [0, 1, 2])
    assert preflight.check_patients("crossval", data, Manifest.read(data), [0, 1])  # the folds asked for only


def test_min_labelled_is_the_smallest_cohort_that_fills_the_split(tiny_cohort):
    manifest = Manifest.read(tiny_cohort)
    assert preflight.min_labelled("crossval", manifest) == 6 and preflight.min_labelled("holdout", manifest) == 6
    assert preflight.min_labelled("holdout", manifest, split_file=True) == 2


def test_a_truncated_record_stops_the_run_naming_patient_and_file(tiny_cohort, tmp_path, capsys):
    data = _copy(tiny_cohort, tmp_path)
    manifest = Manifest.read(data)
    pid = manifest.split["folds"][0][0]
    record = data / manifest.patients[pid].record
    _truncate(record, 3)
    code, err = _main(capsys, "crossval", "--data", data, "--out", tmp_path / "res", *TINY)
    assert code == 2 and not (tmp_path / "res").exists()
    assert err.startswith(f"error: {pid}: {record}: ") and err.count("\n") == 1, err


def test_run_unit_verifies_its_records_before_training(tiny_cohort, tmp_path, monkeypatch):
    from tfrobseg.experiment import runner
    from tfrobseg.experiment.units import Unit

    data = _copy(tiny_cohort, tmp_path)
    manifest = Manifest.read(data)
    pid = manifest.split["folds"][1][0]
    _truncate(data / manifest.patients[pid].record, 2)
    settings = _settings(data)
    monkeypatch.setattr(runner, "train", lambda *a, **k: pytest.fail("trained on a truncated record"))
    with pytest.raises(RecordError, match=pid):
        runner.run_unit(Unit("crossval", "unet", "bce", 0), settings, tmp_path / "out", progress=False)


def test_scoring_refuses_a_patient_with_missing_slices(tiny_cohort, tmp_path):
    from tfrobseg.dataset.pipeline import make_dataset
    from tfrobseg.experiment.scoring import load_volumes

    data = _copy(tiny_cohort, tmp_path)
    manifest = Manifest.read(data)
    pid = manifest.split["test"][0]
    record, n = data / manifest.patients[pid].record, manifest.patients[pid].n_slices
    assert load_volumes(make_dataset(data, [pid]), expected={pid: (record, n)})[pid].n_slices == n
    _truncate(record, n - 2)  # cut at a record boundary: TensorFlow reads n - 2 slices without error
    with pytest.raises(RecordError, match=rf"^{pid}: {record}: {n - 2} slice\(s\) read, manifest.json records {n} "):
        load_volumes(make_dataset(data, [pid]), expected={pid: (record, n)})


def test_a_data_loss_while_reading_names_the_units_files(tiny_cohort):
    from tfrobseg.experiment import runner
    from tfrobseg.experiment.units import Unit, UnitPatients

    settings = _settings(tiny_cohort)
    manifest = Manifest.read(tiny_cohort)
    ids = manifest.split["folds"][0]
    with pytest.raises(RecordError) as info, runner._reading(Unit("crossval", "unet", "bce", 0), settings,
                                                             UnitPatients([], [], ids)):
        raise tf.errors.DataLossError(None, None, "corrupted record at 1234")
    message = str(info.value)
    assert message.startswith("unit crossval/unet/bce/fold0: a record could not be read (corrupted record at 1234)")
    assert all(str(tiny_cohort / manifest.patients[p].record) in message for p in ids) and "\n" not in message


def test_a_record_damaged_after_verification_stops_the_unit_while_its_slices_are_cached(tiny_cohort, tmp_path,
                                                                                         monkeypatch):
    # The unit's datasets read every slice once, into memory, before training: a DataLossError there
    # (a record changed since it was verified) must name the unit's files as one during training would.
    from tfrobseg.dataset import integrity
    from tfrobseg.experiment import runner
    from tfrobseg.experiment.units import Unit

    data = _copy(tiny_cohort, tmp_path)
    manifest = Manifest.read(data)
    record = data / manifest.patients[manifest.split["val"][0]].record
    raw = bytearray(record.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one byte of a slice's payload: its checksum no longer matches
    record.write_bytes(bytes(raw))
    monkeypatch.setattr(integrity, "verify_records", lambda *a, **k: None)  # changed after the verification
    with pytest.raises(RecordError, match=r"^unit crossval/unet/bce/fold0: a record could not be read .*corrupted"):
        runner.load_data(Unit("crossval", "unet", "bce", 0), _settings(data))
