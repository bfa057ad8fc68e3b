"""FGSM against its closed form, and the ε sweep against FGSM (tfrobseg.attacks.fgsm)."""

import keras
import numpy as np
import pytest
from attack_cases import GRID, SIZE, disk_batch, tiny_net
from conftest import batch_norm_net

from tfrobseg.attacks import fgsm, fgsm_sweep

net = pytest.fixture(tiny_net, scope="module", name="net")
batch = pytest.fixture(disk_batch, scope="module", name="batch")


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
