"""The noise controls (tfrobseg.attacks.noise): sign noise, and Gaussian and Rician noise of a given RMS."""

import math

import numpy as np
import pytest
import tensorflow as tf
from attack_cases import disk_batch, disks, tiny_net
from scipy.optimize import brentq

from tfrobseg.attacks import attack_dataset, gaussian_noise, rician_noise, sign_noise
from tfrobseg.attacks.noise import gaussian_perturbation, rician_perturbation

batch = pytest.fixture(disk_batch, scope="module", name="batch")
CONTROLS = {"gaussian": (gaussian_noise, gaussian_perturbation), "rician": (rician_noise, rician_perturbation)}


def rms_np(delta: np.ndarray) -> np.ndarray:
    return np.sqrt(np.mean(delta.astype(np.float64) ** 2, axis=(1, 2, 3)))


def normals_np(x: np.ndarray, seed) -> np.ndarray:
    """The documented draw: ``stateless_normal([2, *x.shape], seed)``, as float64."""
    pair = (seed, 0) if isinstance(seed, int) else seed
    return tf.random.stateless_normal([2, *x.shape], seed=pair).numpy().astype(np.float64)


def delta_np(kind: str, x: np.ndarray, eps: np.ndarray, sigma: np.ndarray, seed) -> np.ndarray:
    """δ of the control in NumPy for a fixed per-image σ: Gaussian clip(σ n₁), Rician clip(|m + σ(n₁ + i n₂)| − m)."""
    n = normals_np(x, seed)
    s, e = sigma[:, None, None, None], eps[:, None, None, None]
    if kind == "gaussian":
        return np.clip(s * n[0], -e, e)
    m = x.astype(np.float64) - x.min(axis=(1, 2, 3), keepdims=True)
    return np.clip(np.hypot(m + s * n[0], s * n[1]) - m, -e, e)


def test_sign_noise_is_seeded_plus_minus_eps(batch):
    x, _ = batch
    noise = sign_noise(x, 0.5, seed=3).numpy() - x
    np.testing.assert_allclose(np.abs(noise), 0.5, atol=1e-6)
    assert 0.45 < (noise > 0).mean() < 0.55
    np.testing.assert_array_equal(sign_noise(x, 0.5, seed=3).numpy() - x, noise)
    assert not np.array_equal(sign_noise(x, 0.5, seed=4).numpy() - x, noise)


@pytest.mark.parametrize("kind", CONTROLS)
def test_fixed_sigma_draw_matches_numpy(batch, kind):
    # The formula for a given σ per image (including 0 and the clipping of large values), against NumPy.
    x, _ = batch
    sigma = np.array([0.0, 0.2, 1.5])
    delta = CONTROLS[kind][1](x, 0.4, sigma=sigma, seed=(7, 2)).numpy()
    expected = delta_np(kind, x, np.full(3, np.float32(0.4), np.float64), sigma, (7, 2))
    np.testing.assert_allclose(delta, expected, atol=1e-7, rtol=1e-6)
    assert np.abs(delta[2]).max() == np.float32(0.4)  # the premise: the box is active


@pytest.mark.parametrize("kind", CONTROLS)
@pytest.mark.parametrize("relative_to", [None, "range"])
def test_rms_is_matched_exactly_inside_the_box(batch, kind, relative_to):
    x, _ = batch
    eps = 0.3 if relative_to is None else 0.08
    radius = np.float32(eps) * ((x.max(axis=(1, 2, 3)) - x.min(axis=(1, 2, 3))) if relative_to else np.ones(3, np.float32))
    rms = np.array([0.0, 0.3, 0.97]) * radius.astype(np.float64)
    delta = CONTROLS[kind][0](x, eps, rms=rms, seed=1, relative_to=relative_to).numpy() - x
    np.testing.assert_allclose(rms_np(delta), rms, rtol=1e-5)
    assert np.all(np.abs(delta).max(axis=(1, 2, 3)) <= radius * (1 + 1e-6))
    # The float32 δ itself lies in the box exactly, at the largest σ too.
    exact = CONTROLS[kind][1](x, eps, sigma=[1.0, 50.0, math.inf], seed=1, relative_to=relative_to).numpy()
    assert np.all(np.abs(exact).max(axis=(1, 2, 3)) <= radius)
    np.testing.assert_array_equal(np.abs(exact).max(axis=(1, 2, 3))[1:], radius[1:])


