"""The data preparation pipeline: one patient (:func:`process_patient`) and a cohort (:func:`prepare_cohort`).

Per patient (Apostolidis et al., Sec. II-B; see :mod:`tfrobseg.dataset.preprocessing` for each step):
choose and read the T2 axial image, match the mask(s) to it in physical space, N4 -> z-score
statistics of the whole N4-corrected volume -> resample to 0.5 x 0.5 x 3.0 mm -> centre crop/pad
to 256 x 256 -> z-score with those statistics -> Gaussian smoothing, then one TFRecord file per
patient. A zonal map (``zones=``, PZ and TZ) is matched, resampled and cropped like the masks, label
by label (:func:`tfrobseg.dataset.preprocessing.resample_label_map`). The cohort driver adds the manifest
(:class:`~tfrobseg.dataset.manifest.Manifest`), the seeded split, the skip list, resumption,
incremental preparation (a run adds its patients to those of earlier runs), one writer per folder
(``<out>/.lock``) and worker processes.

Bad input of one patient raises :class:`~tfrobseg.errors.InputError`; the cohort driver records it
under "skipped" (or stops with ``strict=True``). Outputs are only ever written atomically.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from tfrobseg.dataset import preprocessing as pp
from tfrobseg.dataset.checks import check_mask_folder, check_out_folder, find_mask
from tfrobseg.dataset.config import ZONE_LABELS, PrepConfig
from tfrobseg.dataset.dicom import nonfinite_voxels, read_series, read_volume
from tfrobseg.dataset.discovery import (
    PatientSource,
    choose_t2_series,
    find_patients,
    patient_series,
    patient_volume_file,
    read_image_list,
)
from tfrobseg.dataset.integrity import count_records
from tfrobseg.dataset.manifest import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    Manifest,
    PatientEntry,
    describe_data_changes,
    split_moves,
)
from tfrobseg.dataset.masks import (
    mask_volume_ml,
    match_mask,
    match_zones,
    read_mask,
    read_zones,
)
from tfrobseg.errors import InputError, OutputError, RecordError
from tfrobseg.io import environment_versions, file_hash, remove_stale_temporaries
from tfrobseg.locks import FileLock
from tfrobseg.parallel import process_map

__all__ = ["LOCK_NAME", "PreparedPatient", "find_mask", "prepare_cohort", "process_patient", "remove_patients",
           "writer_lock"]

logger = logging.getLogger(__name__)
#: The paper's preprocessing (frozen, so sharing it as a default is safe).
PAPER_CONFIG = PrepConfig()
#: What the z-score statistics are computed over (recorded per patient in the manifest).
ZSCORE_OVER = "whole {}volume on its acquired grid (before resampling and crop)"


def load_image(source: PatientSource, listed: tuple[str, int] | None = None) -> tuple[sitk.Image, dict]:
    """Read a patient's T2 axial image; returns (image, provenance for the manifest)."""
    pid = source.patient_id
    series = patient_series(source)
    if series:
        chosen, reason = choose_t2_series(pid, series, listed)
        image = read_series(chosen, patient=pid)
        return image, {"source": str(chosen.directory), "series_number": chosen.number,
                       "series_description": chosen.description, "choice": reason}
    volume = patient_volume_file(source)
    if volume is None:
        raise InputError("empty patient folder: no DICOM series and no volume file", patient=pid, path=source.path)
    return read_volume(volume, patient=pid), {"source": str(volume), "choice": "volume file"}


def _prepared_mask(path: Path | None, image: sitk.Image, pid: str, config: PrepConfig,
                   ) -> tuple[np.ndarray | None, dict]:
    if path is None:
        return None, {}
    mask = read_mask(path, patient=pid, mask_label=config.mask_label)
    on_grid, how = match_mask(mask, image, patient=pid, path=path, direction_tol=config.direction_tol,
                              origin_tol_mm=config.origin_tol_mm)
    resampled = pp.resample_to_spacing(on_grid, config.spacing_xyz, is_mask=True, mask_threshold=config.mask_threshold)
    arr = pp.center_crop_or_pad(sitk.GetArrayFromImage(resampled), config.size_hw).astype(np.uint8)
    info = {"file": str(path), "geometry": how, "volume_ml_original": round(mask_volume_ml(mask), 3),
            "volume_ml_prepared": round(mask_volume_ml(arr, config.spacing_xyz[::-1]), 3)}
    return arr, info


