"""Thakur (paper 004): focal vs AG-BCE vs adaptive focal loss on two readers' masks, clean and under FGSM.

Run `python experiments/two_readers.py --help` for the options; see tfrobseg.experiment.two_readers for what it
does and docs/experiments/two_readers.md for what our run shows.
"""

import sys

from tfrobseg.experiment.two_readers import main

if __name__ == "__main__":
    sys.exit(main())
