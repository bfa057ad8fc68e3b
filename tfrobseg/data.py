"""Reader of a prepared data folder (``manifest.json`` + ``records/<PatientID>.tfrecord``).

Gives patient lists of the seeded split (train / val / test, 3 CV folds inside train; Apostolidis
et al., Sec. II-G) and batched ``tf.data`` datasets of slice dicts (see :mod:`tfrobseg.records`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import tensorflow as tf

from tfrobseg.prepare import MANIFEST_NAME
from tfrobseg.records import parse_example

__all__ = ["make_dataset", "read_manifest", "split_patients", "to_xy"]

SPLITS = ("train", "val", "test", "all")
# Slices held in the shuffle buffer at most (one slice is 256 x 256 x 3 planes, ~0.5 MB parsed).
MAX_SHUFFLE_BUFFER = 2048


def read_manifest(data_dir: str | Path) -> dict:
    """The manifest of a prepared folder; FileNotFoundError / ValueError name the file."""
    path = Path(data_dir) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no manifest (prepare the data with data_prep/prostatex.py)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    for key in ("patients", "split", "parameters"):
        if key not in manifest:
            raise ValueError(f"{path}: missing key {key!r}")
    return manifest


def split_patients(manifest: dict, split: str, *, fold: int | None = None, exclude_fold: int | None = None) -> list[str]:
    """Patient ids (status "ok") of a split.

    ``split`` in {"train", "val", "test", "all"}. For "train", ``fold=k`` gives the k-th CV fold
    (the validation part of CV round k) and ``exclude_fold=k`` gives train minus fold k.
    "all" is every prepared patient, labelled or not.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if (fold is not None or exclude_fold is not None) and split != "train":
        raise ValueError("fold / exclude_fold apply to split='train' only")
    if fold is not None and exclude_fold is not None:
        raise ValueError("give fold or exclude_fold, not both")
    patients = manifest["patients"]
    ok = {p for p, e in patients.items() if e.get("status") == "ok"}
    if split == "all":
        return sorted(ok)
    ids = list(manifest["split"][split])
    folds = manifest["split"].get("folds", [])
    k = fold if fold is not None else exclude_fold
    if k is not None:
        if not 0 <= k < len(folds):
            raise ValueError(f"fold must be in [0, {len(folds)}), got {k}")
        ids = list(folds[k]) if fold is not None else [p for p in ids if p not in set(folds[k])]
    return [p for p in ids if p in ok]


def make_dataset(
    data_dir: str | Path,
    patient_ids: Sequence[str],
    *,
    batch_size: int = 4,
    shuffle: bool = False,
    seed: int = 0,
    drop_remainder: bool = False,
    labelled_only: bool = True,
) -> tf.data.Dataset:
    """Batched, prefetched dataset of slice dicts of ``patient_ids`` (in the given order unless shuffled).

    With ``labelled_only`` (default) patients without a mask are left out. ``shuffle`` shuffles
    slices across patients with a seeded buffer (reshuffled each epoch).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(patient_ids, str):
        raise TypeError("patient_ids must be a list of ids, not a string")
    data_dir = Path(data_dir)
    manifest = read_manifest(data_dir)
    entries = manifest["patients"]
    files, n_slices = [], 0
    for pid in patient_ids:
        e = entries.get(pid)
        if e is None or e.get("status") != "ok":
            raise ValueError(f"{data_dir / MANIFEST_NAME}: patient {pid!r} is not prepared (status ok)")
        if labelled_only and not e["labelled"]:
            continue
        path = data_dir / e["record"]
        if not path.is_file():
            raise FileNotFoundError(f"{path}: record of {pid} missing")
        files.append(str(path))
        n_slices += int(e["n_slices"])
    if not files:
        raise ValueError(f"{data_dir}: no {'labelled ' if labelled_only else ''}patients among {list(patient_ids)}")
    height, width = manifest["parameters"]["size"]
    ds = tf.data.TFRecordDataset(files)
    ds = ds.map(lambda s: parse_example(s, int(height), int(width)), num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True)
    if shuffle:
        ds = ds.shuffle(min(n_slices, MAX_SHUFFLE_BUFFER), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)


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
