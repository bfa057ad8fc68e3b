"""Soft-Dice distillation loss for defensive distillation (paper 002, Liu et al., Eqs. 4-7).

In defensive distillation a teacher F is trained with its output activation run at a
temperature T; its softened outputs then replace the one-hot labels for training a
student F^d of the same architecture at the same temperature, and the student's loss is
1 − soft Dice(F^d(X), F(X)). Here ``y_true`` is the teacher output and ``y_pred`` the
student output, both (B, H, W, C).

Temperature softening:

* logits z (``from_logits`` / ``teacher_from_logits``): sigmoid(z / T), or softmax(z / T);
* probabilities p: the same map written on p, i.e. sigmoid(logit(p) / T) =
  p^(1/T) / (p^(1/T) + (1 − p)^(1/T)), or softmax(log p / T); p is clipped to
  [1e-7, 1 − 1e-7] first. Teacher probabilities that are already softened are used as
  they are with ``soften_teacher=False``.

T = 1 leaves the outputs unchanged; larger T flattens them towards 0.5 (or 1/C).
"""

from __future__ import annotations

from keras import ops

from tfrobseg.losses._common import EPSILON, to_float32
from tfrobseg.losses.overlap import SMOOTH, dice_loss
from tfrobseg.losses.wrapper import SegmentationLoss

#: Default distillation temperature. Paper 002 reports T from 20 to 5000; T = 1 is plain soft Dice.
TEMPERATURE = 1.0


def soften(y, *, temperature: float, from_logits: bool, softmax: bool):
    """Temperature-softened probabilities of logits or probabilities ``y`` (see module docstring)."""
    if from_logits:
        z = y
    elif temperature == 1.0:
        # The identity map; returning y unchanged avoids the clipping's bias on exact 0/1 values.
        return y
    elif softmax:
        z = ops.log(ops.clip(y, EPSILON, 1.0))
    else:
        p = ops.clip(y, EPSILON, 1.0 - EPSILON)
        z = ops.log(p) - ops.log1p(-p)
    z = z / temperature
    return ops.softmax(z, axis=-1) if softmax else ops.sigmoid(z)


def soft_dice_distillation_loss(y_true, y_pred, *, temperature: float = TEMPERATURE, smooth: float = SMOOTH,
                                from_logits: bool = False, teacher_from_logits: bool | None = None,
                                soften_teacher: bool = True, softmax: bool = False,
                                include_background: bool = True):
    """Per-sample 1 − soft Dice between the softened student and teacher outputs (paper 002, Eq. 7).

    Args:
        y_true: teacher output (B, H, W, C): probabilities, or logits with ``teacher_from_logits``.
        y_pred: student output, same shape: probabilities, or logits with ``from_logits``.
        temperature: T > 0 applied to both outputs.
        smooth: s of the soft Dice (paper 002's γ, "a small positive number"); default 1.
        teacher_from_logits: how to read ``y_true``; ``None`` means the same as ``from_logits``.
        soften_teacher: ``False`` takes teacher probabilities as already softened.
        softmax, include_background: multi-class form; paper 002 leaves the background
            class out of its mean (``include_background=False``).

    Returns:
        (B,) float32 per-sample loss.
    """
    y_true, y_pred = to_float32(y_true, y_pred)
    teacher_from_logits = from_logits if teacher_from_logits is None else teacher_from_logits
    student = soften(y_pred, temperature=temperature, from_logits=from_logits, softmax=softmax)
    if soften_teacher or teacher_from_logits:
        teacher = soften(y_true, temperature=temperature, from_logits=teacher_from_logits, softmax=softmax)
    else:
        teacher = y_true
    return dice_loss(teacher, student, smooth=smooth, from_logits=False, softmax=softmax,
                     include_background=include_background)


class SoftDiceDistillationLoss(SegmentationLoss, fn=soft_dice_distillation_loss, name="soft_dice_distillation"):
    """Soft Dice between temperature-softened student and teacher outputs (paper 002).

    ``loss(teacher_output, student_output)``; see :func:`soft_dice_distillation_loss`.
    Defaults: T = 1, s = 1. Reduction: per sample, then mean over the batch (default).
    """
