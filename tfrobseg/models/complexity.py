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

:func:`traced_macs` counts the same products from the ops of the traced TensorFlow graph instead: for any model
(one a user brings, whose layers this module does not know), and what TensorFlow really computes (a dilated
convolution runs on a padded space-to-batch copy, so the dilated 3D U-Net counts more there). The cost
estimate of a grid (:mod:`tfrobseg.experiment.cost`) uses it; the two agree for every other model of the zoo.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

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


#: Function-call ops whose bodies :func:`traced_macs` counts; control flow it cannot count (trip count, branch).
_CALLS = ("PartitionedCall", "StatefulPartitionedCall")
_CONTROL_FLOW = ("While", "StatelessWhile", "If", "StatelessIf", "Case", "StatelessCase")


def traced_macs(model: Any, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates of one forward pass of one sample (batch 1, ``training=False``) of a Keras model,
    counted from its traced TensorFlow graph.

    Counted ops (and the bodies of the function-call ops Keras or the model leaves in the graph):
    ``Conv2D`` / ``Conv3D``: output elements × kernel spatial size × input channels per group;
    ``DepthwiseConv2dNative``: output elements × kernel spatial size; their transposes
    ``Conv2DBackpropInput`` / ``Conv3DBackpropInputV2``: input elements × kernel spatial size × output channels;
    ``MatMul`` / ``BatchMatMulV2`` / ``BatchMatMulV3``: output elements × the contracted size; ``Einsum``: the
    product of the sizes of every distinct index. Element-wise ops are not counted. Counting from the graph
    works for any model, also one whose layers :func:`count_macs` does not know (a model a user brings).

    Args:
        model: a Keras model (or any callable ``model(x, training=False)``) taking ``(1, *input_shape)``.
        input_shape: one sample's shape without the batch, e.g. ``(256, 256, 1)`` or ``(16, 64, 64, 1)``.

    Raises:
        ValueError: a shape that is not positive integers, an op whose shapes the trace leaves unknown, or a
            loop or branch in the graph (its count depends on values).
    """
    import tensorflow as tf

    shape = tuple(input_shape)
    if not shape or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape):
        raise ValueError(f"traced_macs: input_shape must be positive integers (one sample, no batch), got {input_shape!r}")
    name = getattr(model, "name", type(model).__name__)
    forward = tf.function(lambda x: model(x, training=False))
    return _graph_macs(forward.get_concrete_function(tf.TensorSpec((1, *shape), tf.float32)).graph, name)


def _graph_macs(graph: Any, name: str) -> int:
    total = 0
    for op in graph.get_operations():
        if op.type in _CALLS:
            # The body lives in the graph's function library (an outer graph's, for a nested function).
            total += _graph_macs(graph._get_function(op.get_attr("f").name).graph, name)  # a FuncGraph method
        elif op.type in _CONTROL_FLOW:
            raise ValueError(f"traced_macs: model {name}: op {op.name} is a {op.type}, whose MACs depend on values "
                             "(trip count or branch); traced_macs counts graphs without loops or branches")
        elif op.type in _OP_MACS:
            total += _OP_MACS[op.type](op, name)
    return total


def _dims(tensor: Any, op: Any, name: str) -> list[int]:
    dims = tensor.shape.as_list() if tensor.shape.rank is not None else None
    if dims is None or any(d is None for d in dims):
        raise ValueError(f"traced_macs: model {name}: op {op.name} ({op.type}) has the unknown shape {tensor.shape}; "
                         "its MACs cannot be counted (give the model a static input shape)")
    return dims


def _conv(op: Any, name: str) -> int:
    # filter (*kernel, in / groups, out): output elements x kernel x in-channels per group
    return math.prod(_dims(op.outputs[0], op, name)) * math.prod(_dims(op.inputs[1], op, name)[:-1])


def _depthwise(op: Any, name: str) -> int:
    # filter (*kernel, in, multiplier): every output element sums one kernel of one input channel
    return math.prod(_dims(op.outputs[0], op, name)) * math.prod(_dims(op.inputs[1], op, name)[:-2])


def _transposed(op: Any, name: str) -> int:
    # inputs (output sizes, filter (*kernel, out, in), input): every input element scatters kernel x out
    return math.prod(_dims(op.inputs[2], op, name)) * math.prod(_dims(op.inputs[1], op, name)[:-1])


def _matmul(op: Any, name: str) -> int:
    a = _dims(op.inputs[0], op, name)
    contracted = a[0] if op.get_attr("transpose_a") else a[1]
    return math.prod(_dims(op.outputs[0], op, name)) * contracted


def _batch_matmul(op: Any, name: str) -> int:
    x = _dims(op.inputs[0], op, name)
    contracted = x[-2] if op.get_attr("adj_x") else x[-1]
    return math.prod(_dims(op.outputs[0], op, name)) * contracted


def _einsum(op: Any, name: str) -> int:
    equation = op.get_attr("equation")
    equation = equation.decode() if isinstance(equation, bytes) else str(equation)
    operands = equation.replace(" ", "").split("->")[0].split(",")
    sizes: dict[str, int] = {}
    for term, tensor in zip(operands, op.inputs):
        dims = _dims(tensor, op, name)
        letters = term.replace("...", "")
        # An ellipsis stands for the dimensions the letters leave, aligned from the right (broadcast: the larger).
        ellipsis = [f"...{k}" for k in range(len(dims) - len(letters))][::-1] if "..." in term else []
        head, _, tail = term.partition("...")
        labels = [*head, *ellipsis, *tail] if "..." in term else list(term)
        for label, size in zip(labels, dims):
            sizes[label] = max(sizes.get(label, 1), size)
    return math.prod(sizes.values())


_OP_MACS: dict[str, Callable[[Any, str], int]] = {
    "Conv2D": _conv, "Conv3D": _conv, "DepthwiseConv2dNative": _depthwise,
    "Conv2DBackpropInput": _transposed, "Conv3DBackpropInputV2": _transposed,
    "MatMul": _matmul, "BatchMatMulV2": _batch_matmul, "BatchMatMulV3": _batch_matmul, "Einsum": _einsum,
}
