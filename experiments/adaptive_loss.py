"""Paper 003: 3D U-Net and dilated 3D U-Net with Tversky, Dice + CE and adaptive TverskyCE losses, clean and under FGSM.

Run `python experiments/adaptive_loss.py --help` for the options; see tfrobseg.experiment.adaptive_loss for what it does and
docs/experiments/adaptive_loss.md for what our run shows.
"""

import sys

from tfrobseg.experiment.adaptive_loss import main

if __name__ == "__main__":
    sys.exit(main())
