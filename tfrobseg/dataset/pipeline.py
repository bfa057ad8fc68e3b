"""The training and evaluation input pipeline: ``tf.data`` datasets of a prepared folder's slices.

Elements are dicts of one slice each (see :mod:`tfrobseg.dataset.records`), batched; patient lists
come from :class:`~tfrobseg.dataset.manifest.Manifest`. Only TensorFlow is needed here, never the
DICOM stack.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path

import tensorflow as tf

from tfrobseg.dataset.manifest import Manifest
from tfrobseg.dataset.records import parse_example

__all__ = ["make_dataset", "resize_element", "to_xy"]


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
) -> tf.data.Dataset:
    """Batched, prefetched dataset of slice dicts of ``patient_ids`` (in the given order unless shuffled).

    With ``labelled_only`` (default) patients without a mask are left out. ``shuffle`` draws a
    full random permutation of all the slices every epoch: a new one each epoch, the same sequence
    of permutations for the same ``seed``. ``image_size`` other than the prepared size resamples
    every slice with :func:`resize_element`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(patient_ids, str):
        raise TypeError("patient_ids must be a list of ids, not a string")
    data_dir = Path(data_dir)
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


def resize_element(element: dict, size: int, *, mask_threshold: float = 0.5) -> dict:
    """Resample a slice element to ``size``×``size`` (image and masks on one grid), spacing scaled.

    Used only when the networks' input size differs from the prepared 256 px (the built-in preset),
    so the in-plane spacing grows by the same factor and HD95/ASSD stay in millimetres. Image and
    masks go through the same antialiased bilinear filter (half-pixel centres: output pixel i of a
    4x reduction is centred on input position 4i + 1.5); the masks are then binarised with
    ``>= mask_threshold``, as the preparation binarises resampled masks. Nearest neighbour would
    take input pixel 4i + 2 and put the mask, on average, half an input pixel off the image.
    """
    if not 0.0 < mask_threshold <= 1.0:
        raise ValueError(f"mask_threshold must be in (0, 1], got {mask_threshold}")
    out = dict(element)
    h = tf.cast(tf.shape(element["image"])[-3], tf.float32)
    w = tf.cast(tf.shape(element["image"])[-2], tf.float32)
    out["image"] = tf.image.resize(element["image"], (size, size), method="bilinear", antialias=True)
    for key in ("mask", "mask2"):
        if key in element:
            soft = tf.image.resize(element[key], (size, size), method="bilinear", antialias=True)
            out[key] = tf.cast(soft >= mask_threshold, element[key].dtype)
    scale = tf.stack([tf.constant(1.0), h / size, w / size])
    out["spacing"] = tf.cast(element["spacing"], tf.float32) * scale
    return out


def to_xy(element: dict, *, second_reader: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
    """``(image, y)``: y = mask, or ``concat([mask, mask2], -1)`` with ``second_reader``.

    For a slice without a second reader (``has_mask2`` false) the second channel repeats the
    first reader's mask, so annotation-variability losses see agreement rather than an empty mask.
    Works on batched and unbatched elements.
    """
    image, mask = element["image"], element["mask"]
    if not second_reader:
        return image, mask
    has = tf.cast(element["has_mask2"], mask.dtype)
    has = tf.reshape(has, tf.concat([tf.shape(has), tf.ones([3], tf.int32)], axis=0))
    mask2 = has * element["mask2"] + (1.0 - has) * mask
    return image, tf.concat([mask, mask2], axis=-1)
