"""Dice (or HD95 / ASSD) against ε per attack: a table and a figure from a results folder's attack rows.

Usage: python figures/attack_comparison.py --results DIR [--unit crossval/recurrent_unet/dice/fold0]
       [--metric dice|hd95|assd] [--out DIR]
Writes <out>/tables/attacks.{csv,md} and <out>/figures/attacks_<metric>_vs_eps.{png,pdf} (<out> defaults to
--results); see tfrobseg.reporting.attack_comparison for what is averaged over what.
"""

import argparse
import sys
from pathlib import Path

from tfrobseg.console import add_verbose_option, setup_console
from tfrobseg.reporting.attack_comparison import (
    METRICS,
    check_metric,
    write_attack_comparison,
)

EPILOG = """exit codes: 0 table and figure written; 2 bad usage: unknown option or --metric, --results folder
does not exist, no attack rows in it, no such --unit (one line naming it)."""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="figures/attack_comparison.py", description=__doc__.splitlines()[0],
                                     epilog=EPILOG, allow_abbrev=False)
    parser.add_argument("--results", required=True, help="results folder of crossval.py / holdout.py / attack.py")
    parser.add_argument("--unit", default=None,
                        help="one unit, as phase/model/loss/fold<k> or phase/model/loss/holdout (default: all units, "
                             "their patients pooled)")
    parser.add_argument("--metric", default="dice", help=f"the figure's y axis: {', '.join(METRICS)} (default dice)")
    parser.add_argument("--out", default=None, help="folder for tables/ and figures/ (default: --results)")
    add_verbose_option(parser)
    args = parser.parse_args(argv)
    setup_console(args.verbose)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")  # "ε", "±" on a non-UTF-8 terminal
    results = Path(args.results)
    if not results.is_dir():
        print(f"error: --results {results}: no such folder (the --out of crossval.py / holdout.py)", file=sys.stderr)
        return 2
    try:
        check_metric(args.metric)
    except ValueError as exc:
        print(f"error: --metric: {exc}", file=sys.stderr)
        return 2
    from tfrobseg.experiment.store import collect_attack_rows

    rows = collect_attack_rows(results)
    try:
        paths = write_attack_comparison(rows, Path(args.out) if args.out else results, unit=args.unit,
                                        metric=args.metric)
    except (LookupError, ValueError) as exc:
        print(f"error: {results}: {exc}", file=sys.stderr)
        return 2
    for path in paths:
        print(f"wrote {path}")
    print(next(p for p in paths if p.name == "attacks.md").read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