def _prepared_zones(path: Path | None, image: sitk.Image, pid: str, config: PrepConfig, labels: tuple[int, int],
                    mask: np.ndarray | None) -> tuple[np.ndarray | None, dict]:
    """The zonal map on the prepared grid (uint8 0/1/2) and its provenance; (None, {}) without a file."""
    if path is None:
        return None, {}
    zones = read_zones(path, patient=pid, labels=labels)
    on_grid, how = match_zones(zones, image, patient=pid, path=path, direction_tol=config.direction_tol,
                               origin_tol_mm=config.origin_tol_mm)
    resampled = pp.resample_label_map(on_grid, config.spacing_xyz, 2, mask_threshold=config.mask_threshold)
    arr = pp.center_crop_or_pad(sitk.GetArrayFromImage(resampled), config.size_hw).astype(np.uint8)
    voxel = config.spacing_xyz[::-1]
    info = {"file": str(path), "geometry": how, "labels": {"PZ": labels[0], "TZ": labels[1]},
            "volume_ml_prepared": {name: round(mask_volume_ml(arr == k, voxel), 3) for k, name in ((1, "PZ"), (2, "TZ"))}}
    if mask is not None:
        # How well the zones make up the gland: 1.0 when PZ + TZ is the reader-1 mask (the built-in cohort).
        both, fg = np.count_nonzero((arr > 0) & (mask > 0)), np.count_nonzero(arr) + np.count_nonzero(mask)
        info["dice_with_mask"] = round(2 * both / fg, 4) if fg else 1.0
    return arr, info


def check_image(image: sitk.Image, patient: str, path: object) -> None:
    """:class:`InputError` for an image that cannot be a T2 scan: non-finite, constant, or only {0, 1} (a mask).

    Checked before N4, which would turn a constant image into a bias-field pattern.
    """
    n_nan, n_inf = nonfinite_voxels(image, path)
    if n_nan or n_inf:
        raise InputError(f"image has {n_nan + n_inf} NaN or infinite voxel(s)", patient=patient, path=path)
    arr = sitk.GetArrayViewFromImage(image)
    lo, hi = float(arr.min()), float(arr.max())
    if lo == hi:
        raise InputError(f"image is constant (all voxels = {lo:g})", patient=patient, path=path)
    if lo == 0 and hi == 1 and np.all((arr == 0) | (arr == 1)):
        raise InputError("image has only values {0, 1}: this looks like a mask (--images and --masks swapped?)",
                         patient=patient, path=path)


@dataclass
class PreparedPatient:
    """One patient prepared in memory: its manifest entry and its (Z, H, W) arrays."""

    entry: PatientEntry
    image: np.ndarray  # float32
    mask: np.ndarray | None  # uint8 {0, 1}
    mask2: np.ndarray | None
    zones: np.ndarray | None = None  # uint8 {0, 1 PZ, 2 TZ}


