"""Figures 1–3 of Apostolidis et al. and robustness curves from a results folder.

Usage: python figures/make_figures.py --results results/builtin [--out DIR] [--no-train]
A figure whose trained unit the folder lacks (e.g. Figure 1, ResU-Net, after the main command, which trains
only the Recurrent U-Net) gets that one unit trained with the folder's settings into <results>/figure_units,
outside the folder's tables; --no-train skips such a figure instead (see tfrobseg.reporting.figures).
"""

import argparse
import sys

from tfrobseg.console import add_verbose_option, setup_console
from tfrobseg.errors import FigureUnitError, UnitFilesError
from tfrobseg.reporting.figures import make_figures

EPILOG = """exit codes: 0 figures written (with --no-train, those whose unit was not run are listed as skipped);
1 no completed unit in the folder, a unit's model differs from its checksum or cannot be loaded, or a figure's
missing unit cannot be trained (the folder's run.json or settings unreadable, its data changed, or the training
failed): one line naming the unit or file, and no figure is written; 2 bad usage (unknown option, --results
folder does not exist)."""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="figures/make_figures.py", description=__doc__.splitlines()[0],
                                     epilog=EPILOG, allow_abbrev=False)
    parser.add_argument("--results", required=True, help="results folder of crossval.py / holdout.py")
    parser.add_argument("--out", default=None, help="figure folder (default: <results>/figures)")
    parser.add_argument("--no-train", action="store_true",
                        help="skip a figure whose unit the folder lacks instead of training it into "
                             "<results>/figure_units with the folder's settings")
    add_verbose_option(parser)
    args = parser.parse_args(argv)
    setup_console(args.verbose)
    try:
        report = make_figures(args.results, args.out, train=not args.no_train)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (LookupError, UnitFilesError, FigureUnitError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in report["trained"]:
        print(f"trained {path}")
    for path in report["written"]:
        print(f"wrote {path}")
    for message in report["missing"]:
        print(f"skipped: {message}")
    print(f"most robust loss: {report['most_robust_loss']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
