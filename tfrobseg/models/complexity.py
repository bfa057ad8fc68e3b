"""Parameter and multiply-accumulate (MAC) counts of the built models, for the model table.

MACs are counted analytically, layer by layer, for the layers that multiply feature maps by weights:

* convolution (2D or 3D, dilated or not): ``prod(output spatial size) * prod(kernel) * C_in / groups * C_out``;
* depthwise convolution (EfficientNet): ``prod(output spatial size) * prod(kernel) * C_in * depth_multiplier``;
* transposed convolution: ``prod(input spatial size) * prod(kernel) * C_in * C_out`` (every input voxel scatters
  one kernel);
* ``RecurrentConv2D``: ``t + 1`` times its convolution (the feed-forward and ``t`` recurrent steps);
* ``Dense``: ``positions * C_in * units``;
* ``MultiHeadAttention`` over ``N`` tokens of width ``d`` with ``h`` heads of size ``k``: the Q, K, V and
  output projections ``4 * N * d * h * k`` plus the scores and the weighted sum ``2 * h * N^2 * k``;
* a nested model (the EfficientNet encoder): the sum over its layers.

Element-wise work (normalization, activations, pooling, additions, resampling, softmax) is not counted; it is
a few percent of the total for these networks. FLOPs are about ``2 * MACs``. Counts are per input image or
volume (batch size 1).
"""

from __future__ import annotations

import math

import keras

from tfrobseg.models.layers import RecurrentConv2D


def _shape(tensor) -> tuple:
    return tuple(tensor.shape)


_CONVS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
_TRANSPOSED = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)
_DEPTHWISE = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)


def layer_macs(layer: keras.layers.Layer) -> int:
    """MACs of one call of ``layer`` on one image (see module docstring); 0 for element-wise layers."""
    if isinstance(layer, keras.Model):
        return sum(layer_macs(inner) for inner in layer.layers)
    if isinstance(layer, RecurrentConv2D):
        _, h, w, c_in = _shape(layer.input)
        kh, kw = layer.conv.kernel_size
        return (layer.t + 1) * h * w * kh * kw * c_in * layer.filters
    if isinstance(layer, _TRANSPOSED):
        *spatial, c_in = _shape(layer.input)[1:]
        return math.prod(spatial) * math.prod(layer.kernel_size) * c_in * layer.filters
    if isinstance(layer, _DEPTHWISE):
        *spatial, _ = _shape(layer.output)[1:]
        c_in = _shape(layer.input)[-1]
        return math.prod(spatial) * math.prod(layer.kernel_size) * c_in * layer.depth_multiplier
    if isinstance(layer, _CONVS):
        *spatial, c_out = _shape(layer.output)[1:]
        c_in = _shape(layer.input)[-1]
        return math.prod(spatial) * math.prod(layer.kernel_size) * (c_in // layer.groups) * c_out
    if isinstance(layer, keras.layers.Dense):
        in_shape = _shape(layer.input)
        return math.prod(in_shape[1:-1]) * in_shape[-1] * layer.units
    if isinstance(layer, keras.layers.MultiHeadAttention):
        n_tokens, width = _shape(layer.input[0] if isinstance(layer.input, (list, tuple)) else layer.input)[1:]
        heads, key_dim = layer.num_heads, layer.key_dim
        return 4 * n_tokens * width * heads * key_dim + 2 * heads * n_tokens**2 * key_dim
    return 0


def count_macs(model: keras.Model) -> int:
    """Total MACs of one forward pass of a functional ``model`` on one image (or volume) of its input size."""
    if any(dim is None for dim in model.input_shape[1:-1]):
        raise ValueError(f"count_macs needs a static input size, model '{model.name}' has {model.input_shape}")
    return sum(layer_macs(layer) for layer in model.layers)
