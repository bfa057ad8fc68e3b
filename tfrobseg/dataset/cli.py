"""Command line of ``data_prep/prostatex.py``: prepare ProstateX T2W axial MRI (or the built-in synthetic cohort) for tfrobseg.

Real data:
    python data_prep/prostatex.py --images PROSTATEx/ --masks masks/whole_gland \
        [--second-masks masks/reader2] [--image-list image_list.csv] [--out data/prostatex]
Built-in SYNTHETIC cohort (no --images): python data_prep/prostatex.py  (-> data/builtin)

Exit code: 0 all patients prepared, 1 some patient skipped (listed at the end and in manifest.json),
2 fatal error (empty input folder, bad option, --strict stop).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tfrobseg.console import add_verbose_option, setup_console
from tfrobseg.dataset.config import PrepConfig
from tfrobseg.dataset.manifest import Manifest
from tfrobseg.errors import InputError


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    return values


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    d = PrepConfig()
    p = argparse.ArgumentParser(prog="data_prep/prostatex.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", help="TCIA download (<PatientID>/<study>/<series>/*.dcm) or one .mha/.nii.gz per "
                   "patient; omit for the built-in synthetic cohort")
    p.add_argument("--masks", help="folder of <PatientID>.nii.gz whole-gland masks (reader 1)")
    p.add_argument("--second-masks", help="folder of second-reader masks, same naming")
    p.add_argument("--image-list", help="PROSTATEx image_list.csv naming each patient's T2 series")
    p.add_argument("--out", help="output folder (default data/prostatex; data/builtin without --images)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--overwrite", action="store_true", help="prepare every patient again")
    p.add_argument("--strict", action="store_true", help="stop at the first bad patient")
    p.add_argument("--preview", action="store_true", help="write <out>/preview.png (slices + mask outlines)")
    p.add_argument("--seed", type=int, default=0, help="seed of the patient split (default 0)")
    p.add_argument("--mask-label", type=int, default=None,
                   help="masks are label maps; this label is the gland (default: masks must be {0,1})")
    p.add_argument("--spacing", type=_floats, default=d.spacing_xyz, help="x,y,z mm (default 0.5,0.5,3.0)")
    p.add_argument("--size", type=_ints, default=d.size_hw, help="H,W in-plane size (default 256,256)")
    p.add_argument("--n4-shrink", type=int, default=d.n4_shrink, help=f"N4 in-plane shrink (default {d.n4_shrink})")
    p.add_argument("--n4-iterations", type=_ints, default=d.n4_iterations,
                   help="N4 iterations per level (default 50,50,50,50)")
    p.add_argument("--no-n4", action="store_true", help="skip N4 bias-field correction")
    p.add_argument("--sigma", type=float, default=d.smoothing_sigma, help="Gaussian sigma (default 1.0)")
    p.add_argument("--sigma-unit", choices=("voxel", "mm"), default=d.smoothing_unit, help="unit of --sigma")
    p.add_argument("--n-synthetic", type=int, default=12, help="patients of the built-in cohort (default 12)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_verbose_option(p)
    return p


def _prepare(args: argparse.Namespace, log) -> tuple[Path, Manifest]:
    from tfrobseg.dataset.prepare import prepare_cohort
    from tfrobseg.dataset.synthetic import prepare_builtin

    if args.images is None:
        out = Path(args.out or "data/builtin")
        log(f"No --images: preparing the built-in SYNTHETIC cohort ({args.n_synthetic} patients) in {out}")
        prepare_builtin(out, n_patients=args.n_synthetic, seed=args.seed, workers=args.workers,
                        overwrite=args.overwrite, progress=not args.quiet)
        return out, Manifest.read(out)
    config = PrepConfig(spacing_xyz=args.spacing, size_hw=args.size, n4=not args.no_n4, n4_shrink=args.n4_shrink,
                        n4_iterations=args.n4_iterations, smoothing_sigma=args.sigma, smoothing_unit=args.sigma_unit,
                        mask_label=args.mask_label)
    out = Path(args.out or "data/prostatex")
    manifest = prepare_cohort(args.images, out, masks=args.masks, second_masks=args.second_masks,
                              image_list=args.image_list, config=config, workers=args.workers,
                              overwrite=args.overwrite, strict=args.strict, seed=args.seed,
                              progress=not args.quiet, log=log)
    return out, manifest


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``data_prep/prostatex.py``; returns the exit code (0 / 1 some skipped / 2 fatal)."""
    args = build_parser().parse_args(argv)
    setup_console(args.verbose)
    from tqdm.auto import tqdm

    log = tqdm.write
    t0 = time.perf_counter()
    try:
        out, manifest = _prepare(args, log)
    except (InputError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.preview:
        from tfrobseg.dataset.preview import write_preview

        log(f"preview: {write_preview(out)}")
    log(manifest.summary())
    log(f"output: {out} ({time.perf_counter() - t0:.0f} s)")
    return 1 if manifest.skipped else 0
