"""DICOM series: listing the series of a patient folder and reading one with integrity checks.

GDCM silently drops files it cannot parse and ITK only *warns* about missing slices, so both are
checked here explicitly: every ``*.dcm`` file of the series folder must belong to a series, and
the slice positions along the slice normal must be evenly spaced. ITK's NIfTI reader turns NaN voxels
into 0, so :func:`nonfinite_voxels` counts them in the file's bytes.
"""

from __future__ import annotations

import gzip
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from tfrobseg.errors import InputError

__all__ = ["VOLUME_SUFFIXES", "SeriesInfo", "list_series", "nonfinite_voxels", "read_series", "read_volume"]

VOLUME_SUFFIXES = (".mha", ".mhd", ".nii.gz", ".nii", ".nrrd")
# TCIA downloader folder names: "<SeriesNumber>.000000-<description>-<5 digits>".
_TCIA_FOLDER = re.compile(r"^(\d+)(?:\.\d+)?-(.*?)(?:-\d{5})?$")


@dataclass
class SeriesInfo:
    """One DICOM series (or one unreadable folder) found in a patient's image folder."""

    directory: Path
    description: str
    number: int | None
    uid: str | None = None
    files: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        """``<description>_<number>``, the naming of the PROSTATEx ``image_list.csv``."""
        return f"{self.description}_{self.number}"


def _is_dicom_name(p: Path) -> bool:
    return p.is_file() and not p.name.startswith(".") and (p.suffix.lower() == ".dcm" or p.suffix == "")


def _folder_guess(directory: Path) -> tuple[str, int | None]:
    m = _TCIA_FOLDER.match(directory.name)
    if m:
        return m.group(2), int(m.group(1))
    return directory.name, None


def _header(path: str) -> dict[str, str]:
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.ReadImageInformation()
    return {k: reader.GetMetaData(k).strip() for k in ("0008|103e", "0020|0011") if reader.HasMetaDataKey(k)}


def list_series(patient_dir: str | Path) -> list[SeriesInfo]:
    """All DICOM series below ``patient_dir`` (any depth), sorted by folder path.

    A folder whose DICOM files are all unreadable is listed too (``uid=None``), described by its
    TCIA folder name, so that a corrupt T2 series is reported as corrupt, not as missing.
    """
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    out: list[SeriesInfo] = []
    dirs = sorted({p.parent for p in Path(patient_dir).rglob("*") if _is_dicom_name(p)})
    for d in dirs:
        names = sorted(str(p) for p in d.iterdir() if _is_dicom_name(p))
        uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(d))
        members = {uid: list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(d), uid)) for uid in uids}
        claimed = {str(Path(f)) for files in members.values() for f in files}
        unreadable = [n for n in names if n not in claimed]
        guess_desc, guess_num = _folder_guess(d)
        if not members:
            out.append(SeriesInfo(d, guess_desc, guess_num, None, [], unreadable))
            continue
        for uid, files in members.items():
            try:
                meta = _header(files[0])
            except RuntimeError:
                meta = {}
            number = meta.get("0020|0011", "")
            out.append(SeriesInfo(
                d,
                meta.get("0008|103e") or guess_desc,
                int(float(number)) if re.fullmatch(r"[+-]?\d+(\.\d*)?", number) else guess_num,
                uid,
                [str(Path(f)) for f in files],
                unreadable,
            ))
    return out


