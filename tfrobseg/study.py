"""The study's constants, stated once (Apostolidis et al., "Adversarial Robustness Evaluation of Deep
Learning Segmentation Models and Loss Functions in Prostate MRI").

Everything here is plain Python (no TensorFlow, no SimpleITK), so that any part of the package
(models, training, reporting) can read the paper's values without pulling in a heavy stack.
Display names live with each registered model / loss (:func:`tfrobseg.models.register_model`,
:mod:`tfrobseg.losses`); this module only says which of them make up the study.
"""

from __future__ import annotations

from dataclasses import dataclass

# --------------------------------------------------------------------------- the grid (Sec. II-C, II-D, II-F)
#: The five networks of the study, in the order of its tables.
MODELS: tuple[str, ...] = ("unet", "attention_unet", "recurrent_unet", "resunet", "unet_vit")
#: The six training losses of the study, in the order of its tables.
LOSSES: tuple[str, ...] = ("bce", "dice", "tversky", "bce_dice", "bce_tversky", "dice_tversky")
#: FGSM strengths in z-score units; 0 is the clean reference, the tables use ε > 0 only.
EPSILONS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
#: Filters per level, shared by every network ("fixed depth and filters"); depth = len(FILTERS).
FILTERS: tuple[int, ...] = (16, 32, 64, 128, 256)
#: Cross-validation folds inside the training part.
N_FOLDS: int = 3

# --------------------------------------------------------------------------- training protocol (Sec. II-H)
LEARNING_RATE: float = 1e-4
BATCH_SIZE: int = 4
MAX_EPOCHS: int = 150
PLATEAU_PATIENCE: int = 2
MIN_LEARNING_RATE: float = 1e-6
# Not stated in the paper; why these values: tfrobseg.training.config.
PLATEAU_FACTOR: float = 0.5
EARLY_STOPPING_PATIENCE: int = 10
THRESHOLD: float = 0.5

# --------------------------------------------------------------------------- metrics and outputs (Sec. II-E, III)
METRICS: tuple[str, ...] = ("dice", "hd95", "assd")
#: Column headers as printed in the study's tables.
METRIC_HEADERS: dict[str, str] = {"dice": "DC", "hd95": "HD95 (mm)", "assd": "ASD (mm)"}


@dataclass(frozen=True)
class TableSpec:
    """Which phase and grouping factor make one of the study's tables."""

    table: str
    phase: str
    by: str  # "model" or "loss"
    caption: str


TABLES: tuple[TableSpec, ...] = (
    TableSpec("I", "crossval", "model", "Mean ± std across folds and ε for each model after the attack (cross-validation)"),
    TableSpec("II", "holdout", "model", "Mean ± std across ε for each model after the attack (hold-out test set)"),
    TableSpec("III", "crossval", "loss", "Mean ± std across folds and ε for each loss after the attack (cross-validation)"),
    TableSpec("IV", "holdout", "loss", "Mean ± std across ε for each loss after the attack (hold-out test set)"),
)


@dataclass(frozen=True)
class FigureSpec:
    """One of the study's attack figures: a model and its loss (``None``: the most robust loss)."""

    number: int
    model: str
    loss: str | None
    title: str


FIGURES: tuple[FigureSpec, ...] = (
    FigureSpec(1, "resunet", None, "ResU-Net, most robust loss"),
    FigureSpec(2, "recurrent_unet", None, "Recurrent U-Net, most robust loss"),
    FigureSpec(3, "recurrent_unet", "bce", "Recurrent U-Net, BCE"),
)
