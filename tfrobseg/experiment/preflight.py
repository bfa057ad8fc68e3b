"""Checks of a run before any folder is created or any work starts.

Every problem a run could otherwise meet only after its results folder exists, or after a unit trained
for an hour, is one :class:`~tfrobseg.errors.OptionError` line here: counts out of range, an image size
the network depth cannot halve, a results folder that cannot be written, too few labelled patients for
the phase. The records of the patients the grid uses are read once
(:func:`tfrobseg.dataset.integrity.verify_records`), so a truncated or corrupt file stops the run naming
the patient and the file (:class:`~tfrobseg.errors.RecordError`).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from tfrobseg.dataset.manifest import Manifest
from tfrobseg.dataset.splits import make_split
from tfrobseg.errors import OptionError
from tfrobseg.experiment.units import Unit, UnitPatients, load_split, unit_patients
from tfrobseg.io import out_folder_problem

__all__ = ["check_cost_options", "check_counts", "check_image_size", "check_out_dir", "check_patients", "check_records", "min_labelled"]


def check_counts(args: argparse.Namespace) -> None:
    """``--jobs``, ``--max-units`` >= 1, ``--early-stopping-patience`` >= 0, ``--learning-rate`` > 0."""
    for flag, value, low in (("--jobs", args.jobs, 1), ("--max-units", args.max_units, 1),
                             ("--early-stopping-patience", args.early_stopping_patience, 0)):
        if value is not None and value < low:
            raise OptionError(f"{flag} {value}: must be >= {low}")
    if args.learning_rate is not None and not args.learning_rate > 0:
        raise OptionError(f"--learning-rate {args.learning_rate:g}: must be > 0 (the study: 1e-4)")


def check_cost_options(args: argparse.Namespace) -> None:
    """``--throughput`` (> 0) or ``--calibrate``, one of them, with ``--dry-run`` and only then; a dry run needs
    prepared data (it prepares nothing: the built-in cohort is made by the first real run)."""
    from tfrobseg.dataset.manifest import MANIFEST_NAME
    from tfrobseg.experiment.settings import BUILTIN_DATA

    throughput, calibrate = getattr(args, "throughput", None), getattr(args, "calibrate", False)
    if not getattr(args, "dry_run", False):
        if throughput is not None or calibrate:
            raise OptionError(f"{'--throughput' if throughput is not None else '--calibrate'} is an option of --dry-run")
        return
    if (throughput is not None) == calibrate:
        raise OptionError("--dry-run needs one of --throughput GMAC/S (a figure of the machines that will run the "
                          "units) and --calibrate (measured on this machine)")
    if throughput is not None and not throughput > 0:
        raise OptionError(f"--throughput {throughput:g}: must be > 0 (billions of multiply-accumulates per second)")
    if args.data is None and not (BUILTIN_DATA / MANIFEST_NAME).is_file():
        raise OptionError(f"--dry-run: no prepared data in {BUILTIN_DATA} (the built-in cohort is prepared by the "
                          "first run without --dry-run) and no --data: give the prepared folder with --data")


def check_image_size(image_size: int, filters: Sequence[int]) -> None:
    """The networks halve the input ``len(filters) - 1`` times: the size must be a multiple of 2^that."""
    factor = 2 ** (len(filters) - 1)
    if image_size % factor:
        above = image_size + factor - image_size % factor
        near = [size for size in (above - factor, above) if size >= 16]
        raise OptionError(f"--image-size {image_size}: the networks with --filters {','.join(map(str, filters))} "
                          f"({len(filters)} levels) halve it {len(filters) - 1} times, so it must be a multiple of "
                          f"{factor} (e.g. {' or '.join(map(str, near))}; the study's 256)")


def check_models(model_names: Sequence[str], image_size: int, filters: Sequence[int],
                 patch_shape: Sequence[int] | None, model_options: dict | None = None) -> None:
    """Each model builds at the run's input, with its ``--model-option`` values (a slice of ``image_size``, or a 3D network's training patch): its own
    constraints (EfficientNet halves five times, a 3D network's patch too) fail here, in one line naming the
    model and the option, not in every unit."""
    from tfrobseg import models

    volumetric = set(models.model_names(spatial_rank=3))
    for name in model_names:
        shape = (*patch_shape, 1) if name in volumetric and patch_shape else (image_size, image_size, 1)
        try:
            # Weights are not downloaded here: the options' values are checked, not the file.
            options = {k: v for k, v in (model_options or {}).get(name, {}).items() if k != "weights"}
            models.build_model(name, input_shape=shape, filters=filters, **options)
        except ValueError as exc:
            given = f"--patch-shape {','.join(map(str, shape[:-1]))}" if name in volumetric else \
                f"--image-size {image_size}"
            raise OptionError(f"--model {name}: {given} with --filters "
                              f"{','.join(map(str, filters))}: {exc}") from None


def check_out_dir(out: Path) -> None:
    """``out`` is a folder, or can be created: no file in the way, and its nearest existing folder writable."""
    if (problem := out_folder_problem(out)) is not None:
        raise OptionError(f"--out {out}: {problem}")


def min_labelled(phase: str, manifest: Manifest, split_file: bool = False) -> int:
    """The fewest labelled patients whose seeded split gives every unit of ``phase`` its patients."""
    n_folds = max(manifest.n_folds, 1)
    for n in range(1, 1000):
        split = make_split([f"P{i:04d}" for i in range(n)], seed=manifest.seed, n_folds=n_folds)
        if phase == "crossval":
            ok = split["val"] and all(split["folds"]) and all(len(f) < len(split["train"]) for f in split["folds"])
        else:
            ok = split["train"] and split["test"] and (split["val"] or split_file)
        if ok:
            return n
    raise AssertionError("unreachable: 1000 patients fill any split")


def _empty_parts(phase: str, patients: UnitPatients, need_val: bool) -> list[str]:
    names = ("training", "validation", "evaluation (held-out fold)" if phase == "crossval" else "test")
    return [name for name, ids, needed in zip(names, patients, (True, need_val, True)) if needed and not ids]


def check_patients(phase: str, data_dir: Path, manifest: Manifest, folds: Sequence[int | None],
                   split_file: str | None = None) -> dict[int | None, UnitPatients]:
    """Every fold of the phase (``None``: the hold-out) has labelled training, validation and evaluation
    patients (an explicit ``--split`` may leave validation empty); returns each fold's labelled patients."""
    labelled = {p for p in manifest.ok_patients if manifest.patients[p].labelled}
    units = {}
    for fold in folds:
        try:  # which patients a unit uses does not depend on its model or loss
            split = load_split(split_file) if split_file else None
            patients = unit_patients(Unit(phase, "any", "any", fold), manifest, split)
        except (OSError, ValueError) as exc:
            raise OptionError(f"--split: {exc}") from None
        patients = UnitPatients(*([p for p in ids if p in labelled] for ids in patients))
        empty = _empty_parts(phase, patients, need_val=split is None)
        if empty:
            where = f"{phase} fold {fold}" if fold is not None else phase
            source = f"the split file {split_file}" if split else f"the data in {data_dir}"
            s = manifest.split
            raise OptionError(
                f"{where}: no labelled patients for {' or '.join(empty)}; {source} has {len(labelled)} "
                f"labelled patient(s) (train {len(s.get('train', []))} in folds "
                f"{[len(f) for f in s.get('folds', [])]}, val {len(s.get('val', []))}, test {len(s.get('test', []))}). "
                f"Prepare at least {min_labelled(phase, manifest, split is not None)} labelled patients "
                "(data_prep/prostatex.py)" + (", or give non-empty lists in the split file" if split else ""))
        units[fold] = patients
    return units


def check_records(data_dir: Path, manifest: Manifest, units: dict[int | None, UnitPatients]) -> None:
    """Read the records of every patient the units use (RecordError naming the first bad one)."""
    from tfrobseg.dataset.integrity import verify_records

    ids = sorted({p for patients in units.values() for part in patients for p in part})
    verify_records(data_dir, ids, manifest=manifest)
