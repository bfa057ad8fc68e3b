"""Liu et al. (paper 002): FGSM, i-FGSM and targeted i-FGSM over the number of iterations, 2D vs 3D U-Net.

Run `python experiments/iterations.py --help` for the options; see tfrobseg.experiment.iterations for what it does and
docs/experiments/iterations.md for what our run shows.
"""

import sys

from tfrobseg.experiment.iterations import main

if __name__ == "__main__":
    sys.exit(main())
