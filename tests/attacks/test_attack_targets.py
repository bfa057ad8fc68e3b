"""Target masks of the targeted attack (tfrobseg.attacks.targets)."""

import numpy as np
import pytest

from tfrobseg.attacks import background_target, make_target, shifted_target
from tfrobseg.attacks.targets import check_target


def test_target_helpers_match_numpy():
    mask = np.zeros((1, 6, 7, 1), np.float32)
    mask[0, 1:3, 2:5] = 1
    expected = np.zeros_like(mask)
    expected[0, 3:5, 1:4] = 1  # moved 2 down and 1 left, nothing wraps
    np.testing.assert_array_equal(shifted_target(mask, (2, -1)).numpy(), expected)
    right = np.zeros_like(mask)
    right[0, 1:3, 5:7] = 1  # 3 to the right: the rightmost column falls off the border
    np.testing.assert_array_equal(shifted_target(mask, 3).numpy(), right)
    np.testing.assert_array_equal(make_target(mask, 3).numpy(), right)
    np.testing.assert_array_equal(make_target(mask, "background").numpy(), background_target(mask).numpy())
    np.testing.assert_array_equal(make_target(mask, "foreground").numpy(), np.ones_like(mask))
    np.testing.assert_array_equal(make_target(mask, lambda m: 1 - m).numpy(), 1 - mask)
    with pytest.raises(ValueError):
        make_target(mask, "everything")
    with pytest.raises(ValueError):
        shifted_target(mask[0], 1)


@pytest.mark.parametrize("target, match", [("everything", "target must be"), ((1, 2, 3), "shift"), (("a", 1), "shift")])
def test_bad_targets_are_rejected_before_building(target, match):
    with pytest.raises(ValueError, match=match):
        check_target(target)
    with pytest.raises(ValueError, match=match):
        make_target(np.zeros((1, 4, 4, 1), np.float32), target)
