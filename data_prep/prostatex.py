#!/usr/bin/env python
"""Prepare ProstateX T2W axial MRI, or the built-in SYNTHETIC cohort, for tfrobseg.

Run `python data_prep/prostatex.py --help` for the options; see tfrobseg.dataset.cli.
"""

import sys

from tfrobseg.dataset.cli import main

if __name__ == "__main__":
    sys.exit(main())