# The PixelData element (7FE0,0010) as its tag bytes appear in little- and big-endian files.
_PIXEL_DATA_TAGS = (b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10")


def _unreadable_reason(path: str) -> str:
    """Why GDCM rejected a file: a DICOM header without pixel data, or a corrupt or truncated file."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return f"DICOM file not readable ({exc.strerror})"
    if data[128:132] == b"DICM" and not any(tag in data for tag in _PIXEL_DATA_TAGS):
        return ("DICOM file has no pixel data (PixelData (7FE0,0010) missing: a header-only file, or one cut "
                "before its pixels); export or download the series again")
    return "corrupt or truncated DICOM file, not readable"


def _slice_positions(reader: sitk.ImageSeriesReader, n: int) -> np.ndarray:
    iop = np.array([float(v) for v in reader.GetMetaData(0, "0020|0037").split("\\")])
    normal = np.cross(iop[:3], iop[3:])
    return np.array([
        float(np.dot(normal, [float(v) for v in reader.GetMetaData(i, "0020|0032").split("\\")])) for i in range(n)
    ])


def read_series(series: SeriesInfo, *, patient: str | None = None, spacing_tolerance: float = 0.1) -> sitk.Image:
    """Read a series as a 3-D image after checking its files and its slice spacing.

    Raises :class:`InputError` (naming patient and file) for an unreadable file in the series
    folder, fewer than 2 slices, or slice positions whose steps differ from the median step by
    more than ``spacing_tolerance`` x median (a missing or duplicated slice).
    """
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    if series.unreadable:
        extra = f" (and {len(series.unreadable) - 1} more)" if len(series.unreadable) > 1 else ""
        raise InputError(f"{_unreadable_reason(series.unreadable[0])}{extra}", patient=patient,
                         path=series.unreadable[0])
    if len(series.files) < 2:
        raise InputError(f"series has {len(series.files)} slice(s); a 3-D series needs at least 2",
                         patient=patient, path=series.directory)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(series.files)
    reader.MetaDataDictionaryArrayUpdateOn()
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(f"cannot read the DICOM series ({str(exc).strip().splitlines()[-1]})",
                         patient=patient, path=series.directory) from None
    try:
        pos = _slice_positions(reader, len(series.files))
    except (RuntimeError, ValueError, IndexError):
        raise InputError("slice position/orientation tags (0020,0032)/(0020,0037) missing or invalid",
                         patient=patient, path=series.directory) from None
    steps = np.diff(pos)
    step = float(np.median(steps))
    bad = np.flatnonzero(np.abs(steps - step) > spacing_tolerance * abs(step)) if step != 0 else np.arange(len(steps))
    if bad.size:
        i = int(bad[0])
        a, b = Path(series.files[i]).name, Path(series.files[i + 1]).name
        raise InputError(
            f"uneven slice positions: step {abs(steps[i]):.2f} mm between {a} and {b} where the series "
            f"steps {abs(step):.2f} mm (missing or duplicate slice)", patient=patient, path=series.directory)
    if image.GetDimension() != 3:
        raise InputError(f"expected a 3-D series, got {image.GetDimension()}-D", patient=patient, path=series.directory)
    return image


def read_volume(path: str | Path, *, patient: str | None = None) -> sitk.Image:
    """Read a 3-D volume file (.mha/.nii.gz/...) or raise :class:`InputError` naming it."""
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError:
        raise InputError("cannot read the volume file (corrupt, truncated or unsupported)",
                         patient=patient, path=path) from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"expected a 3-D scalar volume, got {image.GetDimension()}-D with "
                         f"{image.GetNumberOfComponentsPerPixel()} component(s)", patient=patient, path=path)
    return image


# NIfTI datatype codes of the float types (the only ones that can hold NaN or inf).
_NIFTI_FLOATS = {16: "f4", 64: "f8"}


def _nifti_header(data: bytes) -> tuple[str, int, tuple[int, ...], int] | None:
    """(byte order, datatype code, dims, data offset) of a NIfTI-1 or -2 header; None when it is neither."""
    for order in "<>":
        size = struct.unpack(order + "i", data[:4])[0]
        if size == 348:
            return (order, struct.unpack(order + "h", data[70:72])[0], struct.unpack(order + "8h", data[40:56]),
                    int(struct.unpack(order + "f", data[108:112])[0]))
        if size == 540:
            return (order, struct.unpack(order + "h", data[12:14])[0], struct.unpack(order + "8q", data[16:80]),
                    struct.unpack(order + "q", data[168:176])[0])
    return None


def nonfinite_voxels(image: sitk.Image, path: str | Path | None = None) -> tuple[int, int]:
    """(NaN, infinite) voxel counts of a volume read from ``path``; a float NIfTI file is read from its bytes."""
    arr = sitk.GetArrayViewFromImage(image)
    if not np.issubdtype(arr.dtype, np.floating):
        return 0, 0
    name = str(path or "").lower()
    if name.endswith((".nii", ".nii.gz")):
        try:
            with (gzip.open if name.endswith(".gz") else open)(path, "rb") as fh:
                data = fh.read()
            order, code, dims, offset = _nifti_header(data)
            arr = np.frombuffer(data, order + _NIFTI_FLOATS[code], count=int(np.prod(dims[1:dims[0] + 1])),
                                offset=offset)
        except (OSError, EOFError, ValueError, TypeError, KeyError, struct.error):
            pass  # not a float NIfTI file that numpy can read: what ITK read is all there is
    return int(np.isnan(arr).sum()), int(np.isinf(arr).sum())
