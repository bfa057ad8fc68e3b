"""The loss-scaled sign of the input gradient, the one primitive every attack here is built on.

For an input batch ``x``, labels ``y`` and an attack loss ``L`` the attacks need
``sign(∇ₓ L(model(x), y))`` (Goodfellow et al. FGSM; Apostolidis et al. eq. 1; Liu et al. eqs. 1–3).
It is computed with :class:`tf.GradientTape` with respect to a float32 input inside one
``tf.function(jit_compile=True)`` per (model, loss), cached so that a whole dataset is attacked with
one XLA compilation.

The segmentation-aware attacks (SegPGD, CosPGD, APGD, DAG) need more than a sign: a per-pixel loss
weighted by the current prediction, the per-image loss values, or the gradient itself.
:func:`objective_gradient` gives all three for an *objective* ``objective(y, pred, param) -> (B,)``
— one value per image, ``param`` a float32 scalar such as SegPGD's λ(t) — compiled once per
(model, objective) like the sign.
Its traced body, :func:`input_gradient`, is also the attack inside the defenses' training steps
(:mod:`tfrobseg.defenses.objectives`).

Mixed precision: under ``mixed_float16`` the backward pass runs in float16, where the per-pixel
gradients of a loss averaged over ``B·H·W`` pixels (≈1e-6 for 256×256 batches) fall below the
float16 normal range and flush to zero — and a zero gradient gives a zero sign, i.e. no
perturbation at that pixel. Because ``sign(s·g) = sign(g)`` for any ``s > 0``, the loss is
multiplied by ``loss_scale`` (default ``2**15``, Keras' initial dynamic loss scale) before
differentiating; a power of two leaves float32 gradients bit-identical up to the exponent. If the
scaled gradient overflows (non-finite), it is recomputed once with scale 1.
"""

from __future__ import annotations

import collections
import weakref
from collections.abc import Callable

import keras
import tensorflow as tf

from tfrobseg.losses import LOSS_NAMES, get_loss

LossLike = str | Callable[[tf.Tensor, tf.Tensor], tf.Tensor]

DEFAULT_LOSS_SCALE = 2.0**15

# model -> OrderedDict[(kind, loss key, jit_compile)] -> (compiled function, loss object).
# Weak keys: a model that goes out of scope takes its compiled functions with it.
_COMPILED: weakref.WeakKeyDictionary[keras.Model, collections.OrderedDict] = weakref.WeakKeyDictionary()
_MAX_PER_MODEL = 16
# Image-gradients computed in this process (each compiled gradient call adds its batch size): what
# benchmarks/attacks.py reports as gradients per ε.
_GRADIENTS = [0]

#: ``objective(y, pred, param) -> (B,)``: an attack's per-image objective of float32 targets,
#: probabilities and a float32 scalar parameter.
Objective = Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tf.Tensor]


def check_loss(loss: LossLike) -> LossLike:
    """Validate an attack loss: a :func:`tfrobseg.losses.get_loss` name or a callable ``(y_true, y_pred)``."""
    if callable(loss):
        return loss
    if not isinstance(loss, str):
        # ValueError, like every bad argument in tfrobseg (the contract), not TypeError.
        raise ValueError(f"loss must be a loss name or a callable(y_true, y_pred), got {type(loss).__name__}")  # noqa: TRY004
    if loss.lower() == "dlr":
        # Croce & Hein's DLR loss needs the margins of the top classes of a softmax over >= 3 classes.
        raise ValueError("attack loss 'dlr' (Croce & Hein's difference of logits ratio) is not defined for a "
                         "one-channel sigmoid head; use 'bce' (cross-entropy) or 'bce_dice'")
    if loss not in LOSS_NAMES:
        raise ValueError(f"unknown attack loss {loss!r}; valid names: {', '.join(LOSS_NAMES)}")
    return loss


def check_loss_scale(loss_scale: float) -> float:
    """Validate the loss multiplier: a number > 0."""
    if isinstance(loss_scale, bool) or not isinstance(loss_scale, (int, float)) or not loss_scale > 0:
        raise ValueError(f"loss_scale must be positive, got {loss_scale!r}")
    return float(loss_scale)


def resolve_loss(loss: LossLike) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """Return the attack loss as a callable ``loss(y_true, y_pred)``.

    A string is resolved with :func:`tfrobseg.losses.get_loss`. Any Keras loss or plain callable
    ``(y_true, y_pred) -> tensor`` is returned unchanged. The attack loss need not be the training
    loss: Wang & Xu found BCE attacks stronger than attacks with the (Dice + focal) training loss.
    """
    loss = check_loss(loss)
    return loss if callable(loss) else get_loss(loss)


def gradient_count() -> int:
    """Image-gradients computed so far in this process by :func:`gradient_sign` and
    :func:`objective_gradient` (a call on a batch of B images counts B)."""
    return _GRADIENTS[0]


def _loss_key(loss: LossLike) -> object:
    return ("name", loss.lower()) if isinstance(loss, str) else ("object", id(loss))


