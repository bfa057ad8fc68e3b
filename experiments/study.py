"""The whole study of Apostolidis et al.: cross-validation and hold-out (Tables I-IV) into one results folder.

Run `python experiments/study.py --help` for the options; `--dry-run` says what it would cost, `--executor slurm`
runs it on a SLURM cluster as one job array (docs/cluster.md).
"""

import sys

from tfrobseg.experiment.cli import main

if __name__ == "__main__":
    sys.exit(main("study"))
