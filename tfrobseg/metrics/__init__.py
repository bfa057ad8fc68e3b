"""Segmentation, surface-distance and image-quality metrics (NumPy / SciPy only).

Binary masks in, floats out; distances in the units of ``spacing``, which is given in the
array's axis order (for a SimpleITK image, ``image.GetSpacing()[::-1]``). Definitions follow
MedPy 0.5 (see :mod:`tfrobseg.metrics.surface` and :mod:`tfrobseg.metrics.overlap` for the
formulas, conventions and the empty-mask policy).
"""

from .evaluate import (
    METRIC_KEYS,
    evaluate_case,
    evaluate_cases,
    evaluate_slices,
    stack_slices,
)
from .image_quality import psnr, rmse, ssim
from .multiclass import per_class_metrics
from .overlap import (
    Confusion,
    attack_success,
    confusion,
    dice,
    f_beta,
    precision,
    sensitivity,
    specificity,
)
from .surface import (
    ASSD_CONVENTIONS,
    HD95_CONVENTIONS,
    SurfaceDistances,
    assd,
    hausdorff,
    hd95,
    surface_distances,
    surface_metrics,
    surface_voxels,
    worst_case_distance,
)

__all__ = [
    "ASSD_CONVENTIONS",
    "HD95_CONVENTIONS",
    "METRIC_KEYS",
    "Confusion",
    "SurfaceDistances",
    "assd",
    "attack_success",
    "confusion",
    "dice",
    "evaluate_case",
    "evaluate_cases",
    "evaluate_slices",
    "f_beta",
    "hausdorff",
    "hd95",
    "per_class_metrics",
    "precision",
    "psnr",
    "rmse",
    "sensitivity",
    "specificity",
    "ssim",
    "stack_slices",
    "surface_distances",
    "surface_metrics",
    "surface_voxels",
    "worst_case_distance",
]