def process_patient(source: PatientSource, *, mask_path: Path | None = None, mask2_path: Path | None = None,
                    listed: tuple[str, int] | None = None, config: PrepConfig = PAPER_CONFIG,
                    zones_path: Path | None = None, zone_labels: tuple[int, int] = ZONE_LABELS) -> PreparedPatient:
    """Run the preprocessing of one patient in memory; raises :class:`InputError` for bad input.

    ``zones_path``: the patient's zonal map (values 0 and ``zone_labels`` = (PZ, TZ)), used only with a
    reader-1 mask, like the second reader's.
    """
    t0 = time.perf_counter()
    pid = source.patient_id
    image, info = load_image(source, listed)
    check_image(image, pid, info["source"])
    info["original_size_xyz"] = list(image.GetSize())
    info["original_spacing_xyz"] = [round(s, 6) for s in image.GetSpacing()]
    if mask_path is None:
        mask2_path = zones_path = None  # a second reader or zones alone cannot label the patient
    corrected = pp.n4_bias_correction(image, shrink_factor=config.n4_shrink, iterations=config.n4_iterations,
                                      convergence_threshold=config.n4_convergence) if config.n4 \
        else sitk.Cast(image, sitk.sitkFloat32)
    try:
        # The paper z-scores right after N4: statistics of the whole corrected volume on its own grid,
        # not of the resampled 256 x 256 block (whose std differs from it by up to ~8 % on ProstateX).
        mean, std = pp.zscore_stats(sitk.GetArrayViewFromImage(corrected))
    except ValueError as exc:
        raise InputError(str(exc), patient=pid, path=info["source"]) from None
    resampled = pp.resample_to_spacing(corrected, config.spacing_xyz)
    volume = pp.center_crop_or_pad(sitk.GetArrayFromImage(resampled), config.size_hw)
    z = pp.zscore(volume, (mean, std))
    smoothed = pp.gaussian_smooth(z, config.smoothing_sigma, unit=config.smoothing_unit,
                                  spacing_yx=config.spacing_xyz[1::-1])
    mask, m1 = _prepared_mask(mask_path, image, pid, config)
    mask2, m2 = _prepared_mask(mask2_path, image, pid, config)
    zones, mz = _prepared_zones(zones_path, image, pid, config, tuple(zone_labels), mask)
    info.update({
        "spacing_zyx": list(config.spacing_zyx),
        "zscore_statistics": {"over": ZSCORE_OVER.format("N4-corrected " if config.n4 else ""), "mean": round(mean, 6), "std": round(std, 6)},
        "zscore_before_smoothing": {"mean": round(float(z.mean()), 6), "std": round(float(z.std()), 6)},
        "mask": m1 or None,
        "mask2": m2 or None,
        **({"zones": mz} if mz else {}),
        "seconds": round(time.perf_counter() - t0, 2),
    })
    entry = PatientEntry(status="ok", labelled=mask is not None, second_reader=mask2 is not None,
                         n_slices=int(smoothed.shape[0]), record=f"records/{pid}.tfrecord", details=info,
                         has_zones=zones is not None)
    return PreparedPatient(entry, smoothed, mask, mask2, zones)


def _work(job: tuple) -> PreparedPatient | str:
    """Worker entry: the prepared patient, or a one-line error."""
    source, mask_path, mask2_path, listed, config, zones_path, zone_labels = job
    try:
        return process_patient(source, mask_path=mask_path, mask2_path=mask2_path, listed=listed, config=config,
                               zones_path=zones_path, zone_labels=zone_labels)
    except InputError as exc:
        return str(exc)
    except RuntimeError as exc:  # SimpleITK / GDCM errors not anticipated above
        last = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        return f"{source.patient_id}: {source.path}: {last}"


def _init_worker() -> None:
    # Workers already use the cores: one ITK thread each avoids oversubscription.
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)




LOCK_NAME = ".lock"
# Prepared folders whose lock this process holds: prepare_builtin takes it around the generation and
# prepare_cohort inside it takes it again (a second flock on the same file would refuse itself).
_HELD: set[Path] = set()


@contextlib.contextmanager
def writer_lock(out: str | Path) -> Iterator[None]:
    """Hold ``<out>/.lock`` for the block: one writer per prepared folder (re-entrant in this process).

    Raises :class:`~tfrobseg.locks.LockHeld`, naming the holder, when another process holds it.
    """
    key = Path(out).resolve()
    if key in _HELD:
        yield
        return
    with FileLock(Path(out) / LOCK_NAME):
        _HELD.add(key)
        try:
            yield
        finally:
            _HELD.discard(key)


def _delete_record(out: Path, entry: PatientEntry | None) -> None:
    if entry is not None and entry.ok:
        (out / str(entry.record)).unlink(missing_ok=True)


