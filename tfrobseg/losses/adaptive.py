"""Adaptive TverskyCE loss (paper 003, "UNet-3D with Adaptive TverskyCE Loss", Sec. 3.2 C).

The loss of epoch t is w_T(t) · L_T + w_CE(t) · L_CE with

    w_T(t) = L_T(t−1) / (L_T(t−1) + L_CE(t−1)),   w_CE(t) = 1 − w_T(t),

where L_T(t−1) and L_CE(t−1) are the mean Tversky and cross-entropy losses of the previous
training epoch; epoch 0 uses 0.5 / 0.5. The component that is still large gets the larger
share of the next epoch's objective.

Mechanism: :class:`AdaptiveTverskyCELoss` keeps its Tversky weight and the running sums of
both components in non-trainable ``keras.Variable`` objects. A compiled (or XLA-compiled)
train step reads the weight variable at run time, so assignments made between epochs take
effect without retracing, and the loss adds each batch's component values to the sums.
:class:`AdaptiveTverskyCEWeighting`, a Keras callback, resets the sums at the start of each
epoch, turns them into the next epoch's weights at its end and writes the weights and
component means into the epoch logs (hence into ``History``). This relies on the
TensorFlow backend, where the train step may update variables; it is meant for a single
device.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from tfrobseg.losses._common import check_finite
from tfrobseg.losses.crossentropy import bce_loss
from tfrobseg.losses.overlap import SMOOTH, tversky_loss
from tfrobseg.losses.wrapper import SegmentationLoss

#: Paper 003 obtains its best results with α = β = 0.5 (Table 1), which is our default here.
ADAPTIVE_ALPHA = 0.5
ADAPTIVE_BETA = 0.5

#: Keys written into the epoch logs by :class:`AdaptiveTverskyCEWeighting`.
LOG_KEYS = ("w_tversky", "w_ce", "loss_tversky", "loss_ce")


def tversky_ce_components(y_true, y_pred, *, alpha: float = ADAPTIVE_ALPHA, beta: float = ADAPTIVE_BETA,
                          smooth: float = SMOOTH, from_logits: bool = False, softmax: bool = False,
                          include_background: bool = True):
    """Per-sample Tversky loss and cross-entropy, each (B,) (see :func:`tversky_loss`, :func:`bce_loss`)."""
    lt = tversky_loss(y_true, y_pred, alpha=alpha, beta=beta, smooth=smooth, from_logits=from_logits,
                      softmax=softmax, include_background=include_background)
    lce = bce_loss(y_true, y_pred, from_logits=from_logits, softmax=softmax)
    return lt, lce


def tversky_ce_loss(y_true, y_pred, *, tversky_weight: float = 0.5, alpha: float = ADAPTIVE_ALPHA,
                    beta: float = ADAPTIVE_BETA, smooth: float = SMOOTH, from_logits: bool = False,
                    softmax: bool = False, include_background: bool = True):
    """Per-sample w_T · Tversky + (1 − w_T) · CE for a given Tversky weight w_T (paper 003, Eq. 8)."""
    lt, lce = tversky_ce_components(y_true, y_pred, alpha=alpha, beta=beta, smooth=smooth, from_logits=from_logits,
                                    softmax=softmax, include_background=include_background)
    return tversky_weight * lt + (1.0 - tversky_weight) * lce


def next_tversky_weight(mean_tversky: float, mean_ce: float, current: float) -> float:
    """w_T(t) = L_T(t−1) / (L_T(t−1) + L_CE(t−1)); keeps ``current`` when both means are 0."""
    total = mean_tversky + mean_ce
    return current if total <= 0.0 else mean_tversky / total


class AdaptiveTverskyCELoss(SegmentationLoss, fn=tversky_ce_components, name="adaptive_tversky_ce"):
    """Adaptive TverskyCE loss of paper 003: w_T · Tversky(α, β) + (1 − w_T) · CE.

    Use it with :class:`AdaptiveTverskyCEWeighting` in ``fit`` so that w_T follows the
    previous epoch's component means; without the callback w_T stays at
    ``initial_tversky_weight`` (0.5, keyword only, in [0, 1]). The other arguments are those of
    :func:`tversky_ce_components`; the cross-entropy is binary (categorical with
    ``softmax=True``). Defaults: α = β = 0.5 (paper 003's best setting), s = 1.
    Reduction: per sample, then mean over the batch (default).

    Attributes:
        tversky_weight: non-trainable scalar ``keras.Variable`` holding the current w_T.
    """

    def __init__(self, *args: Any, initial_tversky_weight: float = 0.5, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.initial_tversky_weight = check_finite("initial_tversky_weight", initial_tversky_weight,
                                                   low=0.0, high=1.0)

        def state(value, var_name):
            return keras.Variable(value, dtype="float32", trainable=False, name=f"{self.name}_{var_name}")

        self.tversky_weight = state(self.initial_tversky_weight, "tversky_weight")
        self._tversky_sum = state(0.0, "tversky_sum")
        self._ce_sum = state(0.0, "ce_sum")
        self._count = state(0.0, "count")

    def call(self, y_true, y_pred):
        lt, lce = self.fn(y_true, y_pred, **self._fn_kwargs)
        # Accumulate the epoch statistics; they are bookkeeping, not part of the gradient.
        self._tversky_sum.assign_add(ops.sum(ops.stop_gradient(lt)))
        self._ce_sum.assign_add(ops.sum(ops.stop_gradient(lce)))
        self._count.assign_add(ops.cast(ops.shape(lt)[0], "float32"))
        w = ops.convert_to_tensor(self.tversky_weight)
        return w * lt + (1.0 - w) * lce

    # -- epoch bookkeeping used by the callback (eager, between steps) -----------------
    def reset_statistics(self) -> None:
        """Zero the running component sums (start of an epoch)."""
        for v in (self._tversky_sum, self._ce_sum, self._count):
            v.assign(0.0)

    def statistics(self) -> tuple[float, float, int]:
        """(mean Tversky, mean CE, number of samples) accumulated since the last reset."""
        count = float(ops.convert_to_numpy(self._count))
        if count == 0.0:
            return 0.0, 0.0, 0
        lt = float(ops.convert_to_numpy(self._tversky_sum)) / count
        lce = float(ops.convert_to_numpy(self._ce_sum)) / count
        return lt, lce, int(count)

    def set_tversky_weight(self, value: float) -> None:
        self.tversky_weight.assign(check_finite("tversky_weight", value, low=0.0, high=1.0))

    def get_tversky_weight(self) -> float:
        return float(ops.convert_to_numpy(self.tversky_weight))

    def get_config(self) -> dict[str, Any]:
        # The one constructor argument that is not an option of the loss function.
        return {**super().get_config(), "initial_tversky_weight": self.initial_tversky_weight}


class AdaptiveTverskyCEWeighting(keras.callbacks.Callback):
    """Epoch-wise weight update of the adaptive TverskyCE loss (paper 003, Eqs. 9-11).

    At ``on_train_begin`` the weight is reset to the loss's ``initial_tversky_weight``
    (0.5 / 0.5). At the end of each epoch the callback adds to ``logs`` (and so to
    ``History.history``):

    * ``w_tversky``, ``w_ce``: the weights used during that epoch;
    * ``loss_tversky``, ``loss_ce``: that epoch's mean per-sample training components;

    then sets w_T for the next epoch to loss_tversky / (loss_tversky + loss_ce). The means
    are snapshotted when validation starts, so validation batches never enter them.

    Args:
        loss: the :class:`AdaptiveTverskyCELoss` to drive; ``None`` takes the model's
            compiled loss (``model.loss``) at the start of training.
    """

    def __init__(self, loss: AdaptiveTverskyCELoss | None = None):
        super().__init__()
        if loss is not None and not isinstance(loss, AdaptiveTverskyCELoss):
            raise ValueError(f"loss must be an AdaptiveTverskyCELoss or None, got {type(loss).__name__}")
        self.loss = loss
        self._snapshot: tuple[float, float, int] | None = None
        self._in_epoch = False

    def _target(self) -> AdaptiveTverskyCELoss:
        if self.loss is None:
            compiled = getattr(self.model, "loss", None)
            if not isinstance(compiled, AdaptiveTverskyCELoss):
                raise ValueError(
                    "AdaptiveTverskyCEWeighting needs a model compiled with AdaptiveTverskyCELoss "
                    f"(got {type(compiled).__name__}); pass loss= explicitly otherwise"
                )
            self.loss = compiled
        return self.loss

    def on_train_begin(self, logs=None):
        loss = self._target()
        loss.set_tversky_weight(loss.initial_tversky_weight)

    def on_epoch_begin(self, epoch, logs=None):
        self._target().reset_statistics()
        self._snapshot = None
        self._in_epoch = True

    def on_test_begin(self, logs=None):
        # Validation inside fit runs before on_epoch_end and goes through the same loss object.
        if self._in_epoch and self._snapshot is None:
            self._snapshot = self._target().statistics()

    def on_epoch_end(self, epoch, logs=None):
        loss = self._target()
        lt, lce, count = self._snapshot if self._snapshot is not None else loss.statistics()
        self._in_epoch = False
        w = loss.get_tversky_weight()
        if logs is not None:
            logs.update(w_tversky=w, w_ce=1.0 - w, loss_tversky=lt, loss_ce=lce)
        if count > 0:
            loss.set_tversky_weight(next_tversky_weight(lt, lce, w))
