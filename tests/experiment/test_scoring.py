"""tfrobseg.experiment.scoring: reassembly of per-slice attack outputs into 3-D patient volumes."""

import numpy as np
import pytest
import tensorflow as tf

from tfrobseg import metrics
from tfrobseg.experiment.scoring import (
    epsilon_pct_std,
    evaluate_attack_stream,
    load_volumes,
)


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
    assert len(df) == 4 and list(df["patient_id"]) == ["A", "A", "B", "B"] and list(df["epsilon"]) == [0, 0.5] * 2
    assert list(df.index) == [0, 1, 2, 3] and "index" not in df.columns  # a clean table, no stray column
    row = df[(df["patient_id"] == "A") & (df["epsilon"] == 0.5)].iloc[0]
    pred = preds["A"] > 0.5
    gt = volumes["A"].mask
    assert row["dice"] == pytest.approx(2 * (pred & gt).sum() / (pred.sum() + gt.sum()))
    assert row["hd95"] == pytest.approx(metrics.hd95(pred, gt, (3.0, 0.5, 0.5)))
    assert row["rmse"] == pytest.approx(0.5, rel=1e-5)
    assert row["model"] == "unet" and row["n_slices"] == 4 and row["spacing_z"] == 3.0


def test_unbatched_elements_give_the_same_volumes():
    batched, unbatched = load_volumes(_dataset()), load_volumes(_dataset().unbatch())
    for pid in ("A", "B"):
        np.testing.assert_array_equal(unbatched[pid].image, batched[pid].image)
        np.testing.assert_array_equal(unbatched[pid].mask, batched[pid].mask)
        assert unbatched[pid].spacing == batched[pid].spacing and unbatched[pid].n_slices == 4


def test_incomplete_or_unknown_stream_raises():
    volumes = load_volumes(_dataset())
    item = {"patient_id": "A", "slice_index": 0, "epsilon": 0.0, "prediction": np.zeros((12, 12, 1), "float32")}
    with pytest.raises(ValueError, match="incomplete"):
        evaluate_attack_stream([item], volumes)
    with pytest.raises(ValueError, match="not in the evaluated dataset"):
        evaluate_attack_stream([{**item, "patient_id": "Z"}], volumes)


def test_image_quality_through_the_evaluation_path_matches_scikit_image():
    # PSNR and SSIM of a patient's adversarial volume against its clean volume, with the data
    # range of the clean volume (fixed across ε), as scikit-image computes them slice by slice.
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    volumes = load_volumes(_dataset(z=3, size=16))
    volumes["A"].image -= 1.0  # z-scored intensities: a range that starts below 0
    clean = volumes["A"].image
    rng = np.random.default_rng(1)
    adv = (clean + rng.choice([-0.8, 0.8], clean.shape) + rng.normal(0, 0.3, clean.shape)).astype("float32")
    stream = [{"patient_id": pid, "slice_index": k, "epsilon": 0.8, "prediction": np.zeros((16, 16, 1), "float32"),
               "adversarial": (adv if pid == "A" else volumes[pid].image)[k][..., None]}
              for pid in ("A", "B") for k in range(3)]
    row = evaluate_attack_stream(stream, volumes).set_index("patient_id").loc["A"]
    data_range = float(clean.max() - clean.min())
    assert float(adv.max() - adv.min()) > 1.5 * data_range  # the premise: the two ranges differ
    assert row["psnr"] == pytest.approx(peak_signal_noise_ratio(clean, adv, data_range=data_range), rel=1e-6)
    expected_ssim = np.mean([structural_similarity(clean[k], adv[k], data_range=data_range, gaussian_weights=True,
                                                   sigma=1.5, use_sample_covariance=False) for k in range(3)])
    assert row["ssim"] == pytest.approx(expected_ssim, rel=1e-6)
    assert row["rmse"] == pytest.approx(np.sqrt(np.mean((clean - adv) ** 2)), rel=1e-6)


def test_inconsistent_datasets_and_thresholds_raise():
    # A patient's slices must agree on spacing and must not repeat; the threshold is a probability.
    spacing = {"image": np.zeros((2, 12, 12, 1), "float32"), "mask": np.zeros((2, 12, 12, 1), "float32"),
               "patient_id": np.array(["A", "A"]), "slice_index": np.array([0, 1]),
               "spacing": np.array([[3.0, 0.5, 0.5], [3.0, 0.5, 0.6]], "float32")}
    with pytest.raises(ValueError, match="disagree on spacing"):
        load_volumes(tf.data.Dataset.from_tensor_slices(spacing).batch(2))
    repeated = {**spacing, "slice_index": np.array([1, 1]), "spacing": np.array([[3.0, 0.5, 0.5]] * 2, "float32")}
    with pytest.raises(ValueError, match="appears twice"):
        load_volumes(tf.data.Dataset.from_tensor_slices(repeated).batch(2))
    volumes = load_volumes(_dataset())
    for threshold in (0.0, 1.0):
        with pytest.raises(ValueError, match="threshold"):
            evaluate_attack_stream([], volumes, threshold=threshold)


def test_threshold_and_constant_clean_volume():
    # Foreground is p > threshold; a constant clean volume has no intensity range, so PSNR and SSIM
    # fall back to a data range of 1.
    from skimage.metrics import peak_signal_noise_ratio

    volumes = load_volumes(_dataset(z=2, size=12))
    volumes["A"].image[:] = 0.0
    pred = np.where(volumes["A"].mask, 0.6, 0.4).astype("float32")
    adv = np.full((2, 12, 12), 0.25, "float32")
    stream = [{"patient_id": "A", "slice_index": k, "epsilon": 0.25, "prediction": pred[k][..., None],
               "adversarial": adv[k][..., None]} for k in range(2)]
    for threshold, dice in ((0.5, 1.0), (0.6, 0.0)):
        row = evaluate_attack_stream(stream, {"A": volumes["A"]}, threshold=threshold).iloc[0]
        assert row["dice"] == dice and row["fg_voxels_pred"] == (volumes["A"].mask.sum() if dice else 0)
    assert row["psnr"] == pytest.approx(peak_signal_noise_ratio(volumes["A"].image, adv, data_range=1.0))


def test_epsilon_as_percent_of_the_original_intensity_std():
    # Original intensities v, z-scored with statistics (μ, s) of a larger volume (so the evaluated x has
    # neither mean 0 nor std 1); ε in z units is 100 · ε · s / std(v) percent of the case's original std.
    rng = np.random.default_rng(3)
    mu, s = 450.0, 130.0
    v = rng.gamma(4.0, 120.0, (3, 12, 12))
    x = ((v - mu) / s).astype("float32")
    rows = {"image": x[..., None], "mask": (v > 500)[..., None].astype("float32"), "patient_id": np.array(["A"] * 3),
            "slice_index": np.arange(3), "spacing": np.array([[3.0, 0.5, 0.5]] * 3, "float32")}
    volumes = load_volumes(tf.data.Dataset.from_tensor_slices(rows).batch(2))
    stream = [{"patient_id": "A", "slice_index": k, "epsilon": eps, "prediction": np.zeros((12, 12, 1), "float32")}
              for eps in (0.0, 0.1, 0.5) for k in range(3)]
    df = evaluate_attack_stream(stream, volumes)
    assert abs(np.std(x) - 1) > 0.05  # the premise: the evaluated volume is not unit-std
    expected = [100 * eps * s / np.std(v) for eps in (0.0, 0.1, 0.5)]
    np.testing.assert_allclose(df["epsilon_pct_std"], expected, rtol=1e-6)
    assert np.isnan(epsilon_pct_std(0.1, np.zeros((2, 4, 4))))