@pytest.mark.parametrize("kind", CONTROLS)
def test_eps_per_image(batch, kind):
    # ε may be given per image (the runner's stacked batches): each image gets its own box and RMS.
    x, _ = batch
    eps, rms = np.array([0.1, 0.3, 0.5], np.float32), np.array([0.05, 0.3, 0.2])
    delta = CONTROLS[kind][0](x, eps, rms=rms, seed=6).numpy() - x
    np.testing.assert_allclose(rms_np(delta), rms, rtol=1e-5)
    assert np.all(np.abs(delta).max(axis=(1, 2, 3)) <= eps * (1 + 1e-6))
    with pytest.raises(ValueError, match="rms must be <= eps"):
        CONTROLS[kind][0](x, eps, rms=[0.2, 0.2, 0.2], seed=6)


@pytest.mark.parametrize("kind", CONTROLS)
def test_sigma_found_is_the_root_of_the_rms_equation(batch, kind):
    # An independent root finder (SciPy's brentq) on the NumPy formula gives the same σ, hence the same noise.
    x, _ = batch
    eps, rms = 0.5, np.array([0.1, 0.25, 0.45])
    sigma = np.array([
        brentq(lambda s, i=i: rms_np(delta_np(kind, x, np.full(3, eps), np.full(3, s), 4))[i] - rms[i], 0.0, 1e3,
               xtol=1e-14) for i in range(3)])
    expected = x + delta_np(kind, x, np.full(3, eps), sigma, 4)
    np.testing.assert_allclose(CONTROLS[kind][0](x, eps, rms=rms, seed=4).numpy(), expected, atol=2e-6)


def test_rms_equal_to_eps_is_the_limit(batch):
    # σ → ∞: Gaussian noise becomes ε · sign(n) (sign noise), Rician noise +ε everywhere.
    x, _ = batch
    n = normals_np(x, 5)[0]
    gauss = gaussian_noise(x, 0.25, rms=0.25, seed=5).numpy() - x
    np.testing.assert_allclose(gauss, 0.25 * np.sign(n), atol=1e-6)
    np.testing.assert_allclose(rician_noise(x, 0.25, rms=0.25, seed=5).numpy() - x, 0.25, atol=1e-6)


@pytest.mark.parametrize("kind", CONTROLS)
def test_clip_and_seed(batch, kind):
    x, _ = batch
    noise = CONTROLS[kind][0]
    free = noise(x, 0.6, rms=0.4, seed=2).numpy()
    clipped = noise(x, 0.6, rms=0.4, seed=2, clip=(-1.0, 1.5)).numpy()
    assert free.min() < -1.0 and free.max() > 1.5  # the premise: the range binds
    np.testing.assert_array_equal(clipped, np.clip(free, -1.0, 1.5))
    np.testing.assert_array_equal(noise(x, 0.6, rms=0.4, seed=2).numpy(), free)
    assert not np.array_equal(noise(x, 0.6, rms=0.4, seed=3).numpy(), free)
    np.testing.assert_array_equal(noise(x, 0.0, rms=0.0, seed=2).numpy(), x)


@pytest.mark.parametrize("kwargs, match", [
    ({"rms": 0.31}, "rms must be <= eps"),
    ({"rms": -0.1}, "rms must be finite and >= 0"),
    ({"rms": [0.1, 0.1]}, r"shape \(3,\)"),
    ({"rms": 0.1, "relative_to": "median"}, "relative_to"),
    ({"rms": 0.1, "seed": "a"}, "seed"),
    ({"rms": 0.1, "clip": (1.0, 0.0)}, "clip"),
])
def test_bad_arguments(batch, kwargs, match):
    x, _ = batch
    for noise in (gaussian_noise, rician_noise):
        with pytest.raises(ValueError, match=match):
            noise(x, 0.3, **kwargs)
    with pytest.raises(ValueError, match="sigma must be >= 0"):
        rician_perturbation(x, 0.3, sigma=float("nan"))


def disk_dataset(n: int = 5) -> tf.data.Dataset:
    image, mask = disks(n, seed=2)
    return tf.data.Dataset.from_tensor_slices({"image": image, "mask": mask}).batch(3)


