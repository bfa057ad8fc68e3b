"""Attack the trained units of a results folder with other attacks, without retraining.

Run `python experiments/attack.py --help` for the options; see tfrobseg.experiment.attack_units for what it does.
"""

import sys

from tfrobseg.experiment.attack_units import main

if __name__ == "__main__":
    sys.exit(main())
