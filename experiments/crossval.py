"""Cross-validation phase of Apostolidis et al. (Tables I and III).

Run `python experiments/crossval.py --help` for the options; see tfrobseg.protocol for what a unit does.
"""

import sys

from tfrobseg.protocol import main

if __name__ == "__main__":
    sys.exit(main("crossval"))
