"""Adaptive TverskyCE loss and its epoch-wise weighting callback (tfrobseg.losses.adaptive)."""

import keras
import numpy as np
import pytest
from loss_cases import tiny_model, toy_batch

from tfrobseg import losses as L


@pytest.mark.parametrize("jit_compile", [False, True])
def test_adaptive_tversky_ce_weights_follow_previous_epoch(jit_compile):
    image, mask, _ = toy_batch(n=8)
    loss = L.AdaptiveTverskyCELoss()
    model = tiny_model(32)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loss, jit_compile=jit_compile)
    history = model.fit(image, mask, batch_size=4, epochs=3, verbose=0, validation_data=(image[:4], mask[:4]),
                        callbacks=[L.AdaptiveTverskyCEWeighting()]).history
    for key in L.adaptive.LOG_KEYS:
        assert len(history[key]) == 3, key
    w, lt, lce = (np.array(history[k]) for k in ("w_tversky", "loss_tversky", "loss_ce"))
    assert w[0] == pytest.approx(0.5)
    np.testing.assert_allclose(np.array(history["w_ce"]), 1 - w, rtol=1e-6)
    # w_T(t) = L_T(t-1) / (L_T(t-1) + L_CE(t-1)), from the logged previous-epoch means.
    np.testing.assert_allclose(w[1:], lt[:-1] / (lt[:-1] + lce[:-1]), rtol=1e-5)
    assert abs(w[1] - 0.5) > 1e-3  # the two components diverge from the start
    # The compiled step really used the logged weights (train loss = weighted sum of the means).
    np.testing.assert_allclose(history["loss"], w * lt + (1 - w) * lce, rtol=1e-4)
    assert loss.get_tversky_weight() == pytest.approx(lt[-1] / (lt[-1] + lce[-1]), rel=1e-5)


def test_adaptive_callback_needs_the_adaptive_loss():
    model = tiny_model(16)
    model.compile(optimizer="adam", loss=L.get_loss("dice"))
    image, mask, _ = toy_batch(n=2, size=16)
    with pytest.raises(ValueError, match="AdaptiveTverskyCELoss"):
        model.fit(image, mask, epochs=1, verbose=0, callbacks=[L.AdaptiveTverskyCEWeighting()])
    with pytest.raises(ValueError, match="AdaptiveTverskyCELoss or None"):
        L.AdaptiveTverskyCEWeighting(loss=L.get_loss("dice"))
