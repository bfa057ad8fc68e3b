"""Built-in SYNTHETIC ProstateX-like cohort (not patient data), written as DICOM + NIfTI in TCIA layout.

Each phantom "patient" is a T2-like axial volume acquired like ProstateX (0.5-0.625 mm in-plane,
3.0 or 3.6 mm slices, 180 mm field of view covering 64-76 mm) with a zonal gland: a bright, finely
textured peripheral zone, a darker nodular transition zone that grows with the gland, the dark
anterior fibromuscular stroma and the urethra; the gland volume is drawn in 20-80 mL. Around it,
pelvic context: fat with septa, the levator ani hugging the gland, obturator muscles, pubic bones,
the rectum behind and the bladder above the base, a bright venous plexus in front; then a smooth
multiplicative bias field and Rician noise. There is no dark rim all round the gland: as on real
T2, a network has to use shape and context. Measured after preprocessing with
``data_prep/realism.py`` (:mod:`tfrobseg.dataset.realism`: gland vs. 5 mm ring contrast-to-noise
ratio): the 18 built-in phantoms median +0.18 (range -0.07 .. +0.47, gland brighter in 16), the
real ProstateX-0000 / -0001 +0.33 / +0.24. Reader-1 mask = the generating gland; reader-2 mask =
the same gland with slightly perturbed size/position (Dice ~0.9). Zonal map (reader 1, ``zones``):
1 peripheral zone, 2 transition zone together with the anterior fibromuscular stroma and the urethra
(:func:`zone_labels`); its labels 1 and 2 together are the reader-1 mask.

Every file says it is synthetic: patient ids ``Synthetic-NNNN``, DICOM PatientName ``SYNTHETIC^PHANTOM``
and ImageComments, a ``README.txt`` in ``raw/``, and ``"synthetic": true`` in the manifest.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from tfrobseg.dataset.checks import check_out_folder
from tfrobseg.dataset.config import BUILTIN_PATIENTS, PZ, TZ, PrepConfig
from tfrobseg.dataset.manifest import MANIFEST_NAME, Manifest
from tfrobseg.dataset.prepare import prepare_cohort, writer_lock

__all__ = ["BUILTIN_CONFIG", "BUILTIN_PATIENTS", "PZ", "TZ", "make_phantom", "prepare_builtin", "write_cohort",
           "write_dicom_series", "zone_labels"]

# N4 fitted on an 8x in-plane shrunk copy with two levels of 20 iterations: the synthetic field is
# smooth and low-order, and the cohort must prepare in well under a minute on 2 CPU cores (N4 cost
# grows with the shrunk voxel count). Every other parameter is the paper's value.
BUILTIN_CONFIG = PrepConfig(n4_shrink=8, n4_iterations=(20, 20))
_UID_ROOT = "1.2.826.0.1.3680043.8.498."
# Bump when make_phantom changes, so that prepare_builtin regenerates an existing cohort.
# 3: zonal labels (masks/zones), issue 17.
GENERATOR_VERSION = 3
_MARKER = "cohort.json"


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma_vox: tuple[float, ...]) -> np.ndarray:
    """Unit-std Gaussian random field (white noise smoothed with sigma_vox)."""
    f = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_vox)
    return f / (f.std() + 1e-8)


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    """Squared normalised in-plane radius about (cx, cy): < 1 inside the ellipse."""
    return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2


def _gland_radius(x, y, z, c, r, lobes: float, phase: float) -> np.ndarray:
    """Normalised radius (< 1 inside) of a tapered, posteriorly flattened, lobulated ellipsoid."""
    u, v, w = (x - c[0]) / r[0], (y - c[1]) / r[1], (z - c[2]) / r[2]
    taper = 1.0 - 0.3 * np.clip(w, -1.5, 1.5)  # apex (inferior, w < 0) narrower than the base
    u, v = u * taper, v * taper
    v = np.where(v > 0, v * 1.3, v)  # flat posterior surface against the rectum (+y = posterior in LPS)
    d = np.sqrt(u**2 + v**2 + w**2)
    # Lobulation fades towards apex and base, whose cross-sections stay round.
    return d * (1.0 + lobes * np.clip(1 - w**2, 0, 1) * np.sin(3 * np.arctan2(v, u) + phase))


def _sized_gland(x, y, z, c, shape, target_ml: float, lobes: float, phase: float, voxel_ml: float):
    """Radii (mm) that give the gland ``target_ml`` on this grid, and its normalised radius field."""
    r = np.asarray(shape, float) * 20.0
    for _ in range(2):  # the volume scales with the cube of the radii; two steps land within 0.5 %
        ml = float((_gland_radius(x, y, z, c, r, lobes, phase) < 1).sum()) * voxel_ml
        r = r * (target_ml / max(ml, voxel_ml)) ** (1 / 3)
    return r, _gland_radius(x, y, z, c, r, lobes, phase)


def make_phantom(index: int, seed: int = 0) -> dict:
    """One synthetic patient: ``{"image": uint16 (Z, Y, X), "mask", "mask2", "zones": uint8, "spacing", "origin"}``.

    Coordinates in mm (LPS: +x patient left, +y posterior, +z superior), spacing (x, y, z). The
    acquisition varies like ProstateX (0.5-0.625 mm in-plane, 3.0 or 3.6 mm slices, 180 mm field of
    view, 64-76 mm covered); the gland volume is drawn log-uniformly in 20-80 mL. ``zones`` is the
    reader-1 zonal map (:func:`zone_labels`): 1 peripheral zone, 2 transition zone with the anterior
    fibromuscular stroma and the urethra (the "central gland" of two-zone atlases such as the
    Medical Segmentation Decathlon's prostate task), so labels 1 and 2 together are ``mask``.
    """
    rng = np.random.default_rng([seed, index])
    sp = float(rng.choice([0.5, 0.5, 0.5625, 0.625]))
    dz = float(rng.choice([3.0, 3.0, 3.6]))
    fov = 180.0
    n = round(fov / sp)
    nz = round(rng.uniform(64, 76) / dz)
    origin = np.array([-fov / 2 + rng.uniform(-4, 4), -fov / 2 + rng.uniform(-4, 4), rng.uniform(-40, 0)])
    z, y, x = np.meshgrid(origin[2] + dz * np.arange(nz), origin[1] + sp * np.arange(n),
                          origin[0] + sp * np.arange(n), indexing="ij")
    centre = origin + np.array([fov / 2, fov / 2, dz * (nz - 1) / 2])

    # Gland near the field-of-view centre; zones: anterior-central transition zone (larger in larger,
    # hyperplastic glands), peripheral zone around it, anterior fibromuscular stroma, urethra.
    target_ml = float(np.exp(rng.uniform(np.log(20), np.log(80))))
    c = centre + [rng.uniform(-6, 6), rng.uniform(-4, 6), rng.uniform(-4, 4)]
    shape = [1.0, rng.uniform(0.62, 0.78), rng.uniform(0.6, 0.8)]
    lobes, phase = rng.uniform(0.02, 0.06), rng.uniform(0, 2 * np.pi)
    r, d = _sized_gland(x, y, z, c, shape, target_ml, lobes, phase, sp * sp * dz / 1000)
    gland = d < 1.0
    tz_scale = np.array([0.6, 0.55, 0.7]) * (0.85 + 0.25 * (target_ml - 20) / 60)
    tz = (_gland_radius(x, y, z, c + [0, -0.28 * r[1], 0.15 * r[2]], r * tz_scale, lobes, phase) < 1) & gland
    afms = gland & (y < c[1] - 0.55 * r[1]) & (np.abs(x - c[0]) < 0.45 * r[0])
    urethra = (_ellipse(x, y, c[0], c[1] - 0.2 * r[1], 1.6, 1.6) < 1) & gland & (z > c[2] - 0.9 * r[2])
    # Reader 2: the same gland, slightly different size and position.
    gland2 = _gland_radius(x, y, z, c + rng.normal(0, 0.5, 3), r * (1 + rng.normal(0, 0.03, 3)), lobes, phase) < 1

    # Surroundings, T2 signal relative to fat ~1: ischioanal fat with dark septa; dark muscle (levator
    # ani sling hugging the gland laterally and posteriorly, obturator internus on the side walls);
    # pubic bones in front; rectum behind; bladder above the base; bright venous plexus in front.
    cx, cy = c[0], c[1]
    fat = rng.uniform(0.9, 1.1)
    muscle = rng.uniform(0.28, 0.36)
    t2 = np.zeros(x.shape, np.float32)
    body = _ellipse(x, y, centre[0], centre[1] + 8, rng.uniform(80, 88), rng.uniform(66, 74)) < 1
    t2[body] = fat * (1 + 0.1 * _smooth_noise(rng, x.shape, (0.4, 5, 5)))[body]
    t2[(np.abs(_smooth_noise(rng, x.shape, (0.8, 6, 6))) < 0.08) & body] *= 0.6
    outside = ndimage.distance_transform_edt(~gland, sampling=(dz, sp, sp))
    gap = rng.uniform(0.5, 2.5)  # fat between gland and levator ani, mm
    for side in (-1, 1):
        t2[(_ellipse(x, y, cx + side * (r[0] + rng.uniform(20, 26)), cy - 4, 8, 34) < 1) & body] = muscle
        bx, by = cx + side * rng.uniform(9, 13), cy - r[1] - rng.uniform(14, 20)
        t2[_ellipse(x, y, bx, by, 10, 9) < 1] = 0.1  # cortical bone
        t2[_ellipse(x, y, bx, by, 8, 7) < 1] = rng.uniform(0.55, 0.75)  # marrow
    sling = (outside > gap) & (outside < gap + rng.uniform(3, 5)) & (y > cy - 0.3 * r[1]) & (z < c[2] + 0.6 * r[2])
    t2[sling & body] = muscle
    rect = _ellipse(x, y, cx + rng.uniform(-4, 4), cy + 0.75 * r[1] + gap + rng.uniform(9, 12),
                    rng.uniform(14, 18), rng.uniform(11, 14))
    t2[rect < 1] = 1.1 * muscle  # muscular wall
    t2[rect < 0.55] = 0.6  # mucosa
    t2[rect < 0.3] = rng.uniform(0.05, 0.8)  # lumen: air or content
    bladder = (_ellipse(x, y, cx, cy - 0.3 * r[1], rng.uniform(30, 40), rng.uniform(24, 30))
               + ((z - (c[2] + r[2] + rng.uniform(10, 16))) / 18) ** 2)
    t2[bladder < 1.35] = muscle  # wall
    t2[bladder < 1] = rng.uniform(1.4, 1.8)  # urine
    plexus = (outside < gap + 2) & (y < cy - 0.2 * r[1]) & (_smooth_noise(rng, x.shape, (0.6, 3, 3)) > 0.6)
    t2[plexus] = 1.25 * fat
    # The gland: bright, finely textured peripheral zone; darker, nodular transition zone; dark
    # stroma; a faint capsule line only where the peripheral zone meets the outside (no dark rim
    # all round: the network has to use shape and context, as on real T2).
    t2[gland] = (rng.uniform(0.92, 1.1) * (1 + 0.15 * _smooth_noise(rng, x.shape, (0.3, 1.5, 1.5))))[gland]
    t2[tz] = (rng.uniform(0.58, 0.72) * (1 + 0.3 * _smooth_noise(rng, x.shape, (0.5, 2.5, 2.5))))[tz]
    t2[afms] = 1.2 * muscle
    t2[urethra] = 0.8
    t2[(d >= 0.97) & gland & ~tz & ~afms] *= 0.7
    t2 = ndimage.gaussian_filter(t2, (0, 0.6, 0.6))  # partial volume at edges

    # Smooth multiplicative bias field (coil sensitivity) and Rician noise.
    xn, yn = (x - cx) / 90.0, (y - cy) / 90.0
    a = rng.normal(0, 0.25, 5)
    bias = np.exp(a[0] * xn + a[1] * yn + a[2] * xn**2 + a[3] * yn**2 + a[4] * xn * yn
                  + 0.2 * np.exp(-(xn**2 + (yn - 0.3) ** 2) / 0.1))
    signal = t2 * bias
    sigma = rng.uniform(0.04, 0.07)
    noisy = np.sqrt((signal + rng.normal(0, sigma, signal.shape)) ** 2 + rng.normal(0, sigma, signal.shape) ** 2)
    image = np.clip(noisy * 1000, 0, 65535).astype(np.uint16)
    return {"image": image, "mask": gland.astype(np.uint8), "mask2": gland2.astype(np.uint8),
            "zones": zone_labels(gland, tz | afms | urethra),
            "spacing": (sp, sp, dz), "origin": tuple(float(o) for o in origin)}


def zone_labels(gland: np.ndarray, central: np.ndarray) -> np.ndarray:
    """The zonal label map of a gland: 0 background, ``PZ`` = 1 peripheral zone, ``TZ`` = 2 the rest.

    ``central`` (transition zone, anterior fibromuscular stroma and urethra) takes label 2 inside
    the gland, every other gland voxel label 1, so labels 1 and 2 together are exactly ``gland``.
    """
    zones = np.where(gland, PZ, 0).astype(np.uint8)
    zones[central & gland] = TZ
    return zones


def _uid(*parts: int) -> str:
    return _UID_ROOT + ".".join(str(int(p)) for p in parts)


def write_dicom_series(image: sitk.Image, folder: str | Path, *, patient_id: str, description: str = "t2_tse_tra",
                       series_number: int = 3, index: int = 0, seed: int = 0) -> None:
    """Write a 3-D image as a DICOM MR series (one file per slice, ``1-NN.dcm``) labelled SYNTHETIC."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pid = patient_id
    direction = image.GetDirection()
    tags = {
        "0008|0060": "MR", "0008|0008": "DERIVED\\SECONDARY", "0008|103e": description,
        "0010|0010": "SYNTHETIC^PHANTOM", "0010|0020": pid, "0020|0011": str(series_number),
        "0020|000d": _uid(seed + 1, index + 1, 1), "0020|000e": _uid(seed + 1, index + 1, 2, series_number),
        "0020|0037": "\\".join(f"{v:.6f}" for v in (direction[0], direction[3], direction[6],
                                                    direction[1], direction[4], direction[7])),
        "0018|0050": f"{image.GetSpacing()[2]:.4f}", "0018|0088": f"{image.GetSpacing()[2]:.4f}",
        "0008|0020": "20000101", "0008|0021": "20000101", "0008|0031": "000000",
        "0020|4000": "SYNTHETIC DATA generated by tfrobseg.dataset.synthetic - not a patient",
    }
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        s = image[:, :, k]
        for tag, value in tags.items():
            s.SetMetaData(tag, value)
        s.SetMetaData("0020|0032", "\\".join(f"{v:.6f}" for v in image.TransformIndexToPhysicalPoint((0, 0, k))))
        s.SetMetaData("0020|0013", str(k + 1))
        s.SetMetaData("0008|0018", _uid(seed + 1, index + 1, 3, k + 1))
        writer.SetFileName(str(folder / f"1-{k + 1:02d}.dcm"))
        writer.Execute(s)


def write_cohort(raw_dir: str | Path, *, n_patients: int = BUILTIN_PATIENTS, seed: int = 0) -> Path:
    """Generate the cohort into ``raw_dir`` (images/, masks/whole_gland[_second_reader]/, masks/zones/, README.txt).

    Written to a temporary folder and renamed, so a crash never leaves a partial cohort.
    """
    if n_patients < 1:
        raise ValueError(f"n_patients must be >= 1, got {n_patients}")
    raw = Path(raw_dir)
    tmp = raw.with_name(f".tmp-{raw.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    for i in range(n_patients):
        pid = f"Synthetic-{i:04d}"
        ph = make_phantom(i, seed)
        img = sitk.GetImageFromArray(ph["image"])
        img.SetSpacing(ph["spacing"])
        img.SetOrigin(ph["origin"])
        write_dicom_series(img, tmp / "images" / pid / "01-01-2000" / f"3.000000-t2tsetra-{i:05d}", patient_id=pid,
                           index=i, seed=seed)
        for key, folder in (("mask", "whole_gland"), ("mask2", "whole_gland_second_reader"), ("zones", "zones")):
            m = sitk.GetImageFromArray(ph[key])
            m.CopyInformation(img)
            (tmp / "masks" / folder).mkdir(parents=True, exist_ok=True)
            sitk.WriteImage(m, str(tmp / "masks" / folder / f"{pid}.nii.gz"), True)
    (tmp / "README.txt").write_text(
        "SYNTHETIC DATA - generated by tfrobseg.dataset.synthetic (ProstateX-like phantoms), not patient data.\n"
        f"{n_patients} patients, seed {seed}. Layout as the TCIA downloader and the PROSTATEx masks.\n")
    (tmp / _MARKER).write_text(json.dumps({"synthetic": True, **_identity(n_patients, seed)}) + "\n")
    shutil.rmtree(raw, ignore_errors=True)
    tmp.rename(raw)
    return raw


def _identity(n_patients: int, seed: int) -> dict:
    return {"n_patients": n_patients, "seed": seed, "generator": GENERATOR_VERSION}


def _is_ready(out: Path, n_patients: int, seed: int) -> bool:
    try:
        m = Manifest.read(out)
    except (OSError, ValueError):
        return False
    ok = [p for p in m.ok_patients if (out / m.patients[p].record).is_file() and m.patients[p].sha256]
    return (m.synthetic and m.builtin == _identity(n_patients, seed) and m.parameters == BUILTIN_CONFIG
            and len(ok) == n_patients)


def _outdated(out: Path) -> bool:
    """Whether ``out`` holds a manifest this tfrobseg refuses (older format, broken file); generated data is redone."""
    try:
        Manifest.read(out)
    except FileNotFoundError:
        return False
    except ValueError:
        return True
    return False


def prepare_builtin(out_dir: str | Path = "data/builtin", *, n_patients: int = BUILTIN_PATIENTS, seed: int = 0, workers: int = 1,
                    overwrite: bool = False, progress: bool = False) -> Path:
    """Generate (in ``out_dir/raw``) and prepare the built-in synthetic cohort; returns ``out_dir``.

    Idempotent: returns at once when ``out_dir`` already holds this cohort (same size and seed).
    A folder prepared by an older tfrobseg (manifest format) is prepared again from ``raw``; a
    format-2 one only gets its checksums. ``<out_dir>/.lock`` is held while it is written.
    """
    out = Path(out_dir)
    if not overwrite and _is_ready(out, n_patients, seed):
        return out  # without taking the lock: a ready folder may be read-only
    check_out_folder(out)
    with writer_lock(out):
        _generate_and_prepare(out, n_patients=n_patients, seed=seed, workers=workers, overwrite=overwrite,
                              progress=progress)
    return out


def _generate_and_prepare(out: Path, *, n_patients: int, seed: int, workers: int, overwrite: bool,
                          progress: bool) -> None:
    raw = out / "raw"
    try:
        marker = json.loads((raw / _MARKER).read_text())
    except (OSError, ValueError):
        marker = None
    fresh = overwrite or marker != {"synthetic": True, **_identity(n_patients, seed)}
    if fresh:
        # A new cohort replaces the earlier one: none of its patients may stay in the prepared folder.
        (out / MANIFEST_NAME).unlink(missing_ok=True)
        shutil.rmtree(out / "records", ignore_errors=True)
        write_cohort(raw, n_patients=n_patients, seed=seed)
    manifest = prepare_cohort(raw / "images", out, masks=raw / "masks" / "whole_gland",
                              second_masks=raw / "masks" / "whole_gland_second_reader", zones=raw / "masks" / "zones",
                              config=BUILTIN_CONFIG,
                              workers=workers, overwrite=fresh or _outdated(out), seed=seed,
                              builtin=_identity(n_patients, seed),
                              progress=progress, log=lambda msg: None)
    if manifest.skipped:
        raise RuntimeError(f"built-in cohort: patients skipped: {manifest.skipped}")
