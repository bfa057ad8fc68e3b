"""Cross-validation phase of Apostolidis et al. (Tables I and III).

Run `python experiments/crossval.py --help` for the options; see tfrobseg.experiment for what a unit does.
"""

import sys

from tfrobseg.experiment.cli import main

if __name__ == "__main__":
    sys.exit(main("crossval"))
