"""Per-patient evaluation of an attack sweep: reassemble 3D volumes from per-slice outputs.

The study reports Dice, HD95 and ASD per case after the FGSM attack (Apostolidis et al.,
Sections II-F and III). The networks are 2D, so the attack runner
(:func:`tfrobseg.attacks.attack_dataset`) yields one prediction per slice per ε; here the slices
of each patient are put back in slice order into a (Z, H, W) volume and compared in 3D with the
patient's reference mask, using the record's voxel spacing (Z, H, W) in mm, so HD95 and ASSD are
in millimetres. The image-quality measures of Liu et al. (PSNR, SSIM, RMSE) compare the
patient's clean and adversarial volumes.

Predictions are probabilities; a voxel is foreground when p > ``threshold`` (0.5). A patient's
rows are computed as soon as all its slices for one ε have arrived, so memory stays at about one
patient's volumes whatever the fold size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tfrobseg.dataset.integrity import check_slice_count
from tfrobseg.metrics.evaluate import stack_slices


@dataclass
class PatientVolume:
    """A patient's clean image and reference mask stacked in slice order, with spacing (Z, H, W)."""

    patient_id: str
    slice_indices: np.ndarray  # sorted slice_index values present in the dataset
    image: np.ndarray  # (Z, H, W) float32
    mask: np.ndarray  # (Z, H, W) bool
    spacing: tuple[float, float, float]

    @property
    def n_slices(self) -> int:
        return int(self.slice_indices.size)


def _scalar(x: Any) -> Any:
    x = np.asarray(x)
    if x.dtype.kind in ("S", "O"):
        v = x.reshape(-1)[0]
        return v.decode() if isinstance(v, bytes) else str(v)
    return x.reshape(-1)[0].item()


def load_volumes(dataset: Iterable[Mapping[str, Any]],
                 expected: Mapping[str, tuple[Path, int]] | None = None) -> dict[str, PatientVolume]:
    """Collect each patient's clean image, mask and spacing from a (batched) dict dataset.

    ``dataset`` is a :func:`tfrobseg.dataset.pipeline.make_dataset` dataset; elements may be batched or not;
    or a :func:`tfrobseg.dataset.volumes.volume_dataset` of whole volumes (cropped back to their ``shape``).
    ``expected`` maps each patient to its record file and the manifest's slice count: a patient with
    another number of slices (a record truncated at a record boundary reads without error) raises
    :class:`~tfrobseg.errors.RecordError` naming the patient and the file, never scored on fewer slices.
    Raises ``ValueError`` when a patient's slices disagree on spacing or repeat a slice index.
    """
    slices: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]] = {}
    spacing: dict[str, tuple[float, ...]] = {}
    for element in dataset:
        image = np.asarray(element["image"])
        if image.ndim == 5:  # whole volumes (tfrobseg.dataset.volumes.volume_dataset), padded after their end
            for i in range(image.shape[0]):
                depth, height, width = (int(n) for n in np.asarray(element["shape"])[i])
                pid = _scalar(np.asarray(element["patient_id"])[i])
                spacing[pid] = tuple(float(v) for v in np.asarray(element["spacing"])[i].reshape(-1))
                mask = np.asarray(element["mask"])[i, :depth, :height, :width, 0] > 0.5
                slices[pid] = {k: (image[i, k, :height, :width, 0].astype(np.float32), mask[k]) for k in range(depth)}
            continue
        batched = image.ndim == 4
        n = image.shape[0] if batched else 1
        arrays = {k: np.asarray(element[k]) for k in ("image", "mask", "patient_id", "slice_index", "spacing")}
        for i in range(n):
            item = {k: (v[i] if batched else v) for k, v in arrays.items()}
            pid = _scalar(item["patient_id"])
            idx = int(_scalar(item["slice_index"]))
            sp = tuple(float(v) for v in item["spacing"].reshape(-1))
            if len(sp) != 3:
                raise ValueError(f"patient {pid}: spacing must have 3 entries (Z, H, W), got {sp}")
            if pid in spacing and not np.allclose(spacing[pid], sp):
                raise ValueError(f"patient {pid}: slices disagree on spacing ({spacing[pid]} vs {sp})")
            spacing[pid] = sp
            per = slices.setdefault(pid, {})
            if idx in per:
                raise ValueError(f"patient {pid}: slice {idx} appears twice in the dataset")
            per[idx] = (item["image"][..., 0].astype(np.float32), item["mask"][..., 0] > 0.5)
    for pid, (path, n_slices) in (expected or {}).items():
        check_slice_count(pid, path, len(slices.get(pid, {})), n_slices)
    volumes = {}
    for pid, per in slices.items():
        order = np.array(sorted(per), dtype=np.int64)
        volumes[pid] = PatientVolume(
            patient_id=pid,
            slice_indices=order,
            image=stack_slices({k: image for k, (image, _) in per.items()}),
            mask=stack_slices({k: mask for k, (_, mask) in per.items()}),
            spacing=spacing[pid],  # type: ignore[arg-type]
        )
    return volumes


