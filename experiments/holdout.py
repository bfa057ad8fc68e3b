"""Hold-out phase of Apostolidis et al. (Tables II and IV).

Run `python experiments/holdout.py --help` for the options; see tfrobseg.protocol for what a unit does.
"""

import sys

from tfrobseg.protocol import main

if __name__ == "__main__":
    sys.exit(main("holdout"))
