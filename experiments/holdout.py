"""Hold-out phase of Apostolidis et al. (Tables II and IV).

Run `python experiments/holdout.py --help` for the options; see tfrobseg.experiment for what a unit does.
"""

import sys

from tfrobseg.experiment.cli import main

if __name__ == "__main__":
    sys.exit(main("holdout"))