def compiled(model: keras.Model, kind: str, loss: LossLike | None, jit_compile: bool, build: Callable) -> Callable:
    """Return the cached compiled function ``kind`` for ``model`` (and ``loss``), building it once."""
    per_model = _COMPILED.setdefault(model, collections.OrderedDict())
    key = (kind, None if loss is None else _loss_key(loss), bool(jit_compile))
    if key not in per_model:
        loss_fn = None if loss is None else resolve_loss(loss)
        # Keep the loss object in the entry: it keeps id(loss) from being reused while cached.
        per_model[key] = (build(model, loss_fn, jit_compile), loss)
        if len(per_model) > _MAX_PER_MODEL:
            per_model.popitem(last=False)
    return per_model[key][0]


def _build_gradient_sign(model: keras.Model, loss_fn: Callable, jit_compile: bool) -> Callable:
    @tf.function(jit_compile=jit_compile)
    def gradient_sign(x: tf.Tensor, y: tf.Tensor, scale: tf.Tensor):
        with tf.GradientTape() as tape:
            tape.watch(x)
            pred = tf.cast(model(x, training=False), tf.float32)
            value = _sum_of_image_losses(loss_fn, y, pred)
            scaled = value * scale
        grad = tape.gradient(scaled, x)
        return tf.sign(grad), pred, tf.reduce_all(tf.math.is_finite(grad))

    return gradient_sign


def _sum_of_image_losses(loss_fn: Callable, y: tf.Tensor, pred: tf.Tensor) -> tf.Tensor:
    """Σᵢ L(yᵢ, predᵢ): each image's loss on its own, so that ∇ₓᵢ is the gradient of image i's loss alone
    (eq. 1 is per image). A loss that pools its counts over the batch (tfrobseg's Dice and Tversky, as
    Keras' own) would otherwise tie an image's perturbation to its batch-mates and to the zero padding
    of a last, short batch."""
    return tf.reduce_sum(per_image_losses(loss_fn, y, pred))


def per_image_losses(loss_fn: Callable, y: tf.Tensor, pred: tf.Tensor) -> tf.Tensor:
    """``(B,)``: each image's loss ``L(yᵢ, predᵢ)`` computed on that image alone (see
    :func:`_sum_of_image_losses`); ``reduce_sum`` also accepts losses that return per-pixel values."""
    if y.shape[0] is None:  # batch size unknown when traced: one loss call per image, in a loop
        return tf.map_fn(lambda t: tf.reduce_sum(tf.cast(loss_fn(t[0][None], t[1][None]), tf.float32)),
                         (y, pred), fn_output_signature=tf.float32)
    return tf.stack([tf.reduce_sum(tf.cast(loss_fn(y[i:i + 1], pred[i:i + 1]), tf.float32))
                     for i in range(y.shape[0])])


def pixel_bce(y: tf.Tensor, pred: tf.Tensor) -> tf.Tensor:
    """Per-pixel binary cross-entropy ``−(y log p + (1 − y) log(1 − p))``, p clipped to [1e-7, 1 − 1e-7]
    as Keras does, so a saturated pixel keeps a finite loss."""
    p = tf.clip_by_value(pred, 1e-7, 1.0 - 1e-7)
    return -(y * tf.math.log(p) + (1.0 - y) * tf.math.log(1.0 - p))


def loss_objective(loss: LossLike) -> Objective:
    """The objective ``(y, pred, param) -> (B,)`` of a loss name or callable: each image's own loss
    (``param`` unused). Cached per loss, so that attacks built on it compile once."""
    check_loss(loss)
    key = _loss_key(loss)
    if key not in _LOSS_OBJECTIVES:
        loss_fn = resolve_loss(loss)
        _LOSS_OBJECTIVES[key] = (lambda y, pred, param: per_image_losses(loss_fn, y, pred), loss)
    return _LOSS_OBJECTIVES[key][0]


# (loss key) -> (objective, loss): the loss object is kept so that its id is not reused while cached.
_LOSS_OBJECTIVES: dict[object, tuple[Objective, LossLike]] = {}


