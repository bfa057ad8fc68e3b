"""Figures 1–3 of Apostolidis et al. and robustness curves from a results folder.

Usage: python figures/make_figures.py --results results/builtin [--out DIR]
Figures whose trained unit is absent are skipped with a message (see tfrobseg.reporting.figures).
"""

import argparse
import sys

from tfrobseg.console import add_verbose_option, setup_console
from tfrobseg.errors import UnitFilesError
from tfrobseg.reporting.figures import make_figures

EPILOG = """exit codes: 0 figures written (those whose unit was not run are listed as skipped); 1 no
completed unit in the folder, or a unit's model differs from its checksum or cannot be loaded (one line
naming the unit; nothing is written); 2 bad usage (unknown option, --results folder does not exist)."""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="figures/make_figures.py", description=__doc__.splitlines()[0],
                                     epilog=EPILOG, allow_abbrev=False)
    parser.add_argument("--results", required=True, help="results folder of crossval.py / holdout.py")
    parser.add_argument("--out", default=None, help="figure folder (default: <results>/figures)")
    add_verbose_option(parser)
    args = parser.parse_args(argv)
    setup_console(args.verbose)
    try:
        report = make_figures(args.results, args.out)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (LookupError, UnitFilesError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in report["written"]:
        print(f"wrote {path}")
    for message in report["missing"]:
        print(f"skipped: {message}")
    print(f"most robust loss: {report['most_robust_loss']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
