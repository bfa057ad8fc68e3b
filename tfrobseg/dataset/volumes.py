"""The 3D data path: a prepared folder's patients as whole volumes, random patches, and sliding-window inference.

The volumes come from the same prepared records as the 2D slices (:func:`load_volumes` stacks
:func:`tfrobseg.dataset.pipeline.load_slices`), so they carry the same preprocessing, the same
in-plane resampling (``image_size``) and the same spacing: metrics of a 3D network and of a 2D
network stacked per patient are computed on the same grid, in the same millimetres.

* :func:`patch_dataset`: random ``(x, y)`` patches for training a 3D network, a share of them centred
  on the foreground as nnU-Net samples them (Isensee et al. 2021).
* :func:`volume_dataset`: one element per whole volume, batched ``(1, D, H, W, 1)``, the element
  dicts :func:`tfrobseg.attacks.attack_dataset` takes, so an attack perturbs a whole volume at once.
* :func:`sliding_window_predict`: a full-volume prediction from overlapping patches.
* :func:`pad_to_multiple`: the padding a network with pooling needs (sizes multiples of 2^(depth-1)).

Padding, everywhere here, is added after the last slice / row / column (so the original is
``padded[:D, :H, :W]``), with 0 for the image and background for the labels. 0 in a prepared image is
the mean of the patient's whole N4-corrected volume (the records are z-scored with it, see
:mod:`tfrobseg.dataset.preprocessing`), a neutral value; the prepared 256 x 256 block's own
zero-padding (air before the z-score) is a different, negative value.
"""

from __future__ import annotations

import itertools
import math
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tfrobseg.dataset.integrity import check_slice_count
from tfrobseg.dataset.manifest import Manifest
from tfrobseg.dataset.pipeline import N_ZONES, TARGETS, load_slices

__all__ = ["WEIGHTINGS", "Volume", "load_volumes", "pad_to_multiple", "patch_dataset", "sliding_window_predict",
           "volume_dataset", "window_starts"]

#: How :func:`sliding_window_predict` weights the overlapping patches' predictions.
WEIGHTINGS = ("gaussian", "uniform")


