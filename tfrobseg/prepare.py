"""The data preparation pipeline: one patient (:func:`process_patient`) and a cohort (:func:`prepare_cohort`).

Per patient (Apostolidis et al., Sec. II-B; see :mod:`tfrobseg.preprocessing` for each step):
choose and read the T2 axial image, match the mask(s) to it in physical space, N4 -> resample to
0.5 x 0.5 x 3.0 mm -> centre crop/pad to 256 x 256 -> z-score -> Gaussian smoothing, then one
TFRecord file per patient. The cohort driver adds the manifest, the seeded split, the skip list,
resumption and worker processes.

Bad input of one patient raises :class:`~tfrobseg.errors.InputError`; the cohort driver records it
under "skipped" (or stops with ``strict=True``). Outputs are only ever written atomically.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import json
import logging
import multiprocessing
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from tfrobseg import preprocessing as pp
from tfrobseg.atomic import atomic_write_text, remove_stale_temporaries
from tfrobseg.dicom import VOLUME_SUFFIXES, read_series, read_volume
from tfrobseg.discovery import (
    PatientSource,
    choose_t2_series,
    find_patients,
    patient_series,
    patient_volume_file,
    read_image_list,
)
from tfrobseg.errors import InputError
from tfrobseg.masks import mask_volume_ml, match_mask, read_mask
from tfrobseg.splits import make_split

__all__ = ["MANIFEST_NAME", "PrepConfig", "find_mask", "prepare_cohort", "process_patient"]

logger = logging.getLogger(__name__)
MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class PrepConfig:
    """Preprocessing parameters; defaults are the paper's values (Sec. II-B) where it gives them.

    spacing_xyz: target voxel spacing (mm), x, y in-plane, z between slices.
    size_hw: in-plane slice shape after centre crop / pad.
    n4: run N4; n4_shrink: in-plane shrink factor for the fit; n4_iterations: iterations per
    fitting level; n4_convergence: N4 convergence threshold.
    smoothing_sigma / smoothing_unit: Gaussian sigma and its unit ("voxel" or "mm"), in-plane.
    mask_threshold: linear-interpolated masks are binarised with ``>=`` this.
    mask_label: None = masks must be {0, 1}; an int = label map, this label is the gland.
    direction_tol / origin_tol_mm: tolerances to treat a mask as voxel-aligned with its image.
    """

    spacing_xyz: tuple[float, float, float] = (0.5, 0.5, 3.0)
    size_hw: tuple[int, int] = (256, 256)
    n4: bool = True
    n4_shrink: int = 4
    n4_iterations: tuple[int, ...] = (50, 50, 50, 50)
    n4_convergence: float = 1e-3
    smoothing_sigma: float = 1.0
    smoothing_unit: str = "voxel"
    mask_threshold: float = 0.5
    mask_label: int | None = None
    direction_tol: float = 1e-3
    origin_tol_mm: float = 0.05

    def __post_init__(self):
        object.__setattr__(self, "spacing_xyz", tuple(float(s) for s in self.spacing_xyz))
        object.__setattr__(self, "size_hw", tuple(int(s) for s in self.size_hw))
        object.__setattr__(self, "n4_iterations", tuple(int(i) for i in self.n4_iterations))
        if len(self.spacing_xyz) != 3 or min(self.spacing_xyz) <= 0:
            raise ValueError(f"spacing_xyz must be 3 positive values, got {self.spacing_xyz}")
        if len(self.size_hw) != 2 or min(self.size_hw) < 1:
            raise ValueError(f"size_hw must be 2 positive ints, got {self.size_hw}")
        if self.n4_shrink < 1 or not self.n4_iterations or min(self.n4_iterations) < 1:
            raise ValueError("n4_shrink must be >= 1 and n4_iterations a non-empty list of positive ints")
        if self.smoothing_sigma < 0 or self.smoothing_unit not in ("voxel", "mm"):
            raise ValueError("smoothing_sigma must be >= 0 and smoothing_unit 'voxel' or 'mm'")
        if not 0.0 < self.mask_threshold <= 1.0:
            raise ValueError(f"mask_threshold must be in (0, 1], got {self.mask_threshold}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}
        # Keys other streams read (protocol.native_size) and the units, stated once.
        d["image_size"] = self.size_hw[1]
        d["size"] = list(self.size_hw)
        d["spacing_zyx"] = [self.spacing_xyz[2], self.spacing_xyz[1], self.spacing_xyz[0]]
        d["units"] = {"spacing": "mm", "smoothing_sigma": f"{self.smoothing_unit} (in-plane, per slice)",
                      "mask_interpolation": f"linear, then >= {self.mask_threshold}",
                      "image_interpolation": "linear", "zscore": "per volume, after crop/pad"}
        return d


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


def process_patient(source: PatientSource, *, mask_path: Path | None = None, mask2_path: Path | None = None,
                    listed: tuple[str, int] | None = None, config: PrepConfig = PrepConfig()) -> dict[str, Any]:
    """Run the preprocessing of one patient in memory.

    Returns ``{"info": manifest entry, "image": (Z, H, W) float32, "mask", "mask2": uint8 or None}``.
    Raises :class:`InputError` for bad input.
    """
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
    resampled = pp.resample_to_spacing(corrected, config.spacing_xyz)
    volume = pp.center_crop_or_pad(sitk.GetArrayFromImage(resampled), config.size_hw)
    try:
        z = pp.zscore(volume)
    except ValueError as exc:
        raise InputError(str(exc), patient=pid, path=info["source"]) from None
    smoothed = pp.gaussian_smooth(z, config.smoothing_sigma, unit=config.smoothing_unit,
                                  spacing_yx=config.spacing_xyz[1::-1])
    mask, m1 = _prepared_mask(mask_path, image, pid, config)
    mask2, m2 = _prepared_mask(mask2_path, image, pid, config)
    info.update({
        "status": "ok",
        "labelled": mask is not None,
        "second_reader": mask2 is not None,
        "n_slices": int(smoothed.shape[0]),
        "spacing_zyx": [config.spacing_xyz[2], config.spacing_xyz[1], config.spacing_xyz[0]],
        "record": f"records/{pid}.tfrecord",
        "zscore_before_smoothing": {"mean": round(float(z.mean()), 6), "std": round(float(z.std()), 6)},
        "mask": m1 or None,
        "mask2": m2 or None,
        "seconds": round(time.perf_counter() - t0, 2),
    })
    return {"info": info, "image": smoothed, "mask": mask, "mask2": mask2}


def _work(job: tuple) -> tuple[str, dict | str]:
    """Worker entry: (pid, result) or (pid, one-line error)."""
    source, mask_path, mask2_path, listed, config = job
    try:
        return source.patient_id, process_patient(source, mask_path=mask_path, mask2_path=mask2_path,
                                                  listed=listed, config=config)
    except InputError as exc:
        return source.patient_id, str(exc)
    except RuntimeError as exc:  # SimpleITK / GDCM errors not anticipated above
        last = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        return source.patient_id, f"{source.patient_id}: {source.path}: {last}"


def _init_worker() -> None:
    # Workers already use the cores: one ITK thread each avoids oversubscription.
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)


def _versions() -> dict[str, str]:
    import tensorflow as tf

    import tfrobseg

    return {"python": platform.python_version(), "numpy": np.__version__, "SimpleITK": sitk.Version.VersionString(),
            "tensorflow": tf.__version__, "tfrobseg": tfrobseg.__version__}


@dataclass
class _Run:
    out: Path
    manifest: dict
    log: Callable[[str], None]
    done: list[str] = field(default_factory=list)

    def save(self, seed: int) -> None:
        patients = self.manifest["patients"]
        ok = sorted(p for p, e in patients.items() if e["status"] == "ok")
        labelled = [p for p in ok if patients[p]["labelled"]]
        split = make_split(labelled, seed=seed)
        split["unlabelled"] = [p for p in ok if not patients[p]["labelled"]]
        self.manifest["split"] = split
        self.manifest["skipped"] = {p: e["reason"] for p, e in sorted(patients.items()) if e["status"] == "skipped"}
        self.manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        atomic_write_text(self.out / MANIFEST_NAME, json.dumps(self.manifest, indent=1, sort_keys=False) + "\n")


def prepare_cohort(
    images: str | Path,
    out: str | Path = "data/prostatex",
    *,
    masks: str | Path | None = None,
    second_masks: str | Path | None = None,
    image_list: str | Path | None = None,
    config: PrepConfig = PrepConfig(),
    workers: int = 1,
    overwrite: bool = False,
    strict: bool = False,
    seed: int = 0,
    synthetic: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    patients: Sequence[str] | None = None,
) -> dict:
    """Prepare every patient of ``images`` into ``out``; returns the manifest.

    Patients already prepared with the same parameters are kept (resume) unless ``overwrite``;
    patients skipped before are retried. ``patients`` restricts the run to these ids.
    Raises :class:`InputError` for an empty input folder, and with ``strict`` at the first bad patient.
    """
    from tqdm.auto import tqdm

    from tfrobseg.records import write_patient_records

    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    log = log or logger.info
    out = Path(out)
    for m in (masks, second_masks):
        if m is not None and not Path(m).is_dir():
            raise FileNotFoundError(f"{m}: mask folder not found")
    sources = find_patients(images)
    if patients is not None:
        missing = sorted(set(patients) - set(sources))
        if missing:
            raise InputError(f"patients not found: {', '.join(missing)}", path=images)
        sources = {p: sources[p] for p in patients}
    listed = read_image_list(image_list) if image_list else {}
    (out / "records").mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    remove_stale_temporaries(out / "records")

    params = config.to_dict()
    manifest_path = out / MANIFEST_NAME
    old = json.loads(manifest_path.read_text()) if manifest_path.is_file() and not overwrite else None
    if old is not None and old.get("parameters") != params:
        raise ValueError(f"{manifest_path}: prepared with different parameters; use --overwrite (or another --out)")
    if old is not None and bool(old.get("synthetic")) != synthetic:
        raise ValueError(f"{manifest_path}: synthetic={old.get('synthetic')} output; use another --out")
    entries = {} if old is None else {
        p: e for p, e in old.get("patients", {}).items()
        if p in sources and e.get("status") == "ok" and (out / e["record"]).is_file()}
    manifest = {
        "format_version": FORMAT_VERSION,
        "synthetic": bool(synthetic),
        "description": ("SYNTHETIC ProstateX-like cohort (generated, not patient data)" if synthetic
                        else "ProstateX T2W axial, prepared as in Apostolidis et al. Sec. II-B"),
        "created": (old or {}).get("created", time.strftime("%Y-%m-%dT%H:%M:%S")),
        "inputs": {"images": str(images), "masks": None if masks is None else str(masks),
                   "second_masks": None if second_masks is None else str(second_masks),
                   "image_list": None if image_list is None else str(image_list)},
        "parameters": params,
        "versions": _versions(),
        "seed": int(seed),
        "patients": entries,
    }
    run = _Run(out, manifest, log)
    todo = [p for p in sources if p not in entries]
    if entries:
        log(f"resuming: {len(entries)} patient(s) already prepared, {len(todo)} to do")
    jobs = [(sources[p], find_mask(masks, p), find_mask(second_masks, p), listed.get(p), config) for p in todo]

    def finish(pid: str, result: dict | str) -> None:
        if isinstance(result, str):
            manifest["patients"][pid] = {"status": "skipped", "reason": result}
            run.save(seed)
            log(f"SKIPPED {result}")
            if strict:
                raise InputError(result)
            return
        info = result["info"]
        write_patient_records(out / info["record"], pid, result["image"], result["mask"], result["mask2"],
                              info["spacing_zyx"])
        manifest["patients"][pid] = info
        run.save(seed)
        label = "labelled" + (" + second reader" if info["second_reader"] else "") if info["labelled"] \
            else "UNLABELLED (no mask)"
        log(f"{pid}: {info.get('series_description', '')} {info['choice']}; {info['n_slices']} slices, {label}, "
            f"{info['seconds']:.1f} s")

    bar = tqdm(total=len(jobs), desc="patients", unit="patient", disable=not progress)
    try:
        if workers == 1 or len(jobs) <= 1:
            for job in jobs:
                finish(*_work(job))
                bar.update()
        else:
            ctx = multiprocessing.get_context("spawn")  # no fork after TensorFlow is loaded
            with cf.ProcessPoolExecutor(min(workers, len(jobs)), mp_context=ctx, initializer=_init_worker) as pool:
                futures = [pool.submit(_work, job) for job in jobs]
                try:
                    for fut in cf.as_completed(futures):
                        finish(*fut.result())
                        bar.update()
                except BaseException:
                    for f in futures:
                        f.cancel()
                    raise
    finally:
        bar.close()
    run.save(seed)
    return manifest


def summary(manifest: dict) -> str:
    """Multi-line end-of-run summary."""
    patients = manifest["patients"]
    ok = [p for p, e in patients.items() if e["status"] == "ok"]
    unl = [p for p in ok if not patients[p]["labelled"]]
    lines = [f"{len(ok)} patient(s) prepared ({len(ok) - len(unl)} labelled, {len(unl)} unlabelled"
             + (f": {', '.join(unl)}" if unl else "") + f"), {len(manifest['skipped'])} skipped"
             + (" [SYNTHETIC cohort]" if manifest.get("synthetic") else "")]
    s = manifest["split"]
    lines.append(f"split (seed {manifest['seed']}): train {len(s['train'])}, val {len(s['val'])}, test "
                 f"{len(s['test'])}, folds {[len(f) for f in s['folds']]}")
    for pid, reason in manifest["skipped"].items():
        lines.append(f"  skipped {pid}: {reason}")
    return "\n".join(lines)