def _earlier_manifest(out: Path, config: PrepConfig, *, synthetic: bool, overwrite: bool,
                      log: Callable[[str], None]) -> Manifest | None:
    """The manifest of the earlier runs into ``out`` to build on; None for a new folder.

    Other parameters are an error, or with ``overwrite`` a new start: the earlier records are deleted.
    """
    if not (out / MANIFEST_NAME).is_file():
        return None
    try:
        old = Manifest.read(out)
    except ValueError:
        if not overwrite:
            raise
        old = None  # an older format: prepared again
    differs = None if old is None else ("different parameters" if old.parameters != config else
                                        f"synthetic={old.synthetic} output" if old.synthetic != synthetic else None)
    if old is not None and differs is None:
        return old
    if not overwrite:
        raise ValueError(f"{out / MANIFEST_NAME}: prepared with {differs}; use --overwrite (or another --out)")
    stale = sorted((out / "records").glob("*.tfrecord"))
    log(f"--overwrite: {out} was prepared with {differs or 'an older tfrobseg'}: its {len(stale)} record(s) are "
        "deleted and every patient is prepared again")
    for path in stale:
        path.unlink()
    return None


def _check_existing(out: Path, pid: str, entry: PatientEntry) -> str | None:
    """Why a prepared patient's record cannot be kept (None: kept); records the checksum of a format-2 entry."""
    path = out / str(entry.record)
    if not path.is_file():
        return "record file missing"
    digest = file_hash(path)
    if entry.sha256 is None:
        try:
            found = count_records(path, pid)
        except RecordError:
            return "record file unreadable"
        if found != entry.n_slices:
            return f"record has {found} slice(s), {MANIFEST_NAME} records {entry.n_slices}"
        entry.sha256 = digest
    elif digest != entry.sha256:
        return f"checksum differs from {MANIFEST_NAME} (file truncated or corrupted after preparation)"
    return None


def _todo(out: Path, manifest: Manifest, sources: dict[str, PatientSource], *, overwrite: bool,
          log: Callable[[str], None]) -> list[str]:
    """The patients of ``sources`` to prepare; earlier records are checked against their checksums."""
    todo = []
    for pid in sorted({*sources, *manifest.ok_patients}):
        entry = manifest.patients.get(pid)
        if pid in sources and (entry is None or not entry.ok or overwrite):
            todo.append(pid)
            continue
        problem = _check_existing(out, pid, entry)
        if problem is None:
            continue
        where = f"{pid}: {out / str(entry.record)}: {problem}"
        if pid in sources:
            log(f"{where}; preparing it again")
            todo.append(pid)
        else:
            log(f"WARNING {where}; it is not in this run's --images, so it cannot be prepared again: run with the "
                f"--images that hold it, or drop it with --remove-patients {pid}")
    if manifest.format_version != FORMAT_VERSION:
        n = sum(1 for p in manifest.ok_patients if manifest.patients[p].sha256 is not None)
        log(f"{MANIFEST_NAME}: format {manifest.format_version} -> {FORMAT_VERSION}: recorded the checksums of {n} "
            "existing record(s) (no patient prepared again for this)")
        manifest.format_version = FORMAT_VERSION
    return todo


def _apply_removals(out: Path, manifest: Manifest, remove: Sequence[str]) -> list[PatientEntry]:
    """Drop ``remove`` from ``manifest`` (ValueError for ids it does not hold); returns their entries."""
    unknown = sorted(set(remove) - set(manifest.patients))
    if unknown:
        known = ", ".join(sorted(manifest.patients)[:10]) or "none"
        raise ValueError(f"--remove-patients: not in {out / MANIFEST_NAME}: {', '.join(unknown)} (patients there: "
                         f"{known})")
    return [manifest.patients.pop(p) for p in dict.fromkeys(remove)]


def _log_changes(before: Manifest | None, after: Manifest, log: Callable[[str], None]) -> None:
    if before is None:
        log(f"changes: new prepared folder ({len(after.ok_patients)} patient(s) prepared)")
        return
    moved = split_moves(before.split, after.split)
    if moved:
        log(f"split: {len(moved)} earlier patient(s) moved to another split or fold (the seeded split is computed "
            "over all labelled patients); results made with the earlier split no longer match this data")
    changes = describe_data_changes(before.fingerprint(), after.fingerprint())
    log("changes: " + "; ".join(changes) if changes else "nothing changed")


