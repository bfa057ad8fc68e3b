"""The distilled network at its training temperature (tfrobseg.defenses.views): the gradient-masking check."""

import keras
import numpy as np
import pytest
from defense_cases import B, W, batch, bn_net, pixel_net, sigmoid

from tfrobseg.defenses import (
    DEFENSE_NAMES,
    masking_views,
    resolve_defense,
    temperature_view,
)


def test_the_view_is_sigmoid_of_the_logits_over_t_with_the_same_weights():
    x, _ = batch()
    net = pixel_net()
    view = temperature_view(net, 100.0)
    np.testing.assert_allclose(view.predict(x, verbose=0), sigmoid((W * x + B) / 100.0), rtol=1e-6)
    net.get_layer("logits").bias.assign([0.6])  # the view shares the network's variables
    np.testing.assert_allclose(view.predict(x, verbose=0), sigmoid((W * x + 0.6) / 100.0), rtol=1e-6)
    # Thresholded at 0.5 the view's masks are the deployed network's.
    np.testing.assert_array_equal(view.predict(x, verbose=0) > 0.5, net.predict(x, verbose=0) > 0.5)


def test_a_softmax_head_is_viewed_through_a_softmax_at_t():
    x, _ = batch(2)
    inp = keras.Input(x.shape[1:])
    conv = keras.layers.Conv2D(3, 1, name="logits")
    net = keras.Model(inp, keras.layers.Softmax()(conv(inp)), name="three")
    kernel, bias = np.array([[[[1.0, -2.0, 0.5]]]], np.float32), np.array([0.1, 0.2, -0.3], np.float32)
    conv.set_weights([kernel, bias])
    e = np.exp((x * kernel[0, 0] + bias) / 20.0)
    np.testing.assert_allclose(temperature_view(net, 20).predict(x, verbose=0), e / e.sum(-1, keepdims=True),
                               rtol=1e-5)


def test_a_network_without_one_logits_layer_is_refused_in_one_line():
    inp = keras.Input((8, 8, 1))
    plain = keras.Model(inp, keras.layers.Conv2D(1, 1, activation="sigmoid")(inp), name="no_head")
    with pytest.raises(ValueError, match=r"^no_head: needs exactly one 'logits' layer \(its pre-activation output, "
                                         r"as tfrobseg.models builds it\), found 0$"):
        temperature_view(plain, 100.0)
    two = keras.Model(inp, [keras.layers.Conv2D(1, 1, name=f"logits_{i}")(inp) for i in (1, 2)], name="two")
    with pytest.raises(ValueError, match="^two: needs exactly one 'logits' layer .* found 2$"):
        temperature_view(two, 100.0)
    for bad in (0, -1.0, float("inf"), True, "100"):
        with pytest.raises(ValueError, match=r"^bn_net: temperature must be a finite number > 0"):
            temperature_view(bn_net(), bad)


def test_only_a_distilled_network_has_a_masking_view():
    net = bn_net()
    ((what, view),) = masking_views(net, resolve_defense("distillation", {"temperature": 20}))
    assert what == {"temperature": 20.0}
    x, _ = batch()
    np.testing.assert_allclose(view.predict(x, verbose=0), temperature_view(net, 20.0).predict(x, verbose=0))
    assert masking_views(net, None) == []
    assert all(masking_views(net, resolve_defense(name)) == [] for name in DEFENSE_NAMES if name != "distillation")
