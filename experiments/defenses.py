"""Defenses against the attacks, compared with the undefended baseline as Liu et al. compare theirs.

Run `python experiments/defenses.py --help` for the options; see tfrobseg.experiment.defenses for what it does
and docs/defenses.md for the defenses.
"""

import sys

from tfrobseg.experiment.defenses import main

if __name__ == "__main__":
    sys.exit(main())
