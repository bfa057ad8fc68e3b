"""White-box gradient attacks on segmentation models (FGSM, i-FGSM, PGD, SegPGD, CosPGD, APGD, DAG) and noise controls.

All attacks take a Keras model returning probabilities, a float32 batch ``(B, H, W, C)`` in model
input units and the loss target; ε is in input units (or a fraction with ``relative_to``), and the
attack loss is a :func:`tfrobseg.losses.get_loss` name or any callable ``(y_true, y_pred)``. The
options shared by the gradient attacks are those of :class:`AttackOptions`; :data:`ATTACKS` maps
every attack name of :func:`attack_dataset` to how it runs on a batch. :func:`float32_copy` gives a
float32 copy of a ``mixed_float16`` model, to attack it in float32 (``attack_precision="float32"``).
"""

from tfrobseg.attacks.apgd import apgd, apgd_checkpoints
from tfrobseg.attacks.budget import RELATIVE_TO, epsilon_scale
from tfrobseg.attacks.cospgd import cospgd, targeted_cospgd
from tfrobseg.attacks.dag import dag
from tfrobseg.attacks.fgsm import fgsm, fgsm_sweep
from tfrobseg.attacks.gradient import (
    DEFAULT_LOSS_SCALE,
    gradient_sign,
    predict,
    resolve_loss,
)
from tfrobseg.attacks.iterative import ifgsm, targeted_ifgsm
from tfrobseg.attacks.noise import gaussian_noise, rician_noise, sign_noise
from tfrobseg.attacks.params import AttackOptions
from tfrobseg.attacks.pgd import pgd
from tfrobseg.attacks.precision import ATTACK_PRECISIONS, float32_copy
from tfrobseg.attacks.runner import ATTACKS, BatchAttack, attack_dataset
from tfrobseg.attacks.segpgd import segpgd
from tfrobseg.attacks.targets import (
    background_target,
    foreground_target,
    make_target,
    shifted_target,
)

__all__ = [
    "ATTACKS",
    "ATTACK_PRECISIONS",
    "DEFAULT_LOSS_SCALE",
    "RELATIVE_TO",
    "AttackOptions",
    "BatchAttack",
    "apgd",
    "apgd_checkpoints",
    "attack_dataset",
    "background_target",
    "cospgd",
    "dag",
    "epsilon_scale",
    "fgsm",
    "fgsm_sweep",
    "float32_copy",
    "foreground_target",
    "gaussian_noise",
    "gradient_sign",
    "ifgsm",
    "make_target",
    "pgd",
    "predict",
    "resolve_loss",
    "rician_noise",
    "segpgd",
    "shifted_target",
    "sign_noise",
    "targeted_cospgd",
    "targeted_ifgsm",
]
