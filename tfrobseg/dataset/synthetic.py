"""Built-in SYNTHETIC ProstateX-like cohort (not patient data), written as DICOM + NIfTI in TCIA layout.

Each phantom "patient" is a T2-like axial volume (0.5-0.6 mm in-plane, 3.6 mm slices, 12-13 slices)
with a gland-shaped structure (tapered ellipsoid, flattened posteriorly, lobulated) made of a bright
peripheral zone and a darker, nodular transition zone, inside pelvis-like surroundings (fat, rectum,
bladder, pubic bones, obturator and levator muscles), a smooth multiplicative bias field and Rician
noise. Gland size, shape and position vary by patient. The gland contrast is moderate (its mean
intensity lies between muscle and fat, its transition zone is close to muscle), so a model must use
shape and context, not a threshold. Reader-1 mask = the generating gland; reader-2 mask = the same
gland with slightly perturbed size/position (Dice ~0.9).

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
from tfrobseg.dataset.config import PrepConfig
from tfrobseg.dataset.manifest import MANIFEST_NAME, Manifest
from tfrobseg.dataset.prepare import prepare_cohort, writer_lock

__all__ = ["BUILTIN_CONFIG", "make_phantom", "prepare_builtin", "write_cohort", "write_dicom_series"]

# N4 fitted on an 8x in-plane shrunk copy with two levels of 20 iterations: the synthetic field is
# smooth and low-order, and the cohort must prepare in well under a minute on 2 CPU cores (N4 cost
# grows with the shrunk voxel count). Every other parameter is the paper's value.
BUILTIN_CONFIG = PrepConfig(n4_shrink=8, n4_iterations=(20, 20))
_UID_ROOT = "1.2.826.0.1.3680043.8.498."
# Bump when make_phantom changes, so that prepare_builtin regenerates an existing cohort.
GENERATOR_VERSION = 1
_MARKER = "cohort.json"


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma_vox: tuple[float, ...]) -> np.ndarray:
    """Unit-std Gaussian random field (white noise smoothed with sigma_vox)."""
    f = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_vox)
    return f / (f.std() + 1e-8)


def _ellipse(x, y, cx, cy, rx, ry):
    return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0


def _gland(x, y, z, c, r, lobes, phase):
    """Tapered, posteriorly flattened, lobulated ellipsoid; returns the normalised radius (< 1 inside)."""
    u, v, w = (x - c[0]) / r[0], (y - c[1]) / r[1], (z - c[2]) / r[2]
    taper = 1.0 - 0.25 * w  # narrower towards the apex (inferior, w < 0 -> larger normalised radius)
    u, v = u * taper, v * taper
    v = np.where(v > 0, v * 1.25, v)  # flatter posterior surface (rectum side, +y in LPS)
    d = np.sqrt(u**2 + v**2 + w**2)
    theta = np.arctan2(v, u)
    return d * (1.0 + lobes * np.sin(3 * theta + phase))


def make_phantom(index: int, seed: int = 0) -> dict:
    """One synthetic patient: ``{"image": uint16 (Z, Y, X), "mask", "mask2": uint8, "spacing", "origin"}``.

    Coordinates in mm (LPS: +x patient left, +y posterior, +z superior), spacing (x, y, z).
    """
    rng = np.random.default_rng([seed, index])
    sp = float(rng.choice([0.5, 0.55, 0.6]))
    dz = 3.6
    nz = int(rng.integers(12, 14))
    n = round(150.0 / sp)
    origin = np.array([-n * sp / 2 + rng.uniform(-5, 5), -n * sp / 2 + rng.uniform(-5, 5), rng.uniform(-40, 0)])
    xs = origin[0] + sp * np.arange(n)
    ys = origin[1] + sp * np.arange(n)
    zs = origin[2] + dz * np.arange(nz)
    z, y, x = np.meshgrid(zs, ys, xs, indexing="ij")

    # Gland near the FOV centre, size and position varying by patient.
    c = np.array([rng.uniform(-8, 8), rng.uniform(-6, 6), zs.mean() + rng.uniform(-3, 3)])
    c[:2] += origin[:2] + n * sp / 2
    r = np.array([rng.uniform(19, 26), rng.uniform(14, 18), rng.uniform(13, 17)])
    lobes, phase = rng.uniform(0.02, 0.07), rng.uniform(0, 2 * np.pi)
    d = _gland(x, y, z, c, r, lobes, phase)
    gland = d < 1.0
    tz = _gland(x, y, z, c + [0, -0.3 * r[1], 0.1 * r[2]], r * [0.62, 0.55, 0.75], lobes, phase) < 1.0
    tz &= gland
    # Reader 2: the same gland, slightly different size and position.
    r2 = r * (1 + rng.normal(0, 0.035, 3))
    c2 = c + rng.normal(0, 0.6, 3)
    gland2 = _gland(x, y, z, c2, r2, lobes, phase) < 1.0

    cx, cy = c[0], c[1]
    body = _ellipse(x, y, origin[0] + n * sp / 2, origin[1] + n * sp / 2 + 5, rng.uniform(66, 72), rng.uniform(58, 66))
    t2 = np.where(body, 1.0, 0.0).astype(np.float32)  # fat
    t2 *= 1 + 0.08 * _smooth_noise(rng, t2.shape, (0.5, 4, 4))
    for side in (-1, 1):  # obturator internus and levator ani: dark muscle lateral to the gland
        t2[_ellipse(x, y, cx + side * (r[0] + rng.uniform(18, 24)), cy, 7, 30)] = 0.32
        t2[_ellipse(x, y, cx + side * (r[0] + 4), cy + r[1] * 0.6, 4, 10)] = 0.4
        t2[_ellipse(x, y, cx + side * 10, cy - r[1] - 18, 8, 9)] = 0.5  # pubic bone (marrow)
        t2[_ellipse(x, y, cx + side * 10, cy - r[1] - 18, 8, 9) & ~_ellipse(x, y, cx + side * 10, cy - r[1] - 18, 6, 7)] = 0.1
    rect = _ellipse(x, y, cx, cy + r[1] + rng.uniform(9, 13), 14, 11)
    t2[rect] = 0.35
    t2[_ellipse(x, y, cx, cy + r[1] + 11, 8, 6)] = rng.uniform(0.1, 0.7)  # lumen: air or content
    bladder = ((x - cx) / 28) ** 2 + ((y - (cy - r[1] - 2)) / 20) ** 2 + ((z - (c[2] + r[2] + 14)) / 14) ** 2 < 1
    t2[bladder] = 1.25
    # Periprostatic rim (capsule / venous plexus) just outside the gland, then the zones.
    t2[(d >= 1.0) & (d < 1.12)] = 0.45
    pz_level, tz_level = rng.uniform(0.7, 0.85), rng.uniform(0.38, 0.48)
    t2[gland] = pz_level * (1 + 0.12 * _smooth_noise(rng, t2.shape, (0.3, 2, 2)))[gland]
    nodules = 1 + 0.22 * _smooth_noise(rng, t2.shape, (0.5, 3, 3))
    t2[tz] = (tz_level * nodules)[tz]
    t2 = ndimage.gaussian_filter(t2, (0, 0.7, 0.7))  # partial volume at edges

    # Smooth multiplicative bias field (coil sensitivity) and Rician noise.
    xn, yn = (x - cx) / 75.0, (y - cy) / 75.0
    a = rng.normal(0, 0.25, 5)
    bias = np.exp(a[0] * xn + a[1] * yn + a[2] * xn**2 + a[3] * yn**2 + a[4] * xn * yn + 0.2 * np.exp(-(xn**2 + (yn - 0.3) ** 2) / 0.1))
    signal = t2 * bias
    sigma = rng.uniform(0.04, 0.07)
    noisy = np.sqrt((signal + rng.normal(0, sigma, signal.shape)) ** 2 + rng.normal(0, sigma, signal.shape) ** 2)
    image = np.clip(noisy * 1000, 0, 65535).astype(np.uint16)
    return {"image": image, "mask": gland.astype(np.uint8), "mask2": gland2.astype(np.uint8),
            "spacing": (sp, sp, dz), "origin": tuple(float(o) for o in origin)}


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


def write_cohort(raw_dir: str | Path, *, n_patients: int = 12, seed: int = 0) -> Path:
    """Generate the cohort into ``raw_dir`` (images/, masks/whole_gland[_second_reader]/, README.txt).

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
        for key, folder in (("mask", "whole_gland"), ("mask2", "whole_gland_second_reader")):
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


def prepare_builtin(out_dir: str | Path = "data/builtin", *, n_patients: int = 12, seed: int = 0, workers: int = 1,
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
                              second_masks=raw / "masks" / "whole_gland_second_reader", config=BUILTIN_CONFIG,
                              workers=workers, overwrite=fresh or _outdated(out), seed=seed,
                              builtin=_identity(n_patients, seed),
                              progress=progress, log=lambda msg: None)
    if manifest.skipped:
        raise RuntimeError(f"built-in cohort: patients skipped: {manifest.skipped}")
