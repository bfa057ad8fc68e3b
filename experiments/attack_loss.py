"""Wang & Xu (paper 001): FGSM crafted with the training loss, BCE, focal and Dice, and its attack success.

Run `python experiments/attack_loss.py --help` for the options; see tfrobseg.experiment.attack_loss for what it
does and docs/experiments/attack_loss.md for what our run shows.
"""

import sys

from tfrobseg.experiment.attack_loss import main

if __name__ == "__main__":
    sys.exit(main())
