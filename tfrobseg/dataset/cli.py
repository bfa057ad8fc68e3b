"""Command line of ``data_prep/prostatex.py``: prepare ProstateX T2W axial MRI (or the built-in synthetic cohort) for tfrobseg.

Real data:
    python data_prep/prostatex.py --images PROSTATEx/ --masks masks/whole_gland \
        [--second-masks masks/reader2] [--zones masks/zones [--zone-labels 1,2]] [--image-list image_list.csv] \
        [--out data/prostatex]
Built-in SYNTHETIC cohort (no --images): python data_prep/prostatex.py  (-> data/builtin)

A run into an existing --out adds its patients to the earlier ones (prepare a cohort in batches);
--remove-patients ID[,ID...] drops some (with no --images: only that). One run at a time per --out.

Exit codes:
  0  every patient prepared (or nothing to do)
  1  some patient skipped (bad input; listed at the end and under "skipped" in manifest.json)
  2  fatal, nothing more done: a bad option or folder (--out a file or not writable, --masks matching
     no patient, an empty --images), another run preparing the same --out, a record that cannot be
     written (disk full, permission denied), or the --strict stop
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tfrobseg.console import add_verbose_option, setup_console
from tfrobseg.dataset.config import BUILTIN_PATIENTS, ZONE_LABELS, PrepConfig
from tfrobseg.dataset.manifest import Manifest
from tfrobseg.errors import InputError
from tfrobseg.locks import LockHeld


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


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _ids(text: str) -> tuple[str, ...]:
    ids = tuple(v.strip() for v in text.split(",") if v.strip())
    if not ids:
        raise argparse.ArgumentTypeError(f"expected patient ids separated by commas, got {text!r}")
    return ids


def build_parser() -> argparse.ArgumentParser:
    d = PrepConfig()
    p = argparse.ArgumentParser(prog="data_prep/prostatex.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", help="TCIA download (<PatientID>/<study>/<series>/*.dcm) or one .mha/.nii.gz per "
                   "patient; omit for the built-in synthetic cohort")
    p.add_argument("--masks", help="folder of <PatientID>.nii.gz whole-gland masks (reader 1)")
    p.add_argument("--second-masks", help="folder of second-reader masks, same naming")
    p.add_argument("--zones", help="folder of zonal masks (peripheral and transition zone in one label map per "
                   "patient), same naming")
    p.add_argument("--zone-labels", type=_ints, default=ZONE_LABELS, metavar="PZ,TZ",
                   help="values of the peripheral and the transition zone in the --zones maps (default 1,2)")
    p.add_argument("--image-list", help="PROSTATEx image_list.csv naming each patient's T2 series")
    p.add_argument("--out", help="output folder (default data/prostatex; data/builtin without --images)")
    p.add_argument("--workers", type=_positive, default=1, help="worker processes (default 1)")
    p.add_argument("--overwrite", action="store_true",
                   help="prepare this run's patients again (all earlier ones too when the parameters changed)")
    p.add_argument("--remove-patients", type=_ids, default=(), metavar="ID[,ID...]",
                   help="drop these patients from --out (manifest and records); without --images only that")
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
    p.add_argument("--n-synthetic", type=int, default=BUILTIN_PATIENTS,
                   help=f"patients of the built-in cohort (default {BUILTIN_PATIENTS})")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_verbose_option(p)
    return p


def _prepare(args: argparse.Namespace, log) -> tuple[Path, Manifest]:
    from tfrobseg.dataset.prepare import prepare_cohort
    from tfrobseg.dataset.synthetic import prepare_builtin

    if args.images is None and args.remove_patients:
        from tfrobseg.dataset.prepare import remove_patients

        if args.out is None:
            raise InputError("--remove-patients without --images needs --out (the prepared folder)")
        return Path(args.out), remove_patients(args.out, args.remove_patients, log=log)
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
    manifest = prepare_cohort(args.images, out, masks=args.masks, second_masks=args.second_masks, zones=args.zones,
                              zone_labels=args.zone_labels, image_list=args.image_list, config=config, workers=args.workers,
                              overwrite=args.overwrite, strict=args.strict, seed=args.seed,
                              progress=not args.quiet, log=log, remove=args.remove_patients)
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
    except LockHeld as exc:
        print(f"error: {exc.path.parent} is being prepared by another run ({exc}); wait for it to finish "
              "or use another --out", file=sys.stderr)
        return 2
    except (InputError, ValueError, OSError) as exc:  # OSError: OutputError, FileNotFoundError, disk full
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.preview:
        from tfrobseg.dataset.preview import write_preview

        log(f"preview: {write_preview(out)}")
    log(manifest.summary())
    log(f"output: {out} ({time.perf_counter() - t0:.0f} s)")
    return 1 if manifest.skipped else 0
