"""Benchmark: tfrobseg.metrics hd95 + assd against MedPy 0.5 (values must be equal).

Times ``hd95(...)`` followed by ``assd(...)`` (two independent calls, as a user would make
them) for our implementation and for ``medpy.metric.binary``, on

* the real whole-gland masks of the ProstateX sample (reader 2 vs reader 1, 19 × 384 × 384,
  spacing (3.0, 0.5, 0.5) mm in array order), and
* synthetic gland-like pairs on 24 × 256 × 256 volumes (spacing (3.0, 0.75, 0.75) mm): a
  smoothly deformed ellipsoid of prostate size and a second, independently deformed one
  standing in for a prediction.

Prints both values side by side, the maximum absolute difference and the speed ratio
MedPy / ours (min of several repeats each). Run: ``python benchmarks/metrics.py``
(``--sample DIR`` to point at the sample, default ../shared/data/prostatex-sample).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from tfrobseg.metrics import assd, hd95, surface_metrics

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SAMPLE = REPO.parent / "shared" / "data" / "prostatex-sample"


def gland_like(rng: np.random.Generator, shape=(24, 256, 256), spacing=(3.0, 0.75, 0.75)) -> np.ndarray:
    """An ellipsoid of about 50 × 40 × 36 mm whose radius is modulated by smooth noise."""
    centre = np.array(shape) / 2 + rng.uniform(-2, 2, 3) * np.array([0.5, 4, 4])
    semi_axes_mm = np.array([18.0, 20.0, 25.0]) * rng.uniform(0.9, 1.1, 3)
    grid = np.indices(shape, dtype=np.float64)
    radius = np.sqrt(sum(((grid[i] - centre[i]) * spacing[i] / semi_axes_mm[i]) ** 2 for i in range(3)))
    wobble = ndimage.gaussian_filter(rng.standard_normal(shape), (1.0, 12.0, 12.0))
    wobble *= 0.12 / wobble.std()
    return radius < 1.0 + wobble


def sample_pairs(sample_dir: Path) -> list[tuple[str, np.ndarray, np.ndarray, tuple[float, ...]]]:
    import SimpleITK as sitk

    pairs = []
    for patient in ("ProstateX-0000", "ProstateX-0001"):
        reader1 = sitk.ReadImage(str(sample_dir / "masks" / "whole_gland" / f"{patient}.nii.gz"))
        reader2 = sitk.ReadImage(str(sample_dir / "masks" / "whole_gland_second_reader" / f"{patient}.nii.gz"))
        pairs.append((
            patient,
            sitk.GetArrayFromImage(reader2) > 0,
            sitk.GetArrayFromImage(reader1) > 0,
            tuple(reader1.GetSpacing()[::-1]),  # SimpleITK (x, y, z) → array (z, y, x)
        ))
    return pairs


def ours_two_calls(pred, gt, spacing):
    return hd95(pred, gt, spacing), assd(pred, gt, spacing)


def medpy_two_calls(pred, gt, spacing):
    import medpy.metric.binary as medpy_binary

    return medpy_binary.hd95(pred, gt, spacing), medpy_binary.assd(pred, gt, spacing)


def best_time(function, args: tuple, repeats: int) -> tuple[float, object]:
    """Minimum wall time of ``function(*args)`` over ``repeats`` runs, and its result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function(*args)
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=Path, default=DEFAULT_SAMPLE)
    parser.add_argument("--synthetic", type=int, default=4, help="number of 24x256x256 pairs")
    parser.add_argument("--repeats", type=int, default=5, help="repeats of ours (MedPy: 2)")
    args = parser.parse_args()

    cases = sample_pairs(args.sample) if (args.sample / "masks").is_dir() else []
    rng = np.random.default_rng(0)
    for index in range(args.synthetic):
        cases.append((f"synthetic-{index} 24x256x256", gland_like(rng), gland_like(rng), (3.0, 0.75, 0.75)))

    header = (f"{'case':<28}{'shape':<15}{'HD95 ours':>11}{'HD95 MedPy':>12}{'ASSD ours':>11}"
              f"{'ASSD MedPy':>12}{'max|diff|':>11}{'ours ms':>9}{'MedPy ms':>10}{'ratio':>8}{'shared-EDT ratio':>18}")
    print(header)
    print("-" * len(header))
    total_ours = total_medpy = total_shared = 0.0
    for name, pred, gt, spacing in cases:
        t_ours, ours = best_time(ours_two_calls, (pred, gt, spacing), args.repeats)
        t_shared, _ = best_time(surface_metrics, (pred, gt, spacing), args.repeats)
        t_medpy, ref = best_time(medpy_two_calls, (pred, gt, spacing), 2)
        diff = max(abs(ours[0] - ref[0]), abs(ours[1] - ref[1]))
        if diff > 1e-9:
            raise SystemExit(f"{name}: values differ from MedPy by {diff}")
        total_ours, total_medpy, total_shared = total_ours + t_ours, total_medpy + t_medpy, total_shared + t_shared
        shape = "x".join(map(str, pred.shape))
        print(f"{name:<28}{shape:<15}{ours[0]:>11.4f}{ref[0]:>12.4f}{ours[1]:>11.4f}{ref[1]:>12.4f}"
              f"{diff:>11.1e}{t_ours * 1e3:>9.1f}{t_medpy * 1e3:>10.1f}{t_medpy / t_ours:>7.1f}x"
              f"{t_medpy / t_shared:>17.1f}x")
    print("-" * len(header))
    print(f"all values equal to MedPy (max |diff| <= 1e-9) on {len(cases)} cases")
    print(f"total: ours {total_ours * 1e3:.1f} ms (hd95 + assd as two calls), MedPy {total_medpy * 1e3:.1f} ms "
          f"→ {total_medpy / total_ours:.1f}x faster; one shared distance computation "
          f"(surface_metrics / evaluate_case): {total_medpy / total_shared:.1f}x faster")


if __name__ == "__main__":
    main()