@pytest.fixture(scope="module")
def net():
    return tiny_net()


def perturbation_rms(results) -> np.ndarray:
    return np.array([rms_np((r["adversarial"] - r["image"])[None])[0] for r in results])


@pytest.mark.parametrize("kind", CONTROLS)
def test_runner_matches_the_reference_attack_rms(net, kind):
    eps, options = [0.0, 0.2, 0.5], {"steps": 2, "seed": 3}
    reference = list(attack_dataset(net, disk_dataset(), eps, attack="pgd", batch_size=2, return_images=True,
                                    **options))
    control = list(attack_dataset(net, disk_dataset(), eps, attack=kind, batch_size=2, return_images=True,
                                  match="pgd", **options))
    target = perturbation_rms(reference)
    assert target[1] > 0.05  # the premise: PGD moved the image
    np.testing.assert_allclose(perturbation_rms(control), target, rtol=1e-5, atol=1e-7)
    assert all(np.abs(c["adversarial"] - c["image"]).max() <= c["epsilon"] + 1e-6 for c in control)
    assert not np.allclose(control[1]["adversarial"], reference[1]["adversarial"])
    # Batch b draws the stream (seed, b): the first batch's noise at ε = 0.2 is the public function's.
    first = [reference[1], reference[4]]  # slices 0 and 1 (batch_size 2), ε = 0.2
    noisy = CONTROLS[kind][0](np.stack([r["image"] for r in first]), 0.2, rms=target[[1, 4]], seed=(3, 0))
    np.testing.assert_allclose(np.stack([control[1]["adversarial"], control[4]["adversarial"]]), noisy, atol=1e-6)


def test_runner_passes_the_valid_range_to_attack_and_noise(net):
    # The range is applied after the box, to the attack and to the noise: the noise's RMS is then at most the
    # attack's (the range cuts some of it), and every image stays inside the range.
    options = {"steps": 2, "seed": 3, "clip": (-1.5, 1.5)}
    reference = list(attack_dataset(net, disk_dataset(), [0.5], attack="pgd", return_images=True, **options))
    control = list(attack_dataset(net, disk_dataset(), [0.5], attack="rician", return_images=True, **options))
    assert all(-1.5 <= c["adversarial"].min() and c["adversarial"].max() <= 1.5 for c in control)
    assert np.all(perturbation_rms(control) <= perturbation_rms(reference) * (1 + 1e-5))


def test_runner_matched_to_fgsm_is_nearly_sign_noise(net):
    # FGSM's perturbation has RMS ε where no gradient component is 0, so its Gaussian control is then
    # ε · sign(n), sign noise in distribution; this ReLU net has a few zero components (RMS a little below ε).
    fgsm_rows = list(attack_dataset(net, disk_dataset(), [0.3], attack="fgsm", batch_size=2, return_images=True))
    results = list(attack_dataset(net, disk_dataset(), [0.3], attack="gaussian", match="fgsm", batch_size=2,
                                  return_images=True))
    np.testing.assert_allclose(perturbation_rms(results), perturbation_rms(fgsm_rows), rtol=1e-5)
    delta = np.stack([r["adversarial"] - r["image"] for r in results])
    assert np.isclose(np.abs(delta), 0.3, atol=1e-6).mean() > 0.99
    assert 0.4 < (delta > 0).mean() < 0.6


def test_runner_takes_a_measured_rms_above_eps_as_eps(net):
    # Far from 0 the float32 rounding of (x + ε s) − x puts FGSM's measured RMS above ε (here by 3e-4 relative);
    # the runner takes it as ε, the largest RMS in the box, instead of rejecting it.
    image, mask = disks(4, seed=2)
    dataset = tf.data.Dataset.from_tensor_slices({"image": image + 8.0, "mask": mask}).batch(2)
    fgsm_rows = list(attack_dataset(net, dataset, [5e-4], attack="fgsm", return_images=True))
    assert perturbation_rms(fgsm_rows).min() > 5e-4 * (1 + 1e-4)  # the premise
    results = list(attack_dataset(net, dataset, [5e-4], attack="rician", match="fgsm", return_images=True))
    delta = np.stack([r["adversarial"] - r["image"] for r in results])
    np.testing.assert_allclose(delta, 5e-4, rtol=2e-3)  # the limit rms = ε: +ε everywhere, up to rounding