@dataclass
class Volume:
    """One patient's prepared volume; every array ``(D, H, W, 1)`` float32, ``spacing`` (3,) in mm, (z, y, x).

    ``mask`` / ``mask2`` hold 0 and 1 (zeros without that reader), ``zones`` 0, 1 (PZ) and 2 (TZ)
    (zeros without a zonal map).
    """

    patient_id: str
    image: np.ndarray
    mask: np.ndarray
    mask2: np.ndarray
    zones: np.ndarray
    spacing: np.ndarray
    has_mask2: bool = False
    has_zones: bool = False

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(D, H, W)``."""
        return tuple(int(n) for n in self.image.shape[:3])

    def target(self, target: str = "mask") -> np.ndarray:
        """The y of a network: ``mask`` ``(D, H, W, 1)``, or for ``"zones"`` the one-hot ``(D, H, W, 3)``."""
        return _target(self.mask, self.zones, _check_target(target))


def _check_target(target: str) -> str:
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    return target


def _target(mask: np.ndarray, zones: np.ndarray, target: str) -> np.ndarray:
    if target == "mask":
        return np.asarray(mask, np.float32)
    return np.eye(N_ZONES, dtype=np.float32)[np.rint(zones[..., 0]).astype(np.int64)]


def load_volumes(data_dir: str | Path, patient_ids: Sequence[str], *, image_size: int | None = None,
                 labelled_only: bool = True) -> list[Volume]:
    """The prepared volumes of ``patient_ids`` (in that order), from the records, as the 2D path reads them.

    ``image_size`` resamples in-plane exactly as :func:`~tfrobseg.dataset.pipeline.make_dataset`
    does (the spacing scaled with it); ``labelled_only`` leaves out patients without a mask. A record
    with another number of slices than its manifest entry is a :class:`~tfrobseg.errors.RecordError`
    naming the patient and the file.
    """
    if isinstance(patient_ids, str):
        raise TypeError("patient_ids must be a list of ids, not a string")
    if repeated := sorted({p for p in patient_ids if list(patient_ids).count(p) > 1}):
        raise ValueError(f"patient_ids lists {', '.join(repeated)} more than once")
    data_dir = Path(data_dir)
    manifest = Manifest.read(data_dir)
    slices = load_slices(data_dir, patient_ids, labelled_only=labelled_only, image_size=image_size)
    ids = np.array([p.decode() for p in slices["patient_id"]])
    volumes = []
    for pid in dict.fromkeys(ids):
        rows = np.flatnonzero(ids == pid)
        entry = manifest.entry(pid, data_dir)
        check_slice_count(pid, data_dir / str(entry.record), len(rows), entry.n_slices)
        take = {key: slices[key][rows] for key in ("image", "mask", "mask2", "zones")}
        volumes.append(Volume(
            patient_id=pid, image=take["image"].astype(np.float32), mask=take["mask"].astype(np.float32),
            mask2=take["mask2"].astype(np.float32), zones=take["zones"].astype(np.float32),
            spacing=np.asarray(slices["spacing"][rows[0]], np.float64),
            has_mask2=bool(slices["has_mask2"][rows[0]]), has_zones=bool(slices["has_zones"][rows[0]])))
    return volumes


def _spatial(values: int | Sequence[int], name: str) -> tuple[int, int, int]:
    """Three positive ints (D, H, W) from one int or three."""
    if isinstance(values, (int, np.integer)) and not isinstance(values, bool):
        values = (int(values),) * 3
    try:
        out = tuple(int(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an int or three ints (D, H, W), got {values!r}") from None
    if len(out) != 3 or min(out) < 1 or any(isinstance(v, bool) for v in values):
        raise ValueError(f"{name} must be an int or three positive ints (D, H, W), got {values!r}")
    return out


def _pad_to(array: np.ndarray, shape: Sequence[int], value: float = 0.0) -> np.ndarray:
    """``array`` padded after its end, on its first three axes, to at least ``shape``."""
    widths = [(0, max(0, int(t) - n)) for n, t in zip(array.shape[:3], shape)]
    if not any(after for _, after in widths):
        return array
    return np.pad(array, widths + [(0, 0)] * (array.ndim - 3), constant_values=value)


def pad_to_multiple(array: np.ndarray, multiple: int | Sequence[int], *, value: float = 0.0,
                    ) -> tuple[np.ndarray, tuple[slice, ...]]:
    """Pad a ``(D, H, W[, C])`` array after its end so that D, H and W are multiples of ``multiple``.

    ``multiple``: one int for every axis or three (D, H, W), e.g. ``2 ** (depth - 1)`` of a U-Net
    (with ``depth`` 4: 8; a 21-slice volume becomes 24 slices). ``value`` fills the new voxels (0:
    the image's neutral value, and background for labels; see the module docstring). Returns the
    padded array and the slices that crop it back: ``padded[crop]`` is ``array``.
    """
    array = np.asarray(array)
    if array.ndim not in (3, 4):
        raise ValueError(f"array must be (D, H, W) or (D, H, W, C), got shape {array.shape}")
    multiples = _spatial(multiple, "multiple")
    target = [math.ceil(n / m) * m for n, m in zip(array.shape[:3], multiples)]
    return _pad_to(array, target, value), tuple(slice(0, n) for n in array.shape[:3])


# --------------------------------------------------------------------------- random patches
def _check_volumes(volumes: Sequence[Volume]) -> list[Volume]:
    volumes = list(volumes)
    if not volumes or not all(isinstance(v, Volume) for v in volumes):
        raise ValueError("volumes must be a non-empty list of tfrobseg.dataset.volumes.Volume (load_volumes)")
    return volumes


def _positive(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


@dataclass
class _Source:
    """A volume ready for patch sampling: padded to at least the patch, its y, its foreground voxels by class."""

    image: np.ndarray
    y: np.ndarray
    foreground: list[np.ndarray]  # per foreground class, (n, 3) voxel indices; only the non-empty classes


def _source(volume: Volume, patch: tuple[int, int, int], target: str) -> _Source:
    labels = volume.mask if target == "mask" else volume.zones
    labels = _pad_to(np.rint(labels[..., 0]).astype(np.int64), patch)
    classes = [1] if target == "mask" else list(range(1, N_ZONES))
    foreground = [found for c in classes if len(found := np.argwhere(labels == c))]
    y = _pad_to(_target(volume.mask, volume.zones, target), patch)
    if target == "zones":
        y[..., 0] = np.where(y.sum(axis=-1) == 0, 1.0, y[..., 0])  # padded voxels are background
    return _Source(_pad_to(volume.image.astype(np.float32), patch), y, foreground)


def _draw_starts(sources: list[_Source], patch: tuple[int, int, int], n_foreground: int, n_random: int,
                 rng: np.random.Generator) -> list[tuple[int, np.ndarray]]:
    """(source index, patch start) of one epoch, shuffled; see :func:`patch_dataset`."""
    draws = []
    size = np.asarray(patch)
    for k, src in enumerate(sources):
        high = np.asarray(src.image.shape[:3]) - size  # the largest start keeping the patch inside
        for j in range(n_foreground + n_random):
            if j < n_foreground and src.foreground:
                voxels = src.foreground[rng.integers(len(src.foreground))]
                centre = voxels[rng.integers(len(voxels))]
                start = np.clip(centre - size // 2, 0, high)
            else:
                start = np.array([rng.integers(0, h + 1) for h in high])
            draws.append((k, start))
    return [draws[i] for i in rng.permutation(len(draws))]


def patch_dataset(volumes: Sequence[Volume], patch_shape: int | Sequence[int], *, batch_size: int, seed: int,
                  samples_per_volume: int, foreground_fraction: float = 0.5, target: str = "mask",
                  ) -> tf.data.Dataset:
    """Batches of random ``(x, y)`` patches: x ``(B, pd, ph, pw, 1)``, y ``(B, pd, ph, pw, 1)`` (``"mask"``) or
    the one-hot ``(B, pd, ph, pw, 3)`` (``"zones"``), float32.

    Each pass over the dataset (an epoch) draws ``samples_per_volume`` patches per volume, in a
    random order: ``round(foreground_fraction * samples_per_volume)`` of them centred on a foreground
    voxel, the rest anywhere in the volume (uniform over the patch positions that lie inside it). The
    foreground voxel is drawn as nnU-Net draws its "oversampled" patches: first a foreground class
    present in the volume (for zones: PZ or TZ, with equal chance), then one of its voxels; the patch
    is then moved, if needed, to lie inside the volume. Without foreground (an empty mask) a volume's
    patches are all uniform. nnU-Net forces a third of each batch to foreground
    (``oversample_foreground_percent`` 0.33); here the share is per volume and epoch, 0.5 by default.
    A volume smaller than the patch is padded (module docstring).

    Reproducible: epoch e draws with ``numpy.random.default_rng([seed, e])``, e counting the passes
    over this dataset object from 0; the same ``seed`` gives the same epochs, another seed others.
    """
    volumes = _check_volumes(volumes)
    patch = _spatial(patch_shape, "patch_shape")
    batch_size = _positive(batch_size, "batch_size")
    samples = _positive(samples_per_volume, "samples_per_volume")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an int, got {seed!r}")  # noqa: TRY004 - bad input is a ValueError here
    if not 0.0 <= foreground_fraction <= 1.0:
        raise ValueError(f"foreground_fraction must be in [0, 1], got {foreground_fraction}")
    target = _check_target(target)
    sources = [_source(v, patch, target) for v in volumes]
    n_foreground = round(foreground_fraction * samples)
    epochs = itertools.count()

    def patches() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        rng = np.random.default_rng([int(seed), next(epochs)])
        for k, start in _draw_starts(sources, patch, n_foreground, samples - n_foreground, rng):
            box = tuple(slice(s, s + p) for s, p in zip(start, patch))
            yield sources[k].image[box], sources[k].y[box]

    channels = 1 if target == "mask" else N_ZONES
    ds = tf.data.Dataset.from_generator(patches, output_signature=(
        tf.TensorSpec((*patch, 1), tf.float32), tf.TensorSpec((*patch, channels), tf.float32)))
    n = len(sources) * samples
    return ds.apply(tf.data.experimental.assert_cardinality(n)).batch(batch_size).prefetch(tf.data.AUTOTUNE)


# --------------------------------------------------------------------------- whole volumes
def volume_dataset(volumes: Sequence[Volume], *, target: str = "mask",
                   multiple: int | Sequence[int] | None = None) -> tf.data.Dataset:
    """One element per volume, batched by one: the dict :func:`tfrobseg.attacks.attack_dataset` attacks.

    Element: ``image`` ``(1, D, H, W, 1)``; ``mask`` ``(1, D, H, W, C)``, the attack's y: the mask
    (C = 1) or, with ``target="zones"``, the one-hot zones (C = 3); ``mask2`` and ``zones`` (the
    labels, ``(1, D, H, W, 1)``); ``patient_id``, ``spacing`` (z, y, x mm), ``shape`` (D, H, W before
    padding), ``has_mask2``, ``has_zones`` (each ``(1, ...)``), all float32 but the ids, flags and shape.

    ``multiple`` pads every volume (:func:`pad_to_multiple`) so that a network with pooling takes it
    whole; the prediction of the original is ``prediction[:D, :H, :W]`` with D, H, W from ``shape``.
    Volumes of different sizes give elements of different sizes: attack them with ``batch_size=1``.
    """
    volumes = _check_volumes(volumes)
    target = _check_target(target)
    multiples = None if multiple is None else _spatial(multiple, "multiple")

    def padded(array: np.ndarray) -> np.ndarray:
        return array if multiples is None else pad_to_multiple(array, multiples)[0]

    def elements() -> Iterator[dict[str, np.ndarray]]:
        for v in volumes:
            zones = padded(v.zones)
            mask = padded(v.mask)
            yield {"image": padded(v.image)[None], "mask": _target(mask, zones, target)[None],
                   "mask2": padded(v.mask2)[None], "zones": zones[None], "patient_id": np.array([v.patient_id]),
                   "spacing": np.asarray(v.spacing, np.float32)[None], "shape": np.array([v.shape], np.int64),
                   "has_mask2": np.array([v.has_mask2]), "has_zones": np.array([v.has_zones])}

    shapes = {padded(v.image).shape[:3] for v in volumes}
    common = [dims[0] if len(set(dims)) == 1 else None for dims in zip(*shapes)]
    channels = 1 if target == "mask" else N_ZONES

    def spec(c: int) -> tf.TensorSpec:
        return tf.TensorSpec((1, *common, c), tf.float32)

    signature = {"image": spec(1), "mask": spec(channels), "mask2": spec(1), "zones": spec(1),
                 "patient_id": tf.TensorSpec((1,), tf.string), "spacing": tf.TensorSpec((1, 3), tf.float32),
                 "shape": tf.TensorSpec((1, 3), tf.int64), "has_mask2": tf.TensorSpec((1,), tf.bool),
                 "has_zones": tf.TensorSpec((1,), tf.bool)}
    ds = tf.data.Dataset.from_generator(elements, output_signature=signature)
    return ds.apply(tf.data.experimental.assert_cardinality(len(volumes)))


# --------------------------------------------------------------------------- sliding-window inference
def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Start indices of the windows along one axis: evenly spaced from 0 to ``size - patch``, as few as
    keep neighbours at most ``patch * (1 - overlap)`` apart (nnU-Net's ``compute_steps_for_sliding_window``);
    ``[0]`` when the patch covers the axis."""
    if size <= patch:
        return [0]
    n = math.ceil((size - patch) / (patch * (1.0 - overlap))) + 1
    return sorted({round(i * (size - patch) / (n - 1)) for i in range(n)})


def _weights(patch: tuple[int, int, int], weighting: str) -> np.ndarray:
    """The ``(pd, ph, pw, 1)`` weight of each voxel of a window's prediction (float64)."""
    if weighting == "uniform":
        return np.ones((*patch, 1))
    axes = [np.exp(-0.5 * ((np.arange(p) - (p - 1) / 2) / (p / 8)) ** 2) for p in patch]
    return np.einsum("i,j,k->ijk", *axes)[..., None]


# model -> its compiled inference pass, kept while the model lives (one trace per window shape, not per call).
_FORWARD: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _forward(model: keras.Model) -> Callable[[tf.Tensor], tf.Tensor]:
    if model not in _FORWARD:
        ref = weakref.ref(model)  # a strong reference here would keep the model (the dict's key) alive
        _FORWARD[model] = tf.function(lambda x: tf.cast(ref()(x, training=False), tf.float32), reduce_retracing=True)
    return _FORWARD[model]


def sliding_window_predict(model: keras.Model, image: np.ndarray, patch_shape: int | Sequence[int], *,
                           overlap: float = 0.5, batch_size: int = 4, weighting: str = "gaussian") -> np.ndarray:
    """The model's probabilities for a whole ``(D, H, W, 1)`` volume, from overlapping ``patch_shape`` windows.

    Windows are laid along each axis by :func:`window_starts` (neighbours overlapping by at least
    ``overlap`` of the patch); a volume smaller than the patch is padded (module docstring) and the
    output cropped back. Each voxel's output is the weighted mean of the predictions of the windows
    that cover it. ``weighting="gaussian"`` (default, nnU-Net's): a window's voxels are weighted by a
    Gaussian centred on the window, σ = 1/8 of the patch along each axis, since a prediction near a
    window's edge (where the convolutions see zero padding) is less reliable than at its centre;
    ``"uniform"``: the plain mean. Where one window covers the volume, the output is exactly the model's
    own prediction for it. Windows go through ``model`` in batches of ``batch_size`` (at most the
    number of windows; the last batch padded, so the model is traced once). Returns ``(D, H, W, C)`` float32.
    """
    image = np.asarray(image, np.float32)
    if image.ndim == 5 and image.shape[0] == 1:
        image = image[0]
    if image.ndim != 4:
        raise ValueError(f"image must be one volume (D, H, W, C), got shape {image.shape}")
    patch = _spatial(patch_shape, "patch_shape")
    batch_size = _positive(batch_size, "batch_size")
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    shape = image.shape[:3]
    padded = _pad_to(image, patch)
    starts = list(itertools.product(*(window_starts(n, p, overlap) for n, p in zip(padded.shape[:3], patch))))
    weight = _weights(patch, weighting)
    # No larger than the number of windows: one window goes through the model alone, as the whole volume
    # would (a convolution's float32 result can depend on the batch it is computed in).
    batch_size = min(batch_size, len(starts))
    forward = _forward(model)
    total = norm = None
    for first in range(0, len(starts), batch_size):
        chunk = starts[first:first + batch_size]
        batch = np.zeros((batch_size, *patch, padded.shape[3]), np.float32)
        for i, start in enumerate(chunk):
            batch[i] = padded[tuple(slice(s, s + p) for s, p in zip(start, patch))]
        preds = forward(tf.constant(batch)).numpy().astype(np.float64)
        if total is None:
            total = np.zeros((*padded.shape[:3], preds.shape[-1]))
            norm = np.zeros((*padded.shape[:3], 1))
        for i, start in enumerate(chunk):
            box = tuple(slice(s, s + p) for s, p in zip(start, patch))
            total[box] += weight * preds[i]
            norm[box] += weight
    return (total / norm)[: shape[0], : shape[1], : shape[2]].astype(np.float32)
