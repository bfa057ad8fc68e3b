"""tfrobseg.evaluation: reassembly of per-slice attack outputs into 3-D patient volumes."""

import numpy as np
import pytest
import tensorflow as tf

from tfrobseg import metrics
from tfrobseg.evaluation import evaluate_attack_stream, load_volumes


def _dataset(z=4, size=12):
    yy, xx = np.mgrid[:size, :size]
    rows = {"image": [], "mask": [], "patient_id": [], "slice_index": [], "spacing": []}
    for pid in ("A", "B"):
        for k in range(z):
            m = ((yy - 6) ** 2 + (xx - 6) ** 2 < (2 + k) ** 2).astype("float32")
            rows["image"].append((m * 2 + 0.1 * k)[..., None])
            rows["mask"].append(m[..., None])
            rows["patient_id"].append(pid)
            rows["slice_index"].append(k)
            rows["spacing"].append(np.array([3.0, 0.5, 0.5], "float32"))
    return tf.data.Dataset.from_tensor_slices({k: np.array(v) for k, v in rows.items()}).batch(3)


def test_reassembly_in_slice_order_matches_3d_metrics():
    volumes = load_volumes(_dataset())
    assert set(volumes) == {"A", "B"} and volumes["A"].mask.shape == (4, 12, 12)
    assert volumes["A"].spacing == (3.0, 0.5, 0.5)
    rng = np.random.default_rng(0)
    preds = {pid: rng.random((4, 12, 12)) for pid in volumes}
    stream = []
    for pid in ("B", "A"):
        for k in (3, 1, 0, 2):  # out of order on purpose
            for eps in (0.0, 0.5):
                stream.append({"patient_id": pid, "slice_index": k, "epsilon": eps,
                               "prediction": preds[pid][k][..., None].astype("float32"),
                               "adversarial": (volumes[pid].image[k] + eps)[..., None]})
    df = evaluate_attack_stream(stream, volumes, extra={"model": "unet"})
    assert len(df) == 4 and list(df["patient_id"]) == ["A", "A", "B", "B"]
    row = df[(df["patient_id"] == "A") & (df["epsilon"] == 0.5)].iloc[0]
    pred = preds["A"] > 0.5
    gt = volumes["A"].mask
    assert row["dice"] == pytest.approx(2 * (pred & gt).sum() / (pred.sum() + gt.sum()))
    assert row["hd95"] == pytest.approx(metrics.hd95(pred, gt, (3.0, 0.5, 0.5)))
    assert row["rmse"] == pytest.approx(0.5, rel=1e-5)
    assert row["model"] == "unet" and row["n_slices"] == 4 and row["spacing_z"] == 3.0


def test_incomplete_or_unknown_stream_raises():
    volumes = load_volumes(_dataset())
    item = {"patient_id": "A", "slice_index": 0, "epsilon": 0.0, "prediction": np.zeros((12, 12, 1), "float32")}
    with pytest.raises(ValueError, match="incomplete"):
        evaluate_attack_stream([item], volumes)
    with pytest.raises(ValueError, match="not in the evaluated dataset"):
        evaluate_attack_stream([{**item, "patient_id": "Z"}], volumes)
