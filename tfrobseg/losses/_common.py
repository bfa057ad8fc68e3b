"""Shared plumbing for the segmentation losses: dtype handling, activations, reductions, validation.

Every loss in :mod:`tfrobseg.losses` follows the same conventions:

* ``y_pred`` holds probabilities by default (sigmoid outputs, or softmax outputs with
  ``softmax=True``); with ``from_logits=True`` it holds the pre-activation scores and the
  loss applies the activation itself, using the numerically stable logits form wherever a
  logarithm is taken.
* Inputs are cast to float32 before any arithmetic, so a ``mixed_float16`` model still gets
  a float32 loss (half precision sums over 65k pixels lose too many digits).
* The functional forms return one value per sample, shape ``(B,)``; the
  :class:`keras.losses.Loss` classes (:mod:`tfrobseg.losses.wrapper`) then apply the Keras
  reduction, whose default ``"sum_over_batch_size"`` is the mean over the batch.
"""

from __future__ import annotations

import math

from keras import ops

#: Clipping bound for probabilities before a logarithm (same value as ``keras.backend.epsilon()``).
EPSILON = 1e-7

#: Default reduction of the Loss classes: mean of the per-sample values over the batch.
DEFAULT_REDUCTION = "sum_over_batch_size"


def to_float32(*tensors):
    """Convert each argument to a float32 tensor (casting float16/bfloat16 model outputs)."""
    out = tuple(ops.cast(ops.convert_to_tensor(t), "float32") for t in tensors)
    return out if len(out) > 1 else out[0]


def activate(y_pred, *, from_logits: bool, softmax: bool):
    """Probabilities from ``y_pred``: the activation when it holds logits, else unchanged."""
    if not from_logits:
        return y_pred
    return ops.softmax(y_pred, axis=-1) if softmax else ops.sigmoid(y_pred)


def spatial_axes(x) -> tuple[int, ...]:
    """The axes between the batch axis and the channel axis, e.g. (1, 2) for (B, H, W, C)."""
    rank = len(x.shape)
    if rank < 3:
        raise ValueError(f"expected a (batch, *spatial, channels) tensor of rank >= 3, got shape {tuple(x.shape)}")
    return tuple(range(1, rank - 1))


def non_batch_axes(x) -> tuple[int, ...]:
    """All axes except the batch axis."""
    return tuple(range(1, len(x.shape)))


def check_same_shape(y_true, y_pred, what: str = "y_true") -> None:
    """Raise a ValueError when statically known shapes disagree (batch size may be unknown)."""
    a, b = tuple(y_true.shape), tuple(y_pred.shape)
    if len(a) != len(b) or any(p is not None and q is not None and p != q for p, q in zip(a, b)):
        raise ValueError(f"{what} shape {a} does not match y_pred shape {b}")


def split_readers(y_true, y_pred):
    """The expert mask, the second-reader mask and ``y_pred`` of a two-reader target, all float32.

    ``y_true`` is (B, ..., 2): channel 0 the expert (reference) mask, channel 1 the second
    reader; both masks keep a trailing channel axis of size 1 so they line up with the
    single-channel ``y_pred``.
    """
    y_true, y_pred = to_float32(y_true, y_pred)
    if y_true.shape[-1] != 2:
        raise ValueError(
            "annotation-guided losses expect y_true with 2 channels (expert, second reader) "
            f"on the last axis, got shape {tuple(y_true.shape)}"
        )
    if y_pred.shape[-1] != 1:
        raise ValueError(f"annotation-guided losses expect a single-channel y_pred, got shape {tuple(y_pred.shape)}")
    check_same_shape(y_true[..., :1], y_pred)
    return y_true[..., 0:1], y_true[..., 1:2], y_pred


def class_mean(per_class, *, include_background: bool, softmax: bool):
    """Mean over the class axis (last) of a (B, C) tensor, optionally dropping channel 0.

    Background is only dropped in the softmax (one-hot) case, where channel 0 is the
    background class; a sigmoid output's channels are all foreground classes.
    """
    if softmax and not include_background:
        if per_class.shape[-1] is not None and per_class.shape[-1] < 2:
            raise ValueError("include_background=False needs at least 2 softmax channels")
        per_class = per_class[..., 1:]
    return ops.mean(per_class, axis=-1)


# --------------------------------------------------------------------------- validation


def check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be a bool, got {value!r}")  # noqa: TRY004 - project rule: bad input is a ValueError
    return value


def check_finite(name: str, value, *, low: float | None = None, high: float | None = None,
                 low_inclusive: bool = True) -> float:
    """Validate a real hyper-parameter against an interval; returns it as float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    value = float(value)
    if low is not None and (value < low or (value == low and not low_inclusive)):
        bound = ">=" if low_inclusive else ">"
        raise ValueError(f"{name} must be {bound} {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value}")
    return value


def check_kernel_size(name: str, value) -> int:
    """Validate the side of a centred square (dilation) kernel: a positive odd int."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value % 2 == 0:
        raise ValueError(f"{name} must be a positive odd int (centred square), got {value!r}")
    return value
