"""Tests for tfrobseg.attacks: FGSM (analytic reference), sweep, i-FGSM, ti-FGSM, PGD, sign noise."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import batch_norm_net

from tfrobseg.attacks import (
    background_target,
    fgsm,
    fgsm_sweep,
    foreground_target,
    gradient_sign,
    ifgsm,
    make_target,
    pgd,
    predict,
    resolve_loss,
    shifted_target,
    sign_noise,
    targeted_ifgsm,
)

SIZE = 32
GRID = [0.0, 0.1, 0.25, 0.5, 1.0]


def tiny_net(seed: int = 0, size: int = SIZE) -> keras.Model:
    """Two 3×3 convolutions and a sigmoid head: enough to have a non-trivial input gradient."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, 1))
    h = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(inp)
    h = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(h)
    out = keras.layers.Conv2D(1, 1, activation="sigmoid", dtype="float32")(h)
    return keras.Model(inp, out)


def reference_sign(model, x, y, loss) -> np.ndarray:
    """sign(∇ₓ loss(y, model(x))) by an eager tape in inference mode, outside tfrobseg's cache."""
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = tf.reduce_sum(loss(tf.constant(y), model(x, training=False)))
    return np.sign(tape.gradient(value, x).numpy())


def disks(n: int, seed: int, size: int = SIZE):
    """Noisy bright disks at random places (image) and the disk (mask)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    cy, cx = rng.uniform(9, size - 9, (2, n))
    r = rng.uniform(4, 7, n)
    mask = ((yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2 <= r[:, None, None] ** 2)
    image = mask * 2.0 - 1.0 + rng.normal(0, 0.5, mask.shape)
    return image[..., None].astype(np.float32), mask[..., None].astype(np.float32)


def soft_dice_loss(y_true, y_pred):
    """1 − soft Dice per sample, mean over the batch (Liu et al. eq. 5 with γ = 1)."""
    inter = tf.reduce_sum(y_true * y_pred, axis=[1, 2, 3])
    total = tf.reduce_sum(y_true, axis=[1, 2, 3]) + tf.reduce_sum(y_pred, axis=[1, 2, 3])
    return tf.reduce_mean(1.0 - (2.0 * inter + 1.0) / (total + 1.0))


def bce_np(y, p):
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))))


def dice_np(a, b):
    a, b = a > 0.5, b > 0.5
    return 2 * np.logical_and(a, b).sum() / max(a.sum() + b.sum(), 1)


@pytest.fixture(scope="module")
def net():
    return tiny_net()


@pytest.fixture(scope="module")
def batch():
    return disks(3, seed=1)


@pytest.fixture(scope="module")
def trained():
    """A tiny net trained to segment the disks (a few seconds on CPU)."""
    model = tiny_net(seed=3)
    x, y = disks(96, seed=2)
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="binary_crossentropy")
    model.fit(x, y, batch_size=32, epochs=25, verbose=0)
    return model


# --- FGSM against the closed form ------------------------------------------------------------

def one_by_one_sigmoid(w: float, b: float) -> keras.Model:
    inp = keras.Input((SIZE, SIZE, 1))
    conv = keras.layers.Conv2D(1, 1, activation="sigmoid")
    model = keras.Model(inp, conv(inp))
    conv.set_weights([np.full((1, 1, 1, 1), w, np.float32), np.full((1,), b, np.float32)])
    return model


@pytest.mark.parametrize("w", [1.7, -0.8])
def test_fgsm_equals_analytic_sign_on_1x1_sigmoid_model(w):
    # p = σ(w·x + b) per pixel, mean BCE over N pixels: ∂L/∂x = (p − y)·w / N, so the FGSM step is
    # ε·sign((p − y)·w), computed here in NumPy independently of TensorFlow's autodiff.
    b = 0.3
    model = one_by_one_sigmoid(w, b)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, SIZE, SIZE, 1)).astype(np.float32)
    y = (rng.random(x.shape) < 0.4).astype(np.float32)
    p = 1 / (1 + np.exp(-(w * x + b)))
    expected_sign = np.sign((p - y) * w)
    adv = fgsm(model, x, y, 0.2).numpy()
    np.testing.assert_allclose(adv - x, 0.2 * expected_sign, atol=1e-6)

    # clip bounds the adversarial image.
    adv = fgsm(model, x, y, 0.2, clip=(-1.0, 1.0)).numpy()
    np.testing.assert_allclose(adv, np.clip(x + 0.2 * expected_sign, -1, 1), atol=1e-6)

    # ε as a fraction of each image's intensity range / maximum magnitude.
    for relative_to, scale in (("range", x.max((1, 2, 3)) - x.min((1, 2, 3))), ("max", np.abs(x).max((1, 2, 3)))):
        adv = fgsm(model, x, y, 0.05, relative_to=relative_to).numpy()
        np.testing.assert_allclose(adv - x, 0.05 * scale[:, None, None, None] * expected_sign, atol=1e-5)


# --- sweep and bounds ------------------------------------------------------------------------

@pytest.mark.parametrize("with_batch_norm", [False, True])
def test_fgsm_sweep_equals_fgsm_per_epsilon(net, batch, with_batch_norm):
    x, y = batch
    if with_batch_norm:
        net = batch_norm_net(SIZE)
        adv = fgsm(net, x, y, 1.0).numpy()
        # The premise: training mode would give other predictions on this model.
        assert np.abs(net(adv, training=True).numpy() - net(adv, training=False).numpy()).max() > 0.05
    preds, images = fgsm_sweep(net, x, y, GRID, return_images=True)
    assert preds.shape == (len(GRID), 3, SIZE, SIZE, 1) and images.shape == (len(GRID), 3, SIZE, SIZE, 1)
    for e, eps in enumerate(GRID):
        adv = fgsm(net, x, y, eps).numpy()
        np.testing.assert_array_equal(images[e].numpy(), adv)
        np.testing.assert_allclose(preds[e].numpy(), net(adv, training=False).numpy(), atol=1e-5)
    # Bounded forward calls give the same result: 2 ε per call (6 images), 3 ε per call with the
    # last chunk padded (9 images), one ε per call (fewer images than a batch).
    for forward_batch in (6, 9, 1):
        chunked = fgsm_sweep(net, x, y, GRID, forward_batch=forward_batch, return_images=True)
        np.testing.assert_allclose(chunked[0].numpy(), preds.numpy(), atol=1e-6)
        np.testing.assert_array_equal(chunked[1].numpy(), images.numpy())
    with pytest.raises(ValueError, match="forward_batch"):
        fgsm_sweep(net, x, y, GRID, forward_batch=0)
    # Without return_images only the predictions come back.
    np.testing.assert_allclose(fgsm_sweep(net, x, y, GRID).numpy(), preds.numpy(), atol=1e-6)


class BatchProbe(keras.layers.Layer):
    """Identity layer noting the (static) batch size of every traced call: the forward calls' size."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.sizes = []

    def call(self, x):
        if x.shape[0] is not None:  # None: the functional model being built
            self.sizes.append(int(x.shape[0]))
        return x


