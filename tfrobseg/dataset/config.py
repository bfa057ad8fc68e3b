"""The preprocessing parameters of a prepared data folder (Apostolidis et al., Sec. II-B).

Plain Python on purpose: the manifest stores a :class:`PrepConfig`, and reading a manifest (for
training or reporting) must not import SimpleITK.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["BUILTIN_PATIENTS", "PZ", "TZ", "ZONE_LABELS", "ZONE_NAMES", "PrepConfig"]

#: Patients of the built-in synthetic cohort (:mod:`tfrobseg.dataset.synthetic`): 13 for training (folds
#: of 5/4/4), 2 for validation, 3 held out. Here, not there, so that command lines show it without SimpleITK.
BUILTIN_PATIENTS = 18

#: Classes of the prepared zonal label maps (the records' ``zones``): 0 background, 1 peripheral zone,
#: 2 transition zone (with the anterior fibromuscular stroma and the urethra: the "central gland").
ZONE_NAMES: tuple[str, ...] = ("background", "PZ", "TZ")
PZ, TZ = 1, 2
#: The values of PZ and TZ in the zonal masks read by the preparation (``--zone-labels``), by default
#: the prepared labels themselves (the built-in cohort's, and the Medical Segmentation Decathlon's prostate task).
ZONE_LABELS: tuple[int, int] = (PZ, TZ)

# Human-readable notes stored next to the parameters; derived, never read back.
_NOTES_KEY = "units"


@dataclass(frozen=True)
class PrepConfig:
    """Preprocessing parameters; defaults are the paper's values (Sec. II-B) where it gives them.

    spacing_xyz: target voxel spacing (mm), x, y in-plane, z between slices.
    size_hw: in-plane slice shape after centre crop / pad.
    n4: run N4; n4_shrink: in-plane shrink factor for the fit; n4_iterations: iterations per
    fitting level; n4_convergence: N4 convergence threshold.
    smoothing_sigma / smoothing_unit: Gaussian sigma and its unit ("voxel" or "mm"), in-plane.
    mask_threshold: linear-interpolated masks are binarised with ``>=`` this.
    mask_label: None = masks must be {0, 1}; an int = label map, this label is the gland.
    direction_tol / origin_tol_mm: tolerances to treat a mask as voxel-aligned with its image.
    """

    spacing_xyz: tuple[float, float, float] = (0.5, 0.5, 3.0)
    size_hw: tuple[int, int] = (256, 256)
    n4: bool = True
    n4_shrink: int = 4
    n4_iterations: tuple[int, ...] = (50, 50, 50, 50)
    n4_convergence: float = 1e-3
    smoothing_sigma: float = 1.0
    smoothing_unit: str = "voxel"
    mask_threshold: float = 0.5
    mask_label: int | None = None
    direction_tol: float = 1e-3
    origin_tol_mm: float = 0.05

    def __post_init__(self):
        object.__setattr__(self, "spacing_xyz", tuple(float(s) for s in self.spacing_xyz))
        object.__setattr__(self, "size_hw", tuple(int(s) for s in self.size_hw))
        object.__setattr__(self, "n4_iterations", tuple(int(i) for i in self.n4_iterations))
        if len(self.spacing_xyz) != 3 or min(self.spacing_xyz) <= 0:
            raise ValueError(f"spacing_xyz must be 3 positive values, got {self.spacing_xyz}")
        if len(self.size_hw) != 2 or min(self.size_hw) < 1:
            raise ValueError(f"size_hw must be 2 positive ints, got {self.size_hw}")
        if self.n4_shrink < 1 or not self.n4_iterations or min(self.n4_iterations) < 1:
            raise ValueError("n4_shrink must be >= 1 and n4_iterations a non-empty list of positive ints")
        if self.smoothing_sigma < 0 or self.smoothing_unit not in ("voxel", "mm"):
            raise ValueError("smoothing_sigma must be >= 0 and smoothing_unit 'voxel' or 'mm'")
        if not 0.0 < self.mask_threshold <= 1.0:
            raise ValueError(f"mask_threshold must be in (0, 1], got {self.mask_threshold}")

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        """The target spacing in array order (slices, rows, columns), as stored in the records."""
        x, y, z = self.spacing_xyz
        return (z, y, x)

    def to_json(self) -> dict[str, Any]:
        """The parameters as JSON, with a note on units and order of the steps."""
        d = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
        d[_NOTES_KEY] = {"spacing": "mm", "smoothing_sigma": f"{self.smoothing_unit} (in-plane, per slice)",
                         "mask_interpolation": f"linear, then >= {self.mask_threshold}",
                         "image_interpolation": "linear",
                         "zscore": f"per volume: mean and std of the whole {'N4-corrected ' if self.n4 else ''}"
                                   "volume before resampling and crop/pad, applied after crop/pad"}
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PrepConfig:
        """Inverse of :meth:`to_json`; keys other than the fields (notes, older derived keys) are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
