#!/usr/bin/env python
"""Gland volume and gland-to-surroundings contrast-to-noise ratio of prepared folders, side by side.

Usage: python data_prep/realism.py --data data/builtin --data data/prostatex
(see tfrobseg.dataset.realism for the definition; exit 2 when a folder is not a prepared folder).
"""

import argparse
import sys

from tfrobseg.console import add_verbose_option, setup_console


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="data_prep/realism.py", description=__doc__.splitlines()[0],
                                     epilog="exit codes: 0 table printed; 2 a --data folder has no readable "
                                            "manifest.json or no labelled patient", allow_abbrev=False)
    parser.add_argument("--data", action="append", required=True, help="prepared folder (repeat to compare)")
    parser.add_argument("--ring-mm", type=float, default=5.0, help="ring width around the gland, mm (default 5)")
    add_verbose_option(parser)
    args = parser.parse_args(argv)
    setup_console(args.verbose)
    from tfrobseg.dataset.realism import cohort_realism

    for folder in args.data:
        try:
            table = cohort_realism(folder, ring_mm=args.ring_mm)
        except (OSError, ValueError) as exc:
            print(f"error: --data {folder}: {exc}", file=sys.stderr)
            return 2
        if table.empty:
            print(f"error: --data {folder}: no labelled patient", file=sys.stderr)
            return 2
        kind = "SYNTHETIC" if table["synthetic"].all() else "real"
        print(f"{folder} ({kind}, {len(table)} labelled patients, ring {args.ring_mm:g} mm)")
        print(table.drop(columns="synthetic").to_string(index=False, float_format=lambda v: f"{v:.2f}"))
        print(f"median: volume {table['volume_ml'].median():.1f} mL, CNR {table['cnr'].median():+.2f} "
              f"(range {table['cnr'].min():+.2f} .. {table['cnr'].max():+.2f}); gland brighter than its ring in "
              f"{int((table['cnr'] > 0).sum())}/{len(table)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