def input_gradient(model: keras.Model, x: tf.Tensor, y: tf.Tensor, objective: Objective, param: tf.Tensor,
                   scale: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """The traced body of every objective gradient: ``(∇ₓ Σᵢ objective(y, f(x), param)ᵢ, f(x), values)``.

    ``f`` runs in inference mode (``training=False``: batch norm with its moving statistics, as the attacked
    model is deployed); the objective is multiplied by the power-of-two ``scale`` before differentiating (see
    the module docstring) and the float32 gradient is divided by it again. Pure TensorFlow without Python
    decisions on tensors, so it can be called inside another ``tf.function`` (the defenses' ``train_step``).
    The caller checks that the gradient is finite.
    """
    with tf.GradientTape() as tape:
        tape.watch(x)
        pred = tf.cast(model(x, training=False), tf.float32)
        values = tf.cast(objective(y, pred, param), tf.float32)
        scaled = tf.reduce_sum(values) * scale
    # Unscaled in float32: the true gradient (a power-of-two scale divides out exactly).
    grad = tf.cast(tape.gradient(scaled, x), tf.float32) / scale
    return grad, pred, values


def _build_objective_gradient(model: keras.Model, objective: Objective, jit_compile: bool) -> Callable:
    @tf.function(jit_compile=jit_compile)
    def objective_gradient(x: tf.Tensor, y: tf.Tensor, param: tf.Tensor, scale: tf.Tensor):
        grad, pred, values = input_gradient(model, x, y, objective, param, scale)
        return grad, pred, values, tf.reduce_all(tf.math.is_finite(grad))

    return objective_gradient


def _build_predict(model: keras.Model, loss_fn: None, jit_compile: bool) -> Callable:
    @tf.function(jit_compile=jit_compile)
    def predict(x: tf.Tensor) -> tf.Tensor:
        return tf.cast(model(x, training=False), tf.float32)

    return predict


def gradient_sign(
    model: keras.Model,
    x: tf.Tensor,
    y: tf.Tensor,
    *,
    loss: LossLike = "bce",
    loss_scale: float = DEFAULT_LOSS_SCALE,
    jit_compile: bool = True,
) -> tuple[tf.Tensor, tf.Tensor]:
    """``sign(∇ₓ L(model(x), y))`` and the clean prediction ``model(x)`` from the same forward pass.

    Args:
        model: a Keras model mapping ``(B, H, W, C)`` float32 images to probabilities.
        x: float32 input batch, in model input units.
        y: target of the loss (the true mask, or a target mask for targeted attacks).
        loss: attack loss name (:func:`tfrobseg.losses.get_loss`) or callable ``(y_true, y_pred)``.
        loss_scale: positive factor applied to the loss before differentiating (see module doc).
        jit_compile: compile the gradient with XLA (``False`` to compare against plain graph mode).

    Returns:
        ``(sign, prediction)``: float32 tensors shaped like ``x`` and like the model output. The
        prediction is the inference-mode (``training=False``) output, the ε = 0 prediction.
    """
    loss_scale = check_loss_scale(loss_scale)
    check_loss(loss)
    fn = compiled(model, "gradient_sign", loss, jit_compile, _build_gradient_sign)
    x = tf.convert_to_tensor(x, tf.float32)
    y = tf.convert_to_tensor(y, tf.float32)
    _GRADIENTS[0] += int(x.shape[0])
    sign, pred, finite = fn(x, y, tf.constant(loss_scale, tf.float32))
    if not bool(finite) and loss_scale != 1.0:
        # Overflow of the scaled float16 backward pass: fall back to the unscaled loss.
        sign, pred, finite = fn(x, y, tf.constant(1.0, tf.float32))
    if not bool(finite):
        raise FloatingPointError("the input gradient of the attack loss is not finite (NaN/Inf in model or loss)")
    return sign, pred


def objective_gradient(
    model: keras.Model,
    x: tf.Tensor,
    y: tf.Tensor,
    objective: Objective,
    *,
    param: float | tf.Tensor = 0.0,
    loss_scale: float = DEFAULT_LOSS_SCALE,
    jit_compile: bool = True,
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """The input gradient of ``Σᵢ objective(y, model(x), param)ᵢ``, the prediction and the per-image values.

    Args:
        model, x, y, loss_scale, jit_compile: as in :func:`gradient_sign`.
        objective: ``objective(y, pred, param) -> (B,)``, a pure TensorFlow function of float32 targets,
            probabilities and a float32 scalar (e.g. :func:`loss_objective`, or a weighted :func:`pixel_bce`).
            Compiled once per (model, objective object): pass the same object every call.
        param: the scalar handed to ``objective`` (a tensor input, so a new value does not retrace).

    Returns:
        ``(gradient, prediction, values)``: the float32 gradient (``loss_scale`` divided out, so the true
        gradient), the float32 prediction of the same forward pass and the ``(B,)`` objective values.
    """
    loss_scale = check_loss_scale(loss_scale)
    if not callable(objective):
        raise ValueError(f"objective must be a callable(y, pred, param), got {type(objective).__name__}")  # noqa: TRY004
    # compiled() hands a callable to the builder unchanged (resolve_loss), keyed by its identity.
    fn = compiled(model, "objective_gradient", objective, jit_compile, _build_objective_gradient)
    x = tf.convert_to_tensor(x, tf.float32)
    y = tf.convert_to_tensor(y, tf.float32)
    param = tf.convert_to_tensor(param, tf.float32)
    _GRADIENTS[0] += int(x.shape[0])
    grad, pred, values, finite = fn(x, y, param, tf.constant(loss_scale, tf.float32))
    if not bool(finite) and loss_scale != 1.0:
        grad, pred, values, finite = fn(x, y, param, tf.constant(1.0, tf.float32))
    if not bool(finite):
        raise FloatingPointError("the input gradient of the attack objective is not finite (NaN/Inf in model or objective)")
    return grad, pred, values


def predict(model: keras.Model, x: tf.Tensor, *, jit_compile: bool = True) -> tf.Tensor:
    """Inference-mode float32 prediction through the cached compiled forward pass."""
    fn = compiled(model, "predict", None, jit_compile, _build_predict)
    return fn(tf.convert_to_tensor(x, tf.float32))
