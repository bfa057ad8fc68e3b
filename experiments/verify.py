"""Check a results folder of crossval.py / holdout.py / study.py: settings, unit files, gaps, data; merge its rows.

Run `python experiments/verify.py --help`; see tfrobseg.experiment.verify for every check.
"""

import argparse
import sys

from tfrobseg.console import add_verbose_option, setup_console
from tfrobseg.experiment.verify import merge_results, verify_results

EPILOG = """exit codes: 0 no problem (warnings, running units and study-grid units not run are listed but
do not fail; with --merge the rows are merged); 1 at least one problem (one line each, then a summary;
nothing merged); 2 bad usage (unknown option, the folder does not exist or has no run.json)."""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="experiments/verify.py", description=__doc__.splitlines()[0],
                                     epilog=EPILOG, allow_abbrev=False)
    parser.add_argument("--results", required=True, help="results folder of crossval.py / holdout.py / study.py")
    parser.add_argument("--merge", action="store_true",
                        help="when there is no problem, write results_<phase>.csv from every unit's rows (after a "
                             "SLURM array or shards on several machines); then experiments/tables.py")
    add_verbose_option(parser)
    args = parser.parse_args(argv)
    setup_console(args.verbose)
    try:
        report = verify_results(args.results)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for finding in report.findings:
        print(finding.line())
    print(report.summary())
    if args.merge:
        if not report.ok:
            print("not merged: fix the problems above first (a re-run of the grid's command recomputes those units)")
        for phase, (path, rows) in merge_results(args.results).items() if report.ok else ():
            print(f"merged: {path} ({rows} rows of the {phase} units)")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
