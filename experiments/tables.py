"""Tables I–IV of Apostolidis et al. (Markdown, LaTeX, CSV), beside the published values.

Usage: python experiments/tables.py --results results/builtin [--out DIR] [--std-over patients|cells]
       [--empty-predictions penalty|exclude]
See tfrobseg.reporting.tables for exactly what is averaged over what.
"""

import argparse
import sys
from pathlib import Path

from tfrobseg.console import add_verbose_option, setup_console
from tfrobseg.experiment.store import collect_metrics, run_defense
from tfrobseg.experiment.units import MARKER
from tfrobseg.reporting.tables import EMPTY_PREDICTIONS, STD_OVER, write_tables

EPILOG = """exit codes: 0 tables written; 1 no completed unit in the folder; 2 bad usage (unknown option,
--results folder does not exist)."""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="experiments/tables.py", description=__doc__.splitlines()[0],
                                     epilog=EPILOG, allow_abbrev=False)
    parser.add_argument("--results", required=True, help="results folder of crossval.py / holdout.py")
    parser.add_argument("--out", default=None, help="table folder (default: <results>/tables)")
    parser.add_argument("--std-over", choices=STD_OVER, default="patients",
                        help="the ± is the sample std over the per-patient values (patient x fold x eps, default, "
                             "as the published tables) or over the cells (one network at one eps)")
    parser.add_argument("--empty-predictions", choices=EMPTY_PREDICTIONS, default="penalty",
                        help="empty predictions enter HD95/ASD with the penalty distance (default) or are excluded "
                             "from them (MedPy's convention; their count is reported)")
    add_verbose_option(parser)
    args = parser.parse_args(argv)
    setup_console(args.verbose)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")  # "±" on a non-UTF-8 terminal
    if not Path(args.results).is_dir():
        print(f"error: --results {args.results}: no such folder (the --out of crossval.py / holdout.py)",
              file=sys.stderr)
        return 2
    results = collect_metrics(args.results)
    if results.empty:
        print(f"error: no completed units (with {MARKER}) under {args.results}", file=sys.stderr)
        return 1
    out = Path(args.out) if args.out else Path(args.results) / "tables"
    written = write_tables(results, out, std_over=args.std_over, empty_predictions=args.empty_predictions,
                           defense=run_defense(args.results))
    for name in sorted(written.paths):
        print(f"wrote {written.paths[name]}")
    print(written.overview.read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
