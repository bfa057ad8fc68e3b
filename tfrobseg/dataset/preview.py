"""QA montage of prepared slices with the mask outlines (reader 1 red, reader 2 cyan)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tfrobseg.dataset.manifest import Manifest, PatientEntry
from tfrobseg.io import save_figure

__all__ = ["write_preview"]


def _slices(data_dir: Path, entry: PatientEntry, height: int, width: int, per_patient: int) -> list[dict]:
    import tensorflow as tf

    from tfrobseg.dataset.records import parse_example

    elements = [{k: v.numpy() for k, v in parse_example(s, height, width).items()}
                for s in tf.data.TFRecordDataset(str(data_dir / entry.record))]
    if entry.labelled:
        # The slices with the largest gland area show the outline best.
        order = np.argsort([-e["mask"].sum() for e in elements], kind="stable")
    else:
        mid = len(elements) // 2
        order = np.argsort([abs(i - mid) for i in range(len(elements))], kind="stable")
    return [elements[i] for i in sorted(order[:per_patient])]


def write_preview(data_dir: str | Path, path: str | Path | None = None, *, max_patients: int = 8,
                  per_patient: int = 3) -> Path:
    """Write a PNG montage (one row per patient) of prepared slices; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data_dir = Path(data_dir)
    manifest = Manifest.read(data_dir)
    height, width = manifest.parameters.size_hw
    pids = manifest.ok_patients[:max_patients]
    if not pids:
        raise ValueError(f"{data_dir}: no prepared patient to preview")
    path = Path(path) if path is not None else data_dir / "preview.png"
    fig, axes = plt.subplots(len(pids), per_patient, figsize=(2.6 * per_patient, 2.7 * len(pids)), squeeze=False)
    for row, pid in zip(axes, pids):
        entry = manifest.patients[pid]
        slices = _slices(data_dir, entry, height, width, per_patient)
        for ax in row:
            ax.axis("off")
        for ax, e in zip(row, slices):
            ax.imshow(e["image"][..., 0], cmap="gray", vmin=-2.5, vmax=2.5)
            if e["mask"].any():
                ax.contour(e["mask"][..., 0], levels=[0.5], colors="r", linewidths=0.8)
            if e["has_mask2"] and e["mask2"].any():
                ax.contour(e["mask2"][..., 0], levels=[0.5], colors="c", linewidths=0.6, linestyles="--")
            tag = "" if entry.labelled else " (unlabelled)"
            ax.set_title(f"{pid} z={e['slice_index']}{tag}", fontsize=7)
    title = "SYNTHETIC cohort - " if manifest.synthetic else ""
    fig.suptitle(f"{title}prepared slices (z-scored, smoothed); red: reader 1, cyan: reader 2", fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    (png,) = save_figure(fig, path.with_suffix(""), formats=("png",))
    return png
