"""SegPGD (tfrobseg.attacks.segpgd): λ(t), its weighted objective and two update steps against NumPy on a
closed-form model, its one-step relation to FGSM, seeding, the L∞ ball, the runner, and a trained model."""

import numpy as np
import pytest
import tensorflow as tf
from attack_cases import dice_np, disk_batch, disks, tiny_net, trained_net
from closed_form import (
    SIZE,
    bce_np,
    input_gradient_np,
    pair_model,
    predict_np,
    project_np,
    sample,
)
from test_attack_precision import global_policy

from tfrobseg.attacks import (
    ATTACKS,
    attack_dataset,
    cospgd,
    fgsm,
    fgsm_sweep,
    float32_copy,
    iterative,
    predict,
    segpgd,
)
from tfrobseg.attacks.gradient import objective_gradient, pixel_bce
from tfrobseg.attacks.iterative import restart_seed
from tfrobseg.attacks.segpgd import segpgd_lambdas, segpgd_objective

net = pytest.fixture(tiny_net, scope="module", name="net")
batch = pytest.fixture(disk_batch, scope="module", name="batch")
model = pytest.fixture(pair_model, scope="module", name="model")
RUN = {"jit_compile": False}

trained = pytest.fixture(trained_net, scope="module", name="trained")


def segpgd_weights_np(p: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    """1 − λ on the pixels whose thresholded prediction is right, λ on the others."""
    return np.where((p > 0.5) == (y > 0.5), 1 - lam, lam)


def segpgd_np(x: np.ndarray, y: np.ndarray, eps, steps: int, alpha, start: np.ndarray, lambdas=None) -> np.ndarray:
    """x_t = Π(x_{t−1} + α·sign(∇ L_t)), L_t = mean(w_t·BCE), w_t from λ(t) = (t − 1)/(2T), on the pair model."""
    x64 = x.astype(np.float64)
    adv = x64 + start
    for t in range(1, steps + 1):
        p = predict_np(adv)
        w = segpgd_weights_np(p, y, (t - 1) / (2 * steps) if lambdas is None else lambdas[t - 1])
        grad = input_gradient_np(w * (p - y) / (SIZE * SIZE))
        adv = project_np(adv + alpha * np.sign(grad), x64, eps)
    return adv


def test_lambda_schedule_by_hand():
    assert segpgd_lambdas(4) == [0.0, 0.125, 0.25, 0.375]
    assert segpgd_lambdas(1) == [0.0]
    assert segpgd_lambdas(20)[-1] == pytest.approx(19 / 40)


@pytest.mark.parametrize("lam", [0.0, 0.125, 0.4])
def test_objective_and_its_gradient_in_closed_form(model, lam):
    x, y = sample()
    grad, _, values = objective_gradient(model, x, y, segpgd_objective, param=lam, **RUN)
    p = predict_np(x)
    w = segpgd_weights_np(p, y, lam)
    assert 0.3 < np.mean((p > 0.5) == (y > 0.5)) < 0.7  # both pixel sets are there
    np.testing.assert_allclose(values, (w * bce_np(y, p)).mean(axis=(1, 2, 3)), rtol=1e-5)
    # The weights are constants: ∂/∂x mean(w·BCE) = w·(p − y)/(H·W) through the convolution.
    np.testing.assert_allclose(grad, input_gradient_np(w * (p - y) / (SIZE * SIZE)), rtol=1e-4, atol=1e-9)


def test_segpgd_passes_lambda_t_at_each_step(model, monkeypatch):
    seen = []

    def recording(*args, param, **kwargs):
        seen.append(float(param))
        return objective_gradient(*args, param=param, **kwargs)

    monkeypatch.setattr(iterative, "objective_gradient", recording)
    x, y = sample()
    segpgd(model, x, y, 0.3, steps=4, **RUN)
    assert seen == [0.0, 0.125, 0.25, 0.375]


@pytest.mark.parametrize("random_start", [False, True])
def test_two_steps_match_numpy(model, random_start):
    x, y = sample(1)
    eps = np.array([0.2, 0.5, 0.8], np.float32)  # one ε per image
    eps_b = eps[:, None, None, None]
    start = np.zeros_like(x)
    if random_start:  # the same stateless draw as the attack's start
        start = tf.random.stateless_uniform(x.shape, seed=restart_seed(7, 0), minval=-1.0, maxval=1.0).numpy() * eps_b
    adv = segpgd(model, x, y, eps, steps=2, seed=7, random_start=random_start, **RUN).numpy()
    expected = segpgd_np(x, y, eps_b, 2, 2.5 * eps_b / 2, start)
    np.testing.assert_allclose(adv, expected, atol=2e-6)
    # The premise: the schedule and the weights change the steps. λ(t) = t/(2T) (off by one) or
    # λ = ½ throughout (unweighted BCE) would give other images.
    for lambdas in ([0.25, 0.5], [0.5, 0.5]):
        assert not np.allclose(segpgd_np(x, y, eps_b, 2, 2.5 * eps_b / 2, start, lambdas), expected, atol=1e-3)


def test_one_step_is_fgsm_on_the_correct_pixels(model, net, batch):
    # One step with α = ε and no random start has λ(1) = 0: the FGSM step of BCE restricted to the
    # pixels the clean prediction gets right (weight 1), the wrong ones weighted 0.
    x, y = sample(2)
    one = segpgd(model, x, y, 0.3, steps=1, alpha=0.3, random_start=False, **RUN).numpy()
    p = predict_np(x)
    correct = (p > 0.5) == (y > 0.5)
    masked_sign = np.sign(input_gradient_np(correct * (p - y)))
    np.testing.assert_allclose(one, x + 0.3 * masked_sign, atol=1e-6)
    # Where every pixel is right (y = the clean prediction) that is FGSM with BCE itself.
    y_right = (p > 0.5).astype(np.float32)
    np.testing.assert_array_equal(segpgd(model, x, y_right, 0.3, steps=1, alpha=0.3, random_start=False, **RUN),
                                  fgsm(model, x, y_right, 0.3, **RUN))
    # And on a convolutional net, against an eager tape of the masked BCE (independent of tfrobseg).
    xb, yb = batch
    clean = net(xb, training=False).numpy()
    mask = tf.constant(((clean > 0.5) == (yb > 0.5)).astype(np.float32))
    xt = tf.constant(xb)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        value = tf.reduce_sum(tf.reduce_mean(mask * pixel_bce(tf.constant(yb), net(xt, training=False)), [1, 2, 3]))
    expected = xb + 0.3 * np.sign(tape.gradient(value, xt).numpy())
    got = segpgd(net, xb, yb, 0.3, steps=1, alpha=0.3, random_start=False, **RUN).numpy()
    assert np.mean(np.isclose(got, expected, atol=1e-6)) > 0.999
    assert mask.numpy().mean() < 1  # the premise: some pixels are wrong, so this is not plain FGSM
    assert not np.allclose(got, fgsm(net, xb, yb, 0.3, **RUN).numpy())


def test_seeding(net, batch):
    x, y = batch
    a = segpgd(net, x, y, 0.3, steps=2, seed=5, **RUN).numpy()
    np.testing.assert_array_equal(a, segpgd(net, x, y, 0.3, steps=2, seed=5, **RUN).numpy())
    assert not np.array_equal(a, segpgd(net, x, y, 0.3, steps=2, seed=6, **RUN).numpy())


@pytest.mark.parametrize("clip", [None, (-1.5, 1.5)])
def test_stays_in_the_linf_ball(net, batch, clip):
    x, y = batch
    if clip is not None:
        x = np.clip(x, *clip)
    eps = np.array([0.1, 0.3, 0.6], np.float32)
    for options in ({}, {"restarts": 2, "best_iterate": True}):
        adv = segpgd(net, x, y, eps, steps=3, clip=clip, **options, **RUN).numpy()
        dist = np.abs(adv - x).max(axis=(1, 2, 3))
        assert np.all(dist <= eps + 1e-6) and np.all(dist > eps - 0.01)
        if clip is not None:
            assert adv.min() >= clip[0] and adv.max() <= clip[1]


def test_selections_never_raise_the_dice(net, batch):
    x, y = batch

    def dice(adv):
        return np.array([dice_np(p, t) for p, t in zip(predict(net, adv).numpy(), y, strict=True)])

    last = dice(segpgd(net, x, y, 0.5, steps=3, seed=2, **RUN))
    assert np.all(dice(segpgd(net, x, y, 0.5, steps=3, seed=2, best_iterate=True, **RUN)) <= last)
    assert np.all(dice(segpgd(net, x, y, 0.5, steps=3, seed=2, restarts=3, **RUN)) <= last)


def test_runner_runs_segpgd_with_the_batch_seed(net, batch):
    x, y = batch
    ds = tf.data.Dataset.from_tensor_slices({"image": x, "mask": y})
    rows = list(attack_dataset(net, ds, [0.0, 0.3], attack="segpgd", batch_size=3, steps=2, seed=4,
                               return_images=True, **RUN))
    np.testing.assert_array_equal(np.stack([r["adversarial"] for r in rows if r["epsilon"] == 0]), x)
    expected = segpgd(net, x, y, 0.3, steps=2, seed=(4, 0), **RUN).numpy()
    np.testing.assert_allclose(np.stack([r["adversarial"] for r in rows if r["epsilon"] > 0]), expected, atol=1e-6)
    assert "loss" not in ATTACKS["segpgd"].options
    assert {"steps", "alpha", "step_factor", "random_start", "seed", "restarts", "best_iterate"} <= ATTACKS[
        "segpgd"].options
    with pytest.raises(ValueError, match="segpgd takes no loss"):
        segpgd(net, x, y, 0.3, loss="dice")



def test_segpgd_beats_fgsm_on_a_trained_model(trained):
    # Dice of the 8 slices pooled (one 3-D Dice of the stack), at every ε of a grid.
    x, y = disks(8, seed=9)
    grid = [0.1, 0.25, 0.5, 1.0]
    fgsm_preds = fgsm_sweep(trained, x, y, grid).numpy()
    seg_preds, _ = ATTACKS["segpgd"].run(trained, x, y, grid, 0)
    clean = dice_np(predict(trained, x).numpy(), y)
    assert clean > 0.9
    for k, eps in enumerate(grid):
        d_fgsm, d_seg = dice_np(fgsm_preds[k], y), dice_np(seg_preds[k].numpy(), y)
        print(f"eps={eps}: clean {clean:.3f}  FGSM {d_fgsm:.3f}  SegPGD {d_seg:.3f}")
        assert d_seg <= d_fgsm


def test_segpgd_and_cospgd_run_under_xla_and_mixed_precision(batch):
    # Through objective_gradient: XLA-compiled, float16 backward pass with the loss scale divided out.
    with global_policy("mixed_float16"):
        mixed = tiny_net()
    assert "float16" in {layer.compute_dtype for layer in mixed.layers}
    x, y = batch
    for attack in (segpgd, cospgd):
        adv16 = attack(mixed, x, y, 0.3, steps=2, seed=1).numpy()
        adv32 = attack(float32_copy(mixed), x, y, 0.3, steps=2, seed=1).numpy()
        assert np.all(np.isfinite(adv16)) and np.abs(adv16 - x).max() <= 0.3 + 1e-6
        agree = np.mean(np.isclose(adv16, adv32, atol=1e-6))
        print(f"{attack.__name__}: float16 and float32 attacks agree on {agree:.4f} of the pixels")
        assert agree > 0.9