def remove_patients(out: str | Path, patient_ids: Sequence[str], *, log: Callable[[str], None] | None = None,
                    ) -> Manifest:
    """Drop prepared (or skipped) patients from ``out``'s manifest and delete their records; the split is recomputed."""
    log = log or logger.info
    out = Path(out)
    with writer_lock(out):
        before = Manifest.read(out)
        manifest = copy.deepcopy(before)
        removed = _apply_removals(out, manifest, patient_ids)
        manifest.resplit()
        manifest.write(out)
        for entry in removed:  # after the manifest: a crash in between leaves unused files, not missing ones
            _delete_record(out, entry)
        _log_changes(before, manifest, log)
    return manifest


def _select_sources(images: str | Path, patients: Sequence[str] | None) -> dict[str, PatientSource]:
    sources = find_patients(images)
    if patients is None:
        return sources
    missing = sorted(set(patients) - set(sources))
    if missing:
        raise InputError(f"patients not found: {', '.join(missing)}", path=images)
    return {p: sources[p] for p in patients}


def _names(ids: list[str], limit: int = 5) -> str:
    return ", ".join(ids[:limit]) + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def _describe(pid: str, entry: PatientEntry) -> str:
    label = ("labelled" + (" + second reader" if entry.second_reader else "") + (" + zones" if entry.has_zones else "")
             ) if entry.labelled else "UNLABELLED (no mask)"
    d = entry.details
    return (f"{pid}: {d.get('series_description', '')} {d['choice']}; {entry.n_slices} slices, {label}, "
            f"{d['seconds']:.1f} s")


def _save_record(out: Path, pid: str, result: PreparedPatient, config: PrepConfig) -> None:
    """Write the patient's record and put its checksum in its entry; :class:`OutputError` naming the file."""
    from tfrobseg.dataset.records import write_patient_records

    path = out / str(result.entry.record)
    try:
        write_patient_records(path, pid, result.image, result.mask, result.mask2, config.spacing_zyx, result.zones)
        result.entry.sha256 = file_hash(path)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write the record of {pid} ({exc.strerror or exc}); free disk space or "
                          "fix the folder's permissions, then run the same command again (prepared patients are "
                          "kept)") from None