def epsilon_pct_std(epsilon: float, image: np.ndarray) -> float:
    """ε as a percentage of the case's intensity standard deviation in its original (pre-z-score) image.

    ε is in z-score units, which differ from case to case in original intensity. The evaluated volume is an
    affine z-score of the original intensities v, ``x = (v − μ) / s`` (μ, s: the patient's z-score statistics,
    :func:`tfrobseg.dataset.preprocessing.zscore_stats`), so

    * a perturbation of ε in x is one of ``ε · s`` in v, and
    * the std of the same voxels in v is ``std(v) = s · std(x)`` (an affine map scales the std by ``|s|``),

    hence ``100 · ε · s / std(v) = 100 · ε / std(x)``: neither μ nor s is needed, only the evaluated volume.
    The std is taken over the patient's evaluated voxels (:attr:`PatientVolume.image`, population std). That
    is not 1: s comes from the whole corrected volume before crop, the evaluated block is the central field
    of view (see :mod:`tfrobseg.dataset.preprocessing`); the steps after the z-score (Gaussian smoothing with
    border mode ``nearest``, bilinear resizing) are linear and keep constants, so they commute with the affine
    map and the identity holds for the prepared voxels. A constant volume has no std: NaN.
    """
    std = float(np.std(image, dtype=np.float64))
    return 100.0 * float(epsilon) / std if std > 0 else float("nan")


def volume_metrics(
    pred: np.ndarray,
    volume: PatientVolume,
    adversarial: np.ndarray | None = None,
) -> dict[str, Any]:
    """Segmentation metrics of a binary (Z, H, W) prediction, plus image quality if given.

    Segmentation: :func:`tfrobseg.metrics.evaluate_case` (Dice, HD95, ASSD, ... in mm).
    Image quality: PSNR / SSIM / RMSE between the clean and the adversarial volume
    (:mod:`tfrobseg.metrics`); for the clean ε = 0 the volumes are identical (RMSE 0).
    """
    from tfrobseg import metrics

    row: dict[str, Any] = dict(metrics.evaluate_case(pred, volume.mask, volume.spacing))
    if adversarial is not None:
        # One data range for the pair, taken from the clean volume, so that ε moves only the
        # numerator of PSNR/SSIM and results are comparable across ε and models.
        data_range = float(volume.image.max() - volume.image.min()) or 1.0
        row["psnr"] = float(metrics.psnr(volume.image, adversarial, data_range=data_range))
        row["ssim"] = float(metrics.ssim(volume.image, adversarial, data_range=data_range))
        row["rmse"] = float(metrics.rmse(volume.image, adversarial))
    return row


