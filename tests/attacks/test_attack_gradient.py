"""The input-gradient sign, its compiled cache, precision and loss resolution (tfrobseg.attacks.gradient)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from attack_cases import GRID, SIZE, disk_batch, disks, reference_sign, tiny_net
from conftest import batch_norm_net

from tfrobseg.attacks import fgsm, fgsm_sweep, gradient_sign, predict, resolve_loss

net = pytest.fixture(tiny_net, scope="module", name="net")
batch = pytest.fixture(disk_batch, scope="module", name="batch")


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


@pytest.mark.parametrize("loss", ["dice", "tversky", "bce_dice"])
def test_an_image_is_attacked_on_its_own_loss_whatever_its_batch(net, batch, loss):
    """The Dice and Tversky losses pool their counts over the batch; the attack still differentiates each
    image's own loss, so its perturbation is the same alone, in a batch, or beside zero padding."""
    x, y = batch
    together = gradient_sign(net, x, y, loss=loss, jit_compile=False)[0].numpy()
    alone = np.concatenate([gradient_sign(net, x[i:i + 1], y[i:i + 1], loss=loss, jit_compile=False)[0].numpy()
                            for i in range(len(x))])
    padded = gradient_sign(net, np.concatenate([x, np.zeros_like(x[:1])]), np.concatenate([y, np.zeros_like(y[:1])]),
                           loss=loss, jit_compile=False)[0].numpy()[:len(x)]
    np.testing.assert_array_equal(together, alone)
    np.testing.assert_array_equal(padded, alone)
    if loss == "bce_dice":
        return  # its BCE term dominates the sign on this net: the premise below holds for the pure overlap losses
    # The premise: the pooled batch loss would give another direction.
    pooled = resolve_loss(loss)
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        value = tf.reduce_sum(pooled(tf.constant(y), net(xt, training=False)))
    assert np.any(np.sign(tape.gradient(value, xt).numpy()) != alone)


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


def model_names(spatial_rank):
    """The registered models of that input rank; the EfficientNet ones are left out here (an XLA-compiled
    gradient through a B0 costs ~25 s; tests/models/test_model_zoo.py checks their gradients)."""
    from tfrobseg.models import model_names as registered

    return [name for name in registered(spatial_rank=spatial_rank) if "efficientnet" not in name]


@pytest.mark.parametrize("name", model_names(2))
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


@pytest.mark.parametrize("name", model_names(3))
def test_every_3d_model_can_be_attacked_on_a_volume(name):
    from tfrobseg.models import build_model

    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(1, 8, 16, 16, 1)), tf.float32)
    y = tf.constant((rng.uniform(size=(1, 8, 16, 16, 1)) > 0.7).astype(np.float32))
    keras.utils.set_random_seed(0)
    model = build_model(name, (None, None, None, 1), filters=(4, 8, 16))
    adv = fgsm(model, x, y, 0.5).numpy()
    assert np.abs(adv - x.numpy()).max() == pytest.approx(0.5, abs=1e-6) and np.mean(adv != x.numpy()) > 0.5
