#!/usr/bin/env python
"""Data preparation benchmark on the real ProstateX sample (3 patients).

Prints seconds per patient with 1 and 2 worker processes (full pipeline, CLI defaults unless
--n4-iterations is given), and the N4 time on ProstateX-0000 fitted on a 4x in-plane shrunk copy vs
at full resolution (same iterations for both), with the Pearson correlation of the two corrected
images (all voxels and inside the Otsu body mask).

    python benchmarks/data_prep.py [--sample ../shared/data/prostatex-sample] [--n4-iterations 50,50,50,50]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]

import numpy as np
import SimpleITK as sitk

from tfrobseg.dataset.config import PrepConfig
from tfrobseg.dataset.dicom import read_series
from tfrobseg.dataset.discovery import choose_t2_series, find_patients, patient_series
from tfrobseg.dataset.prepare import prepare_cohort
from tfrobseg.dataset.preprocessing import n4_bias_correction


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def time_cohort(sample: Path, workers: int, config: PrepConfig) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        m = prepare_cohort(sample / "images", Path(tmp) / "out", masks=sample / "masks" / "whole_gland",
                           second_masks=sample / "masks" / "whole_gland_second_reader",
                           image_list=sample / "image_list.csv", config=config, workers=workers,
                           progress=False, log=lambda s: None)
        elapsed = time.perf_counter() - t0
    assert not m.skipped, m.skipped
    return elapsed / len(m.patients)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sample", type=Path, default=REPO.parent / "shared" / "data" / "prostatex-sample")
    p.add_argument("--n4-iterations", type=_ints, default=PrepConfig().n4_iterations,
                   help="N4 iterations per level for the pipeline timing (default: the CLI default)")
    p.add_argument("--n4-compare-iterations", type=_ints, default=(20, 20),
                   help="N4 iterations for the shrink / no-shrink comparison (default 20,20: full-resolution "
                        "N4 with 4 x 50 takes minutes per patient)")
    args = p.parse_args()
    config = PrepConfig(n4_iterations=args.n4_iterations)
    print(f"machine: {os.cpu_count()} CPU cores; sample: {args.sample}")
    print(f"pipeline (N4 shrink {config.n4_shrink}, iterations {list(config.n4_iterations)}):")
    per = {w: time_cohort(args.sample, w, config) for w in (1, 2)}
    for w, s in per.items():
        print(f"  workers={w}: {s:6.1f} s per patient")
    print(f"  speed-up 2 vs 1 workers: {per[1] / per[2]:.2f}x")

    source = find_patients(args.sample / "images")["ProstateX-0000"]
    image = read_series(choose_t2_series("ProstateX-0000", patient_series(source))[0])
    its = args.n4_compare_iterations
    results = {}
    for shrink in (4, 1):
        t0 = time.perf_counter()
        results[shrink] = sitk.GetArrayFromImage(n4_bias_correction(image, shrink_factor=shrink, iterations=its))
        results[shrink, "t"] = time.perf_counter() - t0
    body = sitk.GetArrayFromImage(sitk.OtsuThreshold(sitk.Cast(image, sitk.sitkFloat32), 0, 1, 200)).astype(bool)
    r_all = np.corrcoef(results[4].ravel(), results[1].ravel())[0, 1]
    r_body = np.corrcoef(results[4][body], results[1][body])[0, 1]
    print(f"N4 on ProstateX-0000 {image.GetSize()}, iterations {list(its)}:")
    print(f"  shrink 4 (in-plane): {results[4, 't']:6.1f} s;  no shrink: {results[1, 't']:6.1f} s;  "
          f"speed-up {results[1, 't'] / results[4, 't']:.1f}x")
    print(f"  correlation of the corrected images: {r_all:.6f} (all voxels), {r_body:.6f} (Otsu body mask)")


if __name__ == "__main__":
    main()
