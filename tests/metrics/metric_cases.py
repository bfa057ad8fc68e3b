"""Masks and the MedPy reference shared by the metric tests."""

import medpy.metric.binary as medpy_binary
import numpy as np
import pytest
from scipy import ndimage

from tfrobseg import metrics as M

ANISO = (0.5, 0.5, 3.0)  # array axis order; the last axis is the thick one


def cube(shape, start, size):
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(s, s + size) for s in start)] = True
    return mask


def blob(rng, shape, sigma, level):
    """Smoothed noise thresholded into several irregular components (seeded)."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return field > level * field.std()


MEDPY = {
    "dice": lambda p, g, s: medpy_binary.dc(p, g),
    "hd95": medpy_binary.hd95,
    "assd": medpy_binary.assd,
    "hausdorff": medpy_binary.hd,
    "sensitivity": lambda p, g, s: medpy_binary.sensitivity(p, g),
    "specificity": lambda p, g, s: medpy_binary.specificity(p, g),
    "precision": lambda p, g, s: medpy_binary.precision(p, g),
}


def assert_matches_medpy(pred, gt, spacing, keys=tuple(MEDPY)):
    ours = M.evaluate_case(pred, gt, spacing)
    for key in keys:
        assert ours[key] == pytest.approx(MEDPY[key](pred, gt, spacing), abs=1e-6), key
        assert isinstance(ours[key], float)