def prepare_cohort(
    images: str | Path,
    out: str | Path = "data/prostatex",
    *,
    masks: str | Path | None = None,
    second_masks: str | Path | None = None,
    zones: str | Path | None = None,
    zone_labels: Sequence[int] = ZONE_LABELS,
    image_list: str | Path | None = None,
    config: PrepConfig = PAPER_CONFIG,
    workers: int = 1,
    overwrite: bool = False,
    strict: bool = False,
    seed: int = 0,
    synthetic: bool = False,
    builtin: dict[str, int] | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    patients: Sequence[str] | None = None,
    remove: Sequence[str] = (),
) -> Manifest:
    """Prepare every patient of ``images`` into ``out``, adding them to those of earlier runs; returns the manifest.

    Patients prepared by earlier runs are kept whatever ``images`` holds; ``remove`` drops some (and
    deletes their records). A patient already prepared with the same parameters keeps its record
    unless ``overwrite`` or its record is missing or fails its checksum; skipped patients are retried.
    ``patients`` restricts the run to these ids. ``builtin`` records the identity of the built-in
    synthetic cohort. ``zones``: a folder of zonal maps named like the masks, whose values ``zone_labels``
    = (PZ, TZ) become the records' ``zones`` labels 1 and 2 (``--zones``, ``--zone-labels``). The options, mask folders and ``out`` are checked before any folder is made;
    ``<out>/.lock`` is held for the whole run. Raises :class:`InputError` for an empty input folder
    or a bad option, :class:`~tfrobseg.locks.LockHeld` when another run writes ``out``,
    :class:`OutputError` when a record cannot be written, and with ``strict`` at the first bad patient.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    log = log or logger.info
    out = Path(out)
    sources = _select_sources(images, patients)
    for option, folder in (("--masks", masks), ("--second-masks", second_masks), ("--zones", zones)):
        if folder is not None:
            check_mask_folder(folder, list(sources), option)
    zone_labels = tuple(int(v) for v in zone_labels)
    if len(zone_labels) != 2 or len(set(zone_labels)) != 2 or min(zone_labels) < 1:
        raise InputError(f"--zone-labels: two different positive values (PZ,TZ) expected, got {zone_labels}")
    listed = read_image_list(image_list) if image_list else {}
    check_out_folder(out)
    inputs = {k: None if v is None else str(v) for k, v in
              {"images": images, "masks": masks, "second_masks": second_masks, "image_list": image_list}.items()}
    if zones is not None:  # recorded only when given: the inputs of a run without zones stay as they were
        inputs["zones"] = str(zones)
    synthetic = synthetic or builtin is not None
    with writer_lock(out):
        (out / "records").mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(out)
        remove_stale_temporaries(out / "records")
        before = _earlier_manifest(out, config, synthetic=synthetic, overwrite=overwrite, log=log)
        if remove and before is None:
            raise ValueError(f"--remove-patients: {out} holds no prepared patients")
        manifest = copy.deepcopy(before) if before is not None else Manifest(
            parameters=config, synthetic=synthetic, builtin=builtin, inputs=inputs, versions=environment_versions(),
            description=("SYNTHETIC ProstateX-like cohort (generated, not patient data)" if synthetic
                         else "ProstateX T2W axial, prepared as in Apostolidis et al. Sec. II-B"))
        manifest.seed, manifest.builtin = int(seed), builtin
        removed = _apply_removals(out, manifest, remove)
        if dropped := sorted(set(remove) & set(sources)):
            log(f"--remove-patients: {', '.join(dropped)} not prepared although in --images")
        sources = {p: s for p, s in sources.items() if p not in set(remove)}
        todo = _todo(out, manifest, sources, overwrite=overwrite, log=log)
        kept = [p for p in manifest.ok_patients if p not in todo]
        if kept:
            log(f"resuming: {len(kept)} patient(s) already prepared, {len(todo)} to do")
        if no_zones := [p for p in kept if p in sources and not manifest.patients[p].has_zones
                        and manifest.patients[p].labelled and find_mask(zones, p) is not None]:
            log(f"--zones: {len(no_zones)} patient(s) prepared earlier without zones keep their records "
                f"({_names(no_zones)}); add --overwrite to prepare them again with their zones")
        _run(out, manifest, [(sources[p], find_mask(masks, p), find_mask(second_masks, p), listed.get(p), config,
                              find_mask(zones, p), zone_labels) for p in todo],
             config=config, provenance=(inputs, environment_versions()), workers=workers, strict=strict, progress=progress, log=log)
        manifest.resplit()
        manifest.write(out)
        for entry in removed:
            _delete_record(out, entry)
        _log_changes(before, manifest, log)
    return manifest


def _run(out: Path, manifest: Manifest, jobs: list[tuple], *, config: PrepConfig, provenance: tuple[dict, dict],
         workers: int, strict: bool, progress: bool, log: Callable[[str], None]) -> None:
    """Prepare the jobs' patients, saving the manifest after each one (an interrupted run resumes there)."""
    from tfrobseg.console import progress as show_progress

    def finish(pid: str, result: PreparedPatient | str) -> None:
        if isinstance(result, str):
            _delete_record(out, manifest.patients.get(pid))  # an --overwrite that failed leaves no stale record
            manifest.patients[pid] = PatientEntry.skipped(result)
            log(f"SKIPPED {result}")
        else:
            _save_record(out, pid, result, config)
            manifest.patients[pid] = result.entry
            # The inputs and versions of the latest run that prepared a patient; each patient's own
            # source files are in its entry.
            manifest.inputs, manifest.versions = provenance
            log(_describe(pid, result.entry))
        manifest.resplit()
        manifest.write(out)
        if strict and isinstance(result, str):
            raise InputError(result)

    with show_progress(len(jobs), "prepare", unit="patient", enabled=progress) as bar:
        if workers == 1 or len(jobs) <= 1:
            results = ((job, _work(job)) for job in jobs)
        else:
            results = process_map(_work, jobs, workers=workers, initializer=_init_worker)
        for job, result in results:
            finish(job[0].patient_id, result)
            bar.update()
