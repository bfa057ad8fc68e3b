"""The training and evaluation input pipeline: ``tf.data`` datasets of a prepared folder's slices.

Elements are dicts of one slice each (see :mod:`tfrobseg.dataset.records`), batched; patient lists
come from :class:`~tfrobseg.dataset.manifest.Manifest`. Only TensorFlow is needed here, never the
DICOM stack.

Two ways to the same elements: streamed from the TFRecords (every epoch reads, parses and, at
another input size, resamples every slice again), or with ``cache=True`` read, parsed and resampled
once into memory (:func:`load_slices`) and batched from there (:func:`slices_dataset`). The experiment
runner caches: on the built-in preset that takes the input pipeline of a unit's training and
validation epoch from 212 to 57 ms of CPU, for 1.1 s more once (``benchmarks/training_throughput.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfrobseg.dataset.config import ZONE_NAMES
from tfrobseg.dataset.manifest import Manifest
from tfrobseg.dataset.records import parse_example

__all__ = ["CACHE_LIMIT_BYTES", "N_ZONES", "TARGETS", "cache_bytes", "load_slices", "make_dataset", "one_hot_zones",
           "resize_element", "slices_dataset", "to_xy"]

#: The most memory :func:`make_dataset` with ``cache=True`` takes for one dataset's slices; above it
#: the dataset streams from the records instead. 2 GiB holds the study's ~3500 training slices at
#: 256 x 256 (:func:`cache_bytes`: ~1.6 GB) in each of the units running at once; the built-in
#: preset's ~80 slices at 64 x 64 take 2 MB.
CACHE_LIMIT_BYTES = 2 * 2**30
#: The classes of ``to_xy(..., target="zones")``'s one-hot y: background, peripheral zone, transition zone.
N_ZONES = len(ZONE_NAMES)
#: What :func:`to_xy` can give as y.
TARGETS = ("mask", "zones")

# Slices per read while loading (only the loading's transient memory: 64 x 0.8 MB at 256 x 256).
_LOAD_BATCH = 64
# Label planes held as uint8 in memory (values 0 and 1; 0, 1 and 2 for zones), cast to float32 batch by batch.
_LABELS = ("mask", "mask2", "zones")
# The planes slices_dataset needs (zones are optional: slices loaded before issue 17 have none).
_REQUIRED = ("image", "mask", "mask2")


def _records(data_dir: Path, patient_ids: Sequence[str], labelled_only: bool) -> tuple[Manifest, list[str], int]:
    """The manifest, the record files of ``patient_ids`` (in order) and their slice count."""
    if isinstance(patient_ids, str):
        raise TypeError("patient_ids must be a list of ids, not a string")
    manifest = Manifest.read(data_dir)
    files, n_slices = [], 0
    for pid in patient_ids:
        e = manifest.entry(pid, data_dir)
        if labelled_only and not e.labelled:
            continue
        path = data_dir / e.record
        if not path.is_file():
            raise FileNotFoundError(f"{path}: record of {pid} missing")
        files.append(str(path))
        n_slices += e.n_slices
    if not files:
        raise ValueError(f"{data_dir}: no {'labelled ' if labelled_only else ''}patients among {list(patient_ids)}")
    return manifest, files, n_slices


def make_dataset(
    data_dir: str | Path,
    patient_ids: Sequence[str],
    *,
    batch_size: int = 4,
    shuffle: bool = False,
    seed: int = 0,
    drop_remainder: bool = False,
    labelled_only: bool = True,
    image_size: int | None = None,
    cache: bool = False,
) -> tf.data.Dataset:
    """Batched, prefetched dataset of slice dicts of ``patient_ids`` (in the given order unless shuffled).

    With ``labelled_only`` (default) patients without a mask are left out. ``shuffle`` draws a
    full random permutation of all the slices every epoch: a new one each epoch, the same sequence
    of permutations for the same ``seed``. ``image_size`` other than the prepared size resamples
    every slice with :func:`resize_element`.

    ``cache``: read, parse and resample the slices once, into memory (:func:`load_slices`), instead of
    every epoch; the elements, their order and the shuffled orders are the same. Only when they take at
    most :data:`CACHE_LIMIT_BYTES` (:func:`cache_bytes`); larger sets stream from the records as without.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    data_dir = Path(data_dir)
    manifest, files, n_slices = _records(data_dir, patient_ids, labelled_only)
    if cache and cache_bytes(n_slices, image_size or manifest.image_size) <= CACHE_LIMIT_BYTES:
        slices = load_slices(data_dir, patient_ids, labelled_only=labelled_only, image_size=image_size)
        return slices_dataset(slices, batch_size=batch_size, shuffle=shuffle, seed=seed, drop_remainder=drop_remainder)
    height, width = manifest.parameters.size_hw
    ds = tf.data.TFRecordDataset(files)
    if shuffle:
        # A buffer as large as the set makes tf.data's shuffle a uniform permutation; a smaller one
        # lets the files read last (the last patients) come out only late in each epoch. It holds
        # the serialized slices, not parsed ones: ~0.4 MB per 256 x 256 slice (float32 image, two
        # uint8 masks) against ~0.8 MB parsed (three float32 planes), so ~1.4 GB for the ~3500
        # training slices of the study.
        ds = ds.shuffle(n_slices, seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(lambda s: parse_example(s, height, width), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if image_size is not None and image_size != manifest.image_size:
        ds = ds.map(partial(resize_element, size=image_size, mask_threshold=manifest.parameters.mask_threshold))
    return ds.prefetch(tf.data.AUTOTUNE)


def cache_bytes(n_slices: int, size: int) -> int:
    """Memory the cached slices take: a float32 image, two uint8 masks and the uint8 zones of ``size`` x
    ``size`` per slice (the other fields are a few dozen bytes)."""
    return int(n_slices) * int(size) ** 2 * (4 + 1 + 1 + 1)


def load_slices(
    data_dir: str | Path,
    patient_ids: Sequence[str],
    *,
    labelled_only: bool = True,
    image_size: int | None = None,
) -> dict[str, np.ndarray]:
    """Every slice of ``patient_ids``, read, parsed and resampled once, stacked in patient and slice order.

    The fields of :func:`make_dataset`'s elements, each an array with one row per slice, except that
    ``mask``, ``mask2`` and ``zones`` are uint8 (their values are 0 and 1, and 0, 1, 2 for zones;
    :func:`slices_dataset` gives them back as float32). Memory: :func:`cache_bytes` (~0.46 MB per
    256 x 256 slice, 28 kB at 64 x 64).
    """
    ds = make_dataset(data_dir, patient_ids, batch_size=_LOAD_BATCH, labelled_only=labelled_only,
                      image_size=image_size)
    parts: dict[str, list[np.ndarray]] = {}
    for batch in ds:
        for key, value in batch.items():
            parts.setdefault(key, []).append(value.numpy())
    slices = {key: np.concatenate(values) for key, values in parts.items()}
    for key in _LABELS:
        slices[key] = slices[key].astype(np.uint8)
    return slices


def slices_dataset(
    slices: Mapping[str, np.ndarray],
    *,
    batch_size: int = 4,
    shuffle: bool = False,
    seed: int = 0,
    drop_remainder: bool = False,
) -> tf.data.Dataset:
    """Batched dataset of :func:`load_slices`' slices, as :func:`make_dataset` gives them from the records.

    Shuffling draws the permutation of the slice indices with the same ``tf.data`` shuffle (buffer = all
    the slices, ``seed``, a new permutation each epoch) as :func:`make_dataset` draws it for the records,
    so both give the same orders; batches are then gathered from the arrays, which are held once (a
    shuffle buffer of the slices themselves would hold a second copy).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    missing = sorted(set(_REQUIRED) - set(slices))
    if missing:
        raise ValueError(f"slices need the fields of tfrobseg.dataset.pipeline.load_slices; missing {missing}")
    lengths = {key: len(value) for key, value in slices.items()}
    n = lengths["image"]
    if n == 0 or len(set(lengths.values())) != 1:
        raise ValueError(f"slices must hold the same number (> 0) of slices in every field, got {lengths}")
    tensors = {key: tf.convert_to_tensor(value) for key, value in slices.items()}

    def gather(index: tf.Tensor) -> dict[str, tf.Tensor]:
        batch = {key: tf.gather(value, index) for key, value in tensors.items()}
        for key in _LABELS:
            if key in batch:
                batch[key] = tf.cast(batch[key], tf.float32)
        return batch

    ds = tf.data.Dataset.range(n)
    if shuffle:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    return ds.map(gather).prefetch(tf.data.AUTOTUNE)


def resize_element(element: dict, size: int, *, mask_threshold: float = 0.5) -> dict:
    """Resample a slice element to ``size``×``size`` (image and masks on one grid), spacing scaled.

    Used only when the networks' input size differs from the prepared 256 px (the built-in preset),
    so the in-plane spacing grows by the same factor and HD95/ASSD stay in millimetres. Image and
    masks go through the same antialiased bilinear filter (half-pixel centres: output pixel i of a
    4x reduction is centred on input position 4i + 1.5); the masks are then binarised with
    ``>= mask_threshold``, as the preparation binarises resampled masks. Nearest neighbour would
    take input pixel 4i + 2 and put the mask, on average, half an input pixel off the image.

    ``zones`` (labels 0, 1, 2) are resized label by label, as the preparation resamples them: the
    gland (labels 1 and 2 together) is resized and thresholded exactly as a mask, and each of its
    pixels takes the zone whose own resized indicator is larger (PZ on a tie). So the zones'
    foreground is the resized gland, and no pixel gets a label by interpolating label values.
    """
    if not 0.0 < mask_threshold <= 1.0:
        raise ValueError(f"mask_threshold must be in (0, 1], got {mask_threshold}")
    out = dict(element)
    h = tf.cast(tf.shape(element["image"])[-3], tf.float32)
    w = tf.cast(tf.shape(element["image"])[-2], tf.float32)

    def resize(plane: tf.Tensor) -> tf.Tensor:
        return tf.image.resize(plane, (size, size), method="bilinear", antialias=True)

    out["image"] = resize(element["image"])
    for key in ("mask", "mask2"):
        if key in element:
            out[key] = tf.cast(resize(element[key]) >= mask_threshold, element[key].dtype)
    if "zones" in element:
        zones = element["zones"]
        soft = resize(tf.cast(tf.concat([zones > 0, zones == 1, zones == 2], axis=-1), tf.float32))
        labels = tf.where(soft[..., 2:] > soft[..., 1:2], 2.0, 1.0)
        out["zones"] = tf.cast(tf.where(soft[..., :1] >= mask_threshold, labels, 0.0), zones.dtype)
    scale = tf.stack([tf.constant(1.0), h / size, w / size])
    out["spacing"] = tf.cast(element["spacing"], tf.float32) * scale
    return out


def one_hot_zones(zones: tf.Tensor) -> tf.Tensor:
    """``(..., 1)`` zone labels (0, 1, 2; any dtype) as a ``(..., 3)`` float32 one-hot y for softmax models."""
    labels = tf.cast(tf.round(tf.cast(zones[..., 0], tf.float32)), tf.int32)
    return tf.one_hot(labels, N_ZONES, dtype=tf.float32)


def to_xy(element: dict, *, second_reader: bool = False, target: str = "mask") -> tuple[tf.Tensor, tf.Tensor]:
    """``(image, y)``: y = mask, or ``concat([mask, mask2], -1)`` with ``second_reader``.

    For a slice without a second reader (``has_mask2`` false) the second channel repeats the
    first reader's mask, so annotation-variability losses see agreement rather than an empty mask.
    ``target="zones"``: y is the one-hot zonal map ``(..., 3)`` float32 (background, PZ, TZ;
    :func:`one_hot_zones`) for a softmax model. Works on batched and unbatched elements, 2D and 3D.
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    image, mask = element["image"], element["mask"]
    if target == "zones":
        if second_reader:
            raise ValueError("second_reader applies to target='mask' only (the zones have one reader)")
        return image, one_hot_zones(element["zones"])
    if not second_reader:
        return image, mask
    has = tf.cast(element["has_mask2"], mask.dtype)
    has = tf.reshape(has, tf.concat([tf.shape(has), tf.ones([tf.rank(mask) - tf.rank(has)], tf.int32)], axis=0))
    mask2 = has * element["mask2"] + (1.0 - has) * mask
    return image, tf.concat([mask, mask2], axis=-1)