@pytest.mark.parametrize("epsilons, forward_batch, per_call", [
    (GRID, None, 12),  # the 4 attacked ε in one call; ε = 0 reuses the gradient's forward pass
    (GRID, 9, 9),  # 3 ε per call, the last chunk padded to the same shape: one trace
    (GRID, 1, 3),  # a bound below one batch still sends one ε at a time
    ([0.0, 0.5], None, 3),
])
def test_sweep_forward_calls_are_bounded_and_traced_once(batch, epsilons, forward_batch, per_call):
    x, y = batch
    keras.utils.set_random_seed(0)
    probe = BatchProbe()
    inp = keras.Input((SIZE, SIZE, 1))
    model = keras.Model(inp, keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")(probe(inp)))
    fgsm_sweep(model, x, y, epsilons, forward_batch=forward_batch, jit_compile=False)
    assert probe.sizes == [3, per_call]  # one trace of the gradient (batch of 3), one of the forward pass


def test_sweep_with_relative_epsilon_equals_fgsm(net, batch):
    x, y = batch
    for relative_to in ("range", "max"):
        _, images = fgsm_sweep(net, x, y, GRID, relative_to=relative_to, forward_batch=9, return_images=True)
        for e, eps in enumerate(GRID):
            np.testing.assert_allclose(images[e].numpy(), fgsm(net, x, y, eps, relative_to=relative_to).numpy(),
                                       atol=1e-5)


def test_gradient_and_clean_prediction_are_in_inference_mode(batch):
    x, y = batch
    model = batch_norm_net(SIZE)
    sign, clean = gradient_sign(model, x, y, loss="bce", jit_compile=False)
    np.testing.assert_allclose(clean.numpy(), model(x, training=False).numpy(), atol=1e-6)
    np.testing.assert_array_equal(sign.numpy(), reference_sign(model, x, y, resolve_loss("bce")))
    np.testing.assert_allclose(predict(model, x).numpy(), model(x, training=False).numpy(), atol=1e-6)


def test_each_attack_loss_gets_its_own_gradient(net, batch):
    # One compiled gradient is cached per (model, loss): asking for another loss on the same model
    # must give that loss's gradient, never the one compiled first.
    x, y = batch
    signs = {}
    for loss in ("bce", "dice", "tversky", "bce", keras.losses.BinaryCrossentropy(), resolve_loss("dice")):
        name = loss if isinstance(loss, str) else type(loss).__name__
        sign = gradient_sign(net, x, y, loss=loss, jit_compile=False)[0].numpy()
        np.testing.assert_array_equal(sign, reference_sign(net, x, y, resolve_loss(loss)), err_msg=name)
        signs[name] = sign
    # The premise: the losses do give different directions on this model.
    assert np.mean(signs["bce"] != signs["dice"]) > 0.02 and np.any(signs["dice"] != signs["tversky"])
    np.testing.assert_array_equal(signs["BinaryCrossentropy"], signs["bce"])
    # FGSM with one loss, then another, moves the pixels the other way where their signs differ.
    a = fgsm(net, x, y, 0.1, loss="bce").numpy()
    b = fgsm(net, x, y, 0.1, loss="dice").numpy()
    np.testing.assert_allclose(b - x, 0.1 * signs["dice"], atol=1e-6)
    assert np.mean(a != b) > 0.02


def test_iterative_default_steps_and_alpha(net, batch):
    # i-FGSM: 10 steps of α = ε / steps (Liu et al.: α·N = ε). PGD: 10 steps of α = 2.5·ε / steps.
    x, y = batch
    eps = 0.3
    run = dict(jit_compile=False)
    default = ifgsm(net, x, y, eps, **run).numpy()
    np.testing.assert_array_equal(default, ifgsm(net, x, y, eps, steps=10, alpha=eps / 10, **run).numpy())
    assert not np.array_equal(default, ifgsm(net, x, y, eps, steps=10, alpha=2 * eps / 10, **run).numpy())
    three = ifgsm(net, x, y, eps, steps=3, **run).numpy()
    np.testing.assert_array_equal(three, ifgsm(net, x, y, eps, steps=3, alpha=eps / 3, **run).numpy())
    assert not np.array_equal(three, ifgsm(net, x, y, eps, steps=3, alpha=2 * eps / 3, **run).numpy())
    # Against an eager re-implementation of the iteration x_{k+1} = Π(x_k + α·sign(∇L)).
    expected = x.copy()
    for _ in range(3):
        expected = np.clip(expected + eps / 3 * reference_sign(net, expected, y, resolve_loss("bce")), x - eps, x + eps)
    assert np.mean(np.isclose(three, expected, atol=1e-6)) > 0.995
    pgd_default = pgd(net, x, y, eps, seed=2, **run).numpy()
    np.testing.assert_array_equal(pgd_default, pgd(net, x, y, eps, steps=10, alpha=2.5 * eps / 10, seed=2, **run).numpy())
    assert not np.array_equal(pgd_default, pgd(net, x, y, eps, steps=10, alpha=eps / 10, seed=2, **run).numpy())


def all_attacks(model, x, y, eps, clip=None):
    return {
        "fgsm": fgsm(model, x, y, eps, clip=clip),
        "sweep": fgsm_sweep(model, x, y, [eps], clip=clip, return_images=True)[1][0],
        "ifgsm": ifgsm(model, x, y, eps, steps=3, clip=clip),
        "ifgsm_big_alpha": ifgsm(model, x, y, eps, steps=3, alpha=eps, clip=clip),
        "targeted": targeted_ifgsm(model, x, foreground_target(y), eps, steps=3, loss=soft_dice_loss, clip=clip),
        "pgd": pgd(model, x, y, eps, steps=3, seed=1, clip=clip),
        "noise": sign_noise(x, eps, seed=1, clip=clip),
    }


def test_epsilon_zero_returns_the_input(net, batch):
    x, y = batch
    for name, adv in all_attacks(net, x, y, 0.0).items():
        np.testing.assert_array_equal(adv.numpy(), x, err_msg=name)


@pytest.mark.parametrize("clip", [None, (-1.5, 1.5)])
def test_every_attack_stays_in_the_linf_ball(net, batch, clip):
    x, y = batch
    if clip is not None:
        x = np.clip(x, *clip)
    for name, adv in all_attacks(net, x, y, 0.3, clip=clip).items():
        adv = adv.numpy()
        assert np.abs(adv - x).max() <= 0.3 + 1e-6, name
        assert np.abs(adv - x).max() > 0.29, name  # and actually perturbs
        if clip is not None:
            assert adv.min() >= clip[0] and adv.max() <= clip[1], name


def test_ifgsm_one_step_alpha_eps_equals_fgsm(net, batch):
    x, y = batch
    np.testing.assert_array_equal(ifgsm(net, x, y, 0.4, steps=1, alpha=0.4).numpy(), fgsm(net, x, y, 0.4).numpy())
    # The default α is ε / steps (α·N = ε): one step is FGSM as well.
    np.testing.assert_array_equal(ifgsm(net, x, y, 0.4, steps=1).numpy(), fgsm(net, x, y, 0.4).numpy())


def test_pgd_seeding_and_without_random_start_is_ifgsm(net, batch):
    x, y = batch
    a, b = pgd(net, x, y, 0.3, steps=2, seed=5), pgd(net, x, y, 0.3, steps=2, seed=5)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.array_equal(a.numpy(), pgd(net, x, y, 0.3, steps=2, seed=6).numpy())
    np.testing.assert_array_equal(
        pgd(net, x, y, 0.3, steps=2, alpha=0.1, random_start=False).numpy(),
        ifgsm(net, x, y, 0.3, steps=2, alpha=0.1).numpy(),
    )


def test_sign_noise_is_seeded_plus_minus_eps(batch):
    x, _ = batch
    noise = sign_noise(x, 0.5, seed=3).numpy() - x
    np.testing.assert_allclose(np.abs(noise), 0.5, atol=1e-6)
    assert 0.45 < (noise > 0).mean() < 0.55
    np.testing.assert_array_equal(sign_noise(x, 0.5, seed=3).numpy() - x, noise)
    assert not np.array_equal(sign_noise(x, 0.5, seed=4).numpy() - x, noise)


# --- effect on a trained model ---------------------------------------------------------------

def test_attacks_raise_the_loss_of_a_trained_model(trained):
    x, y = disks(8, seed=9)
    clean = bce_np(y, predict(trained, x).numpy())
    noisy = bce_np(y, predict(trained, sign_noise(x, 0.3, seed=0)).numpy())
    adv_fgsm = bce_np(y, predict(trained, fgsm(trained, x, y, 0.3)).numpy())
    adv_ifgsm = bce_np(y, predict(trained, ifgsm(trained, x, y, 0.3, steps=5)).numpy())
    adv_pgd = bce_np(y, predict(trained, pgd(trained, x, y, 0.3, steps=5)).numpy())
    assert clean < 0.2
    # The gradient attacks beat random noise of the same L∞ size, which beats nothing.
    for adv in (adv_fgsm, adv_ifgsm, adv_pgd):
        assert adv > 2 * clean and adv > noisy


def test_targeted_attack_raises_dice_to_the_target(trained):
    x, y = disks(8, seed=9)
    target = shifted_target(y, (0, 6))
    clean = dice_np(predict(trained, x).numpy(), target.numpy())
    adv = targeted_ifgsm(trained, x, target, 1.0, steps=10, loss=soft_dice_loss)
    attacked = dice_np(predict(trained, adv).numpy(), target.numpy())
    assert attacked > clean + 0.2
    # An untargeted attack of the same size does not do that.
    assert dice_np(predict(trained, fgsm(trained, x, y, 1.0)).numpy(), target.numpy()) < clean


# --- compilation, precision, losses ------------------------------------------------------------

def test_jit_and_non_jit_agree(net, batch):
    x, y = batch
    sign_jit, pred_jit = gradient_sign(net, x, y, jit_compile=True)
    sign_graph, pred_graph = gradient_sign(net, x, y, jit_compile=False)
    np.testing.assert_allclose(pred_jit.numpy(), pred_graph.numpy(), atol=1e-5)
    # Rounding differences may flip the sign only where the gradient is ~0.
    assert np.mean(sign_jit.numpy() == sign_graph.numpy()) > 0.999
    a = fgsm_sweep(net, x, y, GRID, jit_compile=True).numpy()
    b = fgsm_sweep(net, x, y, GRID, jit_compile=False).numpy()
    np.testing.assert_allclose(a, b, atol=1e-3)


def study_like_model() -> keras.Model:
    try:
        from tfrobseg.models import build_model
    except ImportError:
        return tiny_net(seed=7)
    return build_model("unet", (SIZE, SIZE, 1), filters=(4, 8, 16))


@pytest.mark.slow
def test_mixed_float16_attack_agrees_with_float32():
    # A briefly trained U-Net: attacks run on trained models, whose input gradients are structured;
    # at random init more pixels have near-zero gradients whose sign is float16 rounding noise.
    keras.utils.set_random_seed(7)
    model32 = study_like_model()
    model32.compile(optimizer=keras.optimizers.Adam(0.003), loss="binary_crossentropy")
    model32.fit(*disks(64, seed=2), batch_size=16, epochs=8, verbose=0)
    x, y = disks(4, seed=1)
    sign32, _ = gradient_sign(model32, x, y)
    policy = keras.mixed_precision.global_policy()
    try:
        keras.mixed_precision.set_global_policy("mixed_float16")
        model16 = study_like_model()
        model16.set_weights(model32.get_weights())
        assert any(layer.compute_dtype == "float16" for layer in model16.layers)
        sign16, pred16 = gradient_sign(model16, x, y)
    finally:
        keras.mixed_precision.set_global_policy(policy)
    assert pred16.dtype == tf.float32
    assert np.mean(sign16.numpy() == sign32.numpy()) >= 0.99
    # Loss scaling keeps float16 gradients from flushing to zero (a zero sign is no perturbation).
    assert np.mean(sign16.numpy() == 0) <= np.mean(sign32.numpy() == 0) + 0.001


def test_loss_resolution(net, batch):
    x, y = batch
    bce = keras.losses.BinaryCrossentropy()
    assert resolve_loss(bce) is bce
    # A Keras loss object, a plain callable and the name give the same BCE attack.
    by_name = fgsm(net, x, y, 0.1, loss="bce").numpy()
    np.testing.assert_array_equal(fgsm(net, x, y, 0.1, loss=bce).numpy(), by_name)
    np.testing.assert_array_equal(
        fgsm(net, x, y, 0.1, loss=lambda t, p: keras.losses.binary_crossentropy(t, p)).numpy(), by_name
    )
    with pytest.raises(ValueError):
        resolve_loss(3)
    with pytest.raises((ValueError, KeyError)):
        resolve_loss("no_such_loss")


def test_attack_loss_by_name_from_tfrobseg_losses(net, batch):
    x, y = batch
    for name in ("dice", "tversky", "bce_dice"):
        adv = fgsm(net, x, y, 0.1, loss=name).numpy()
        assert np.abs(adv - x).max() == pytest.approx(0.1, abs=1e-6)


# --- targets and validation ------------------------------------------------------------------

def test_target_helpers_match_numpy():
    mask = np.zeros((1, 6, 7, 1), np.float32)
    mask[0, 1:3, 2:5] = 1
    expected = np.zeros_like(mask)
    expected[0, 3:5, 1:4] = 1  # moved 2 down and 1 left, nothing wraps
    np.testing.assert_array_equal(shifted_target(mask, (2, -1)).numpy(), expected)
    right = np.zeros_like(mask)
    right[0, 1:3, 5:7] = 1  # 3 to the right: the rightmost column falls off the border
    np.testing.assert_array_equal(shifted_target(mask, 3).numpy(), right)
    np.testing.assert_array_equal(make_target(mask, 3).numpy(), right)
    np.testing.assert_array_equal(make_target(mask, "background").numpy(), background_target(mask).numpy())
    np.testing.assert_array_equal(make_target(mask, "foreground").numpy(), np.ones_like(mask))
    np.testing.assert_array_equal(make_target(mask, lambda m: 1 - m).numpy(), 1 - mask)
    with pytest.raises(ValueError):
        make_target(mask, "everything")
    with pytest.raises(ValueError):
        shifted_target(mask[0], 1)


def test_bad_arguments_raise_value_error(net, batch):
    x, y = batch
    for call in (
        lambda: fgsm(net, x, y, -0.1),
        lambda: fgsm(net, x, y, float("nan")),
        lambda: fgsm(net, x, y, 0.1, clip=(1.0, -1.0)),
        lambda: fgsm(net, x, y, 0.1, relative_to="median"),
        lambda: fgsm_sweep(net, x, y, []),
        lambda: fgsm_sweep(net, x, y, [0.1], forward_batch=0),
        lambda: ifgsm(net, x, y, 0.1, steps=0),
        lambda: pgd(net, x, y, 0.1, seed=(1, 2, 3)),
        lambda: gradient_sign(net, x, y, loss_scale=0.0),
    ):
        with pytest.raises(ValueError):
            call()


# --- every architecture ----------------------------------------------------------------------

def model_names():
    try:
        from tfrobseg.models import MODEL_NAMES
    except ImportError:
        return []
    return list(MODEL_NAMES)


@pytest.mark.parametrize("name", model_names() or [pytest.param("missing", marks=pytest.mark.skip("tfrobseg.models not there yet"))])
def test_every_model_can_be_attacked(name, batch):
    from tfrobseg.models import build_model

    x, y = batch
    keras.utils.set_random_seed(0)
    model = build_model(name, (SIZE, SIZE, 1), filters=(4, 8, 16))
    # One XLA-compiled gradient per architecture (the sweep adds only forward passes).
    adv = fgsm(model, x, y, 0.5).numpy()
    assert np.abs(adv - x).max() == pytest.approx(0.5, abs=1e-6)
    # The gradient reaches the input through every architecture (a zero gradient leaves x as is).
    assert np.mean(adv != x) > 0.5
    assert np.all(np.isfinite(predict(model, adv).numpy()))
