"""The data preparation pipeline: one patient (:func:`process_patient`) and a cohort (:func:`prepare_cohort`).

Per patient (Apostolidis et al., Sec. II-B; see :mod:`tfrobseg.dataset.preprocessing` for each step):
choose and read the T2 axial image, match the mask(s) to it in physical space, N4 -> z-score
statistics of the whole N4-corrected volume -> resample to 0.5 x 0.5 x 3.0 mm -> centre crop/pad
to 256 x 256 -> z-score with those statistics -> Gaussian smoothing, then one TFRecord file per
patient. The cohort driver adds the manifest
(:class:`~tfrobseg.dataset.manifest.Manifest`), the seeded split, the skip list, resumption and
worker processes.

Bad input of one patient raises :class:`~tfrobseg.errors.InputError`; the cohort driver records it
under "skipped" (or stops with ``strict=True``). Outputs are only ever written atomically.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from tfrobseg.dataset import preprocessing as pp
from tfrobseg.dataset.config import PrepConfig
from tfrobseg.dataset.dicom import VOLUME_SUFFIXES, read_series, read_volume
from tfrobseg.dataset.discovery import (
    PatientSource,
    choose_t2_series,
    find_patients,
    patient_series,
    patient_volume_file,
    read_image_list,
)
from tfrobseg.dataset.manifest import MANIFEST_NAME, Manifest, PatientEntry
from tfrobseg.dataset.masks import mask_volume_ml, match_mask, read_mask
from tfrobseg.errors import InputError
from tfrobseg.io import environment_versions, remove_stale_temporaries
from tfrobseg.parallel import process_map

__all__ = ["PreparedPatient", "find_mask", "prepare_cohort", "process_patient"]

logger = logging.getLogger(__name__)
#: The paper's preprocessing (frozen, so sharing it as a default is safe).
PAPER_CONFIG = PrepConfig()
#: What the z-score statistics are computed over (recorded per patient in the manifest).
ZSCORE_OVER = "whole {}volume on its acquired grid (before resampling and crop)"


def find_mask(folder: str | Path | None, patient_id: str) -> Path | None:
    """``<folder>/<PatientID>.nii.gz`` (or .nii/.mha/.nrrd/.mhd), None when absent."""
    if folder is None:
        return None
    for suffix in VOLUME_SUFFIXES:
        p = Path(folder) / f"{patient_id}{suffix}"
        if p.is_file():
            return p
    return None


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


@dataclass
class PreparedPatient:
    """One patient prepared in memory: its manifest entry and its (Z, H, W) arrays."""

    entry: PatientEntry
    image: np.ndarray  # float32
    mask: np.ndarray | None  # uint8 {0, 1}
    mask2: np.ndarray | None


def process_patient(source: PatientSource, *, mask_path: Path | None = None, mask2_path: Path | None = None,
                    listed: tuple[str, int] | None = None, config: PrepConfig = PAPER_CONFIG) -> PreparedPatient:
    """Run the preprocessing of one patient in memory; raises :class:`InputError` for bad input."""
    t0 = time.perf_counter()
    pid = source.patient_id
    image, info = load_image(source, listed)
    info["original_size_xyz"] = list(image.GetSize())
    info["original_spacing_xyz"] = [round(s, 6) for s in image.GetSpacing()]
    if mask_path is None:
        mask2_path = None  # a second reader alone cannot label the patient
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
    info.update({
        "spacing_zyx": list(config.spacing_zyx),
        "zscore_statistics": {"over": ZSCORE_OVER.format("N4-corrected " if config.n4 else ""), "mean": round(mean, 6), "std": round(std, 6)},
        "zscore_before_smoothing": {"mean": round(float(z.mean()), 6), "std": round(float(z.std()), 6)},
        "mask": m1 or None,
        "mask2": m2 or None,
        "seconds": round(time.perf_counter() - t0, 2),
    })
    entry = PatientEntry(status="ok", labelled=mask is not None, second_reader=mask2 is not None,
                         n_slices=int(smoothed.shape[0]), record=f"records/{pid}.tfrecord", details=info)
    return PreparedPatient(entry, smoothed, mask, mask2)


def _work(job: tuple) -> PreparedPatient | str:
    """Worker entry: the prepared patient, or a one-line error."""
    source, mask_path, mask2_path, listed, config = job
    try:
        return process_patient(source, mask_path=mask_path, mask2_path=mask2_path, listed=listed, config=config)
    except InputError as exc:
        return str(exc)
    except RuntimeError as exc:  # SimpleITK / GDCM errors not anticipated above
        last = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        return f"{source.patient_id}: {source.path}: {last}"


def _init_worker() -> None:
    # Workers already use the cores: one ITK thread each avoids oversubscription.
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)


def _start_manifest(out: Path, config: PrepConfig, *, inputs: dict, sources: dict, overwrite: bool,
                    synthetic: bool, builtin: dict | None, seed: int) -> Manifest:
    """A new manifest that keeps the prepared patients of an earlier run with the same parameters."""
    old = Manifest.read(out) if (out / MANIFEST_NAME).is_file() and not overwrite else None
    if old is not None and old.parameters != config:
        raise ValueError(f"{out / MANIFEST_NAME}: prepared with different parameters; use --overwrite (or another --out)")
    if old is not None and old.synthetic != synthetic:
        raise ValueError(f"{out / MANIFEST_NAME}: synthetic={old.synthetic} output; use another --out")
    kept = {} if old is None else {
        p: e for p, e in old.patients.items() if p in sources and e.ok and (out / e.record).is_file()}
    manifest = Manifest(
        parameters=config, synthetic=synthetic, builtin=builtin, inputs=inputs, versions=environment_versions(),
        seed=int(seed), patients=kept,
        description=("SYNTHETIC ProstateX-like cohort (generated, not patient data)" if synthetic
                     else "ProstateX T2W axial, prepared as in Apostolidis et al. Sec. II-B"))
    if old is not None:
        manifest.created = old.created
    return manifest


def _select_sources(images: str | Path, patients: Sequence[str] | None) -> dict[str, PatientSource]:
    sources = find_patients(images)
    if patients is None:
        return sources
    missing = sorted(set(patients) - set(sources))
    if missing:
        raise InputError(f"patients not found: {', '.join(missing)}", path=images)
    return {p: sources[p] for p in patients}


def _describe(pid: str, entry: PatientEntry) -> str:
    label = ("labelled" + (" + second reader" if entry.second_reader else "")) if entry.labelled \
        else "UNLABELLED (no mask)"
    d = entry.details
    return (f"{pid}: {d.get('series_description', '')} {d['choice']}; {entry.n_slices} slices, {label}, "
            f"{d['seconds']:.1f} s")


def prepare_cohort(
    images: str | Path,
    out: str | Path = "data/prostatex",
    *,
    masks: str | Path | None = None,
    second_masks: str | Path | None = None,
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
) -> Manifest:
    """Prepare every patient of ``images`` into ``out``; returns the manifest.

    Patients already prepared with the same parameters are kept (resume) unless ``overwrite``;
    patients skipped before are retried. ``patients`` restricts the run to these ids. ``builtin``
    records the identity of the built-in synthetic cohort. Raises :class:`InputError` for an empty
    input folder, and with ``strict`` at the first bad patient.
    """
    from tfrobseg.console import progress as show_progress
    from tfrobseg.dataset.records import write_patient_records

    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    log = log or logger.info
    out = Path(out)
    for m in (masks, second_masks):
        if m is not None and not Path(m).is_dir():
            raise FileNotFoundError(f"{m}: mask folder not found")
    sources = _select_sources(images, patients)
    listed = read_image_list(image_list) if image_list else {}
    (out / "records").mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    remove_stale_temporaries(out / "records")
    inputs = {"images": str(images), "masks": masks, "second_masks": second_masks, "image_list": image_list}
    manifest = _start_manifest(out, config, inputs={k: None if v is None else str(v) for k, v in inputs.items()},
                               sources=sources, overwrite=overwrite, synthetic=synthetic or builtin is not None,
                               builtin=builtin, seed=seed)
    todo = [p for p in sources if p not in manifest.patients]
    if manifest.patients:
        log(f"resuming: {len(manifest.patients)} patient(s) already prepared, {len(todo)} to do")
    jobs = [(sources[p], find_mask(masks, p), find_mask(second_masks, p), listed.get(p), config) for p in todo]

    def finish(pid: str, result: PreparedPatient | str) -> None:
        if isinstance(result, str):
            manifest.patients[pid] = PatientEntry.skipped(result)
            log(f"SKIPPED {result}")
        else:
            write_patient_records(out / result.entry.record, pid, result.image, result.mask, result.mask2,
                                  config.spacing_zyx)
            manifest.patients[pid] = result.entry
            log(_describe(pid, result.entry))
        # Saved after every patient, so an interrupted run resumes where it stopped.
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
    manifest.resplit()
    manifest.write(out)
    return manifest