def evaluate_attack_stream(
    stream: Iterable[Mapping[str, Any]],
    volumes: Mapping[str, PatientVolume],
    *,
    threshold: float = 0.5,
    extra: Mapping[str, Any] | None = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> pd.DataFrame:
    """Turn the attack runner's per-slice outputs into one metrics row per patient × ε.

    Args:
        stream: dicts with ``patient_id``, ``slice_index``, ``epsilon``, ``prediction``
            (H, W, C) probabilities and optionally ``adversarial`` (H, W, C) images; or, for a 3D network, one
            dict per whole volume, without ``slice_index``, ``prediction`` (D, H, W, C) (padding after the end
            is cropped off).
        volumes: from :func:`load_volumes` on the same dataset (reference masks, spacing).
        threshold: probability above which a voxel is foreground.
        extra: constant columns to add to every row (model, loss, fold, attack, ...).
        on_row: called with each finished row (progress reporting).

    Returns:
        DataFrame sorted by patient and ε with the columns of :func:`volume_metrics` plus
        ``patient_id``, ``epsilon``, ``epsilon_pct_std`` (ε as a percentage of the case's original intensity
        std, :func:`epsilon_pct_std`), ``n_slices``, ``spacing_z/_y/_x``, ``fg_voxels_pred``.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    pending: dict[tuple[str, float], dict[int, tuple[np.ndarray, np.ndarray | None]]] = {}
    rows: list[dict[str, Any]] = []
    for item in stream:
        pid = str(item["patient_id"])
        if pid not in volumes:
            raise ValueError(f"attack output for patient {pid}, which is not in the evaluated dataset")
        eps = round(float(item["epsilon"]), 10)
        vol = volumes[pid]
        pred = np.asarray(item["prediction"])[..., 0] > threshold
        adv = item.get("adversarial")
        adv = None if adv is None else np.asarray(adv, dtype=np.float32)[..., 0]
        per = pending.setdefault((pid, eps), {})
        if "slice_index" in item:
            per[int(item["slice_index"])] = (pred, adv)
        else:  # a whole volume: its slices, the padding after its end cropped off
            height, width = vol.image.shape[1:]
            per.update({int(k): (pred[j, :height, :width], None if adv is None else adv[j, :height, :width])
                        for j, k in enumerate(vol.slice_indices)})
        if len(per) == vol.n_slices:
            del pending[(pid, eps)]
            missing = set(vol.slice_indices.tolist()) - set(per)
            if missing:
                raise ValueError(f"patient {pid}, eps={eps}: slices {sorted(missing)} never predicted")
            pred_vol = stack_slices({k: p for k, (p, _) in per.items()})
            adv_vol = None if adv is None else stack_slices({k: a for k, (_, a) in per.items()})
            row = {**(extra or {}), "patient_id": pid, "epsilon": eps,
                   "epsilon_pct_std": epsilon_pct_std(eps, vol.image), "n_slices": vol.n_slices}
            row.update(volume_metrics(pred_vol, vol, adv_vol))
            row["fg_voxels_pred"] = int(pred_vol.sum())
            row["spacing_z"], row["spacing_y"], row["spacing_x"] = vol.spacing
            rows.append(row)
            if on_row is not None:
                on_row(row)
    if pending:
        incomplete = sorted({f"{p} (eps={e}: {len(s)} slices)" for (p, e), s in pending.items()})
        raise ValueError(f"attack stream ended with incomplete volumes: {', '.join(incomplete[:5])}")
    df = pd.DataFrame(rows)
    if not df.empty:
        df = df.sort_values(["patient_id", "epsilon"], kind="stable").reset_index(drop=True)
    return df


def iter_with_count(
    stream: Iterable[Any], total: int | None, desc: str, enabled: bool = True, position: int = 0, unit: str = "slice"
) -> Iterator[Any]:
    """Report the progress of ``stream`` (slices, or a 3D network's volumes, × ε) when ``enabled``
    (:func:`tfrobseg.console.progress`)."""
    from tfrobseg.console import progress

    with progress(total, desc, unit=unit, position=position, enabled=enabled) as bar:
        for item in stream:
            bar.update(1)
            yield item
