"""tfrobseg.dataset.realism: contrast-to-noise ratio and gland volume, against a brute-force reference."""

import numpy as np
import pytest

from tfrobseg.dataset.realism import cohort_realism, contrast_to_noise, gland_volume_ml

SPACING = (3.0, 1.0, 1.5)  # (z, y, x) mm: anisotropic, so a ring in voxels would differ from one in mm


def _brute_force_cnr(image, mask, spacing, ring_mm):
    """Ring by the distance from every voxel to every gland voxel (no distance transform)."""
    grid = np.stack(np.meshgrid(*[np.arange(n) * s for n, s in zip(mask.shape, spacing)], indexing="ij"), -1)
    gland_points = grid[mask]
    dist = np.sqrt(((grid[..., None, :] - gland_points) ** 2).sum(-1)).min(-1)
    ring = (dist <= ring_mm) & ~mask
    return (image[mask].mean() - image[ring].mean()) / image[ring].std()


def _volume(seed=0):
    rng = np.random.default_rng(seed)
    mask = np.zeros((6, 14, 12), bool)
    mask[2:4, 5:9, 4:7] = True
    mask[3, 4, 5] = True
    image = rng.normal(0, 1, mask.shape) + 0.8 * mask
    return image, mask


def test_cnr_matches_brute_force_ring_in_mm():
    image, mask = _volume()
    for ring_mm in (2.0, 3.0, 5.0):
        assert contrast_to_noise(image, mask, SPACING, ring_mm=ring_mm) == pytest.approx(
            _brute_force_cnr(image, mask, SPACING, ring_mm), rel=1e-9)


def test_cnr_sign_says_which_side_is_brighter():
    image, mask = _volume()
    assert contrast_to_noise(image, mask, SPACING) > 0
    assert contrast_to_noise(-image, mask, SPACING) < 0


def test_gland_volume_by_hand():
    _, mask = _volume()
    assert gland_volume_ml(mask, SPACING) == pytest.approx(25 * 3.0 * 1.0 * 1.5 / 1000)


@pytest.mark.parametrize("mask, message", [(np.zeros((6, 14, 12)), "empty"), (np.ones((6, 14, 12)), "ring")])
def test_cnr_refuses_undefined_cases(mask, message):
    with pytest.raises(ValueError, match=message):
        contrast_to_noise(np.random.default_rng(0).normal(size=(6, 14, 12)), mask, SPACING)


def test_cnr_refuses_mismatched_shapes():
    image, mask = _volume()
    with pytest.raises(ValueError, match="same 3-D"):
        contrast_to_noise(image[:-1], mask, SPACING)


def test_builtin_phantoms_look_like_the_real_sample(tiny_cohort):
    """Real ProstateX-0000/-0001: CNR +0.33 / +0.24, 44 / 32 mL (tfrobseg.dataset.realism)."""
    table = cohort_realism(tiny_cohort)
    assert len(table) == 6 and table["synthetic"].all()
    assert table["volume_ml"].between(18, 85).all()
    assert 0.29 * 0.5 <= table["cnr"].median() <= 0.29 * 1.5  # within ±50 % of the real sample's median
    assert (table["cnr"] < 1.0).all()  # never a give-away step at the border
