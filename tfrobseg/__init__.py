"""tfrobseg: adversarial robustness of medical image segmentation models and losses."""

__version__ = "0.1.0"
