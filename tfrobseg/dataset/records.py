"""Per-patient TFRecord files of prepared slices: writing and parsing.

One ``tf.train.Example`` per axial slice with the fields of the data contract: ``image`` (float32),
``mask`` / ``mask2`` (uint8 {0, 1}, zeros when absent), ``labelled``, ``has_mask2``,
``patient_id``, ``slice_index``, ``n_slices``, ``spacing`` (Z, H, W in mm), ``height``, ``width``,
and for a patient prepared with a zonal map ``zones`` (uint8 0 background, 1 PZ, 2 TZ) and
``has_zones``. Those two are written only when there is a zonal map, so a record without one is
byte for byte what it was before zones existed; :func:`parse_example` reads every record, with or
without them (zones all 0, ``has_zones`` false).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfrobseg.io import atomic_path

__all__ = ["FEATURES", "parse_example", "write_patient_records"]

FEATURES = {
    "image": tf.io.FixedLenFeature([], tf.string),
    "mask": tf.io.FixedLenFeature([], tf.string),
    "mask2": tf.io.FixedLenFeature([], tf.string),
    "labelled": tf.io.FixedLenFeature([], tf.int64),
    "has_mask2": tf.io.FixedLenFeature([], tf.int64),
    "patient_id": tf.io.FixedLenFeature([], tf.string),
    "slice_index": tf.io.FixedLenFeature([], tf.int64),
    "n_slices": tf.io.FixedLenFeature([], tf.int64),
    "spacing": tf.io.FixedLenFeature([3], tf.float32),
    "height": tf.io.FixedLenFeature([], tf.int64),
    "width": tf.io.FixedLenFeature([], tf.int64),
    # Absent from records without a zonal map (and from every record prepared before issue 17).
    "zones": tf.io.FixedLenFeature([], tf.string, default_value=""),
    "has_zones": tf.io.FixedLenFeature([], tf.int64, default_value=0),
}


def _bytes(v: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))


def _int(v: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v)]))


def write_patient_records(path: str | Path, patient_id: str, image: np.ndarray, mask: np.ndarray | None,
                          mask2: np.ndarray | None, spacing_zyx: Sequence[float], zones: np.ndarray | None = None,
                          ) -> int:
    """Write the (Z, H, W) volumes of one patient atomically, one example per slice; returns Z.

    ``zones``: the zonal label map (values 0, 1, 2), or None (no ``zones`` field is written).
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3:
        raise ValueError(f"{patient_id}: image must be (Z, H, W), got shape {image.shape}")
    zeros = np.zeros(image.shape, np.uint8)
    for name, m in (("mask", mask), ("mask2", mask2), ("zones", zones)):
        if m is not None and np.shape(m) != image.shape:
            raise ValueError(f"{patient_id}: {name} shape {np.shape(m)} differs from image {image.shape}")
    m1 = zeros if mask is None else np.asarray(mask).astype(np.uint8)
    m2 = zeros if mask2 is None else np.asarray(mask2).astype(np.uint8)
    if zones is not None and not np.isin(zones, (0, 1, 2)).all():
        raise ValueError(f"{patient_id}: zones must hold only 0, 1 (PZ) and 2 (TZ)")
    labels = None if zones is None else np.asarray(zones).astype(np.uint8)
    spacing = tf.train.Feature(float_list=tf.train.FloatList(value=[float(s) for s in spacing_zyx]))
    try:
        _write(path, patient_id, image, m1, m2, spacing, labels, labelled=mask is not None,
               has_mask2=mask2 is not None)
    except tf.errors.OpError as exc:  # TensorFlow's file errors (disk full, permission denied) are not OSError
        raise OSError(" ".join(str(exc.message).split())) from None
    return image.shape[0]


def _write(path: str | Path, patient_id: str, image: np.ndarray, m1: np.ndarray, m2: np.ndarray,
           spacing: tf.train.Feature, zones: np.ndarray | None, *, labelled: bool, has_mask2: bool) -> None:
    n, h, w = image.shape
    with atomic_path(path) as tmp, tf.io.TFRecordWriter(str(tmp)) as writer:
        for k in range(n):
            features = {
                "image": _bytes(image[k].tobytes()),
                "mask": _bytes(m1[k].tobytes()),
                "mask2": _bytes(m2[k].tobytes()),
                "labelled": _int(labelled),
                "has_mask2": _int(has_mask2),
                "patient_id": _bytes(patient_id.encode()),
                "slice_index": _int(k),
                "n_slices": _int(n),
                "spacing": spacing,
                "height": _int(h),
                "width": _int(w),
            }
            if zones is not None:
                features.update(zones=_bytes(zones[k].tobytes()), has_zones=_int(1))
            # deterministic: the feature map in key order, so that the same slices always give the same
            # bytes (and checksum) whichever process writes them.
            example = tf.train.Example(features=tf.train.Features(feature=features))
            writer.write(example.SerializeToString(deterministic=True))


def parse_example(serialized: tf.Tensor, height: int, width: int) -> dict[str, tf.Tensor]:
    """Parse one serialized slice into the contract's element dict (static (H, W, 1) shapes).

    ``zones`` is float32 like the masks (label values 0, 1, 2), all 0 for a record without a zonal map.
    """
    f = tf.io.parse_single_example(serialized, FEATURES)

    def plane(key: str, dtype: tf.DType) -> tf.Tensor:
        x = tf.io.decode_raw(f[key], dtype)
        return tf.cast(tf.reshape(x, (height, width, 1)), tf.float32)

    has_zones = tf.cast(f["has_zones"], tf.bool)
    zones = tf.cond(has_zones, lambda: plane("zones", tf.uint8), lambda: tf.zeros((height, width, 1), tf.float32))
    return {
        "image": plane("image", tf.float32),
        "mask": plane("mask", tf.uint8),
        "mask2": plane("mask2", tf.uint8),
        "zones": zones,
        "labelled": tf.cast(f["labelled"], tf.bool),
        "has_mask2": tf.cast(f["has_mask2"], tf.bool),
        "has_zones": has_zones,
        "patient_id": f["patient_id"],
        "slice_index": f["slice_index"],
        "n_slices": f["n_slices"],
        "spacing": f["spacing"],
    }
