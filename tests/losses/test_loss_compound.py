"""Weighted-sum losses (tfrobseg.losses.compound): each is the weighted sum of its two terms."""

import numpy as np
import pytest
from loss_cases import rand_case, val

from tfrobseg import losses as L

#: (compound loss and its arguments, [(weight, term loss and the arguments it receives), ...]).
COMPOUNDS = [
    (("bce_dice", {"bce_weight": 0.3, "dice_weight": 1.7, "smooth": 0.5}),
     [(0.3, "bce", {}), (1.7, "dice", {"smooth": 0.5})]),
    (("bce_tversky", {"bce_weight": 0.0, "tversky_weight": 2.0, "alpha": 0.2, "beta": 0.9}),
     [(0.0, "bce", {}), (2.0, "tversky", {"alpha": 0.2, "beta": 0.9})]),
    (("dice_tversky", {"dice_weight": 0.6, "tversky_weight": 0.4, "alpha": 0.1, "smooth": 2.0}),
     [(0.6, "dice", {"smooth": 2.0}), (0.4, "tversky", {"alpha": 0.1, "smooth": 2.0})]),
    (("dice_focal", {"dice_weight": 0.5, "focal_weight": 3.0, "alpha": 0.6, "gamma": 1.0}),
     [(0.5, "dice", {"smooth": 1e-6}), (3.0, "focal", {"alpha": 0.6, "gamma": 1.0})]),
]


@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("compound, terms", COMPOUNDS, ids=[c[0][0] for c in COMPOUNDS])
def test_compound_is_the_weighted_sum_of_its_terms(compound, terms, from_logits):
    g, p = rand_case()
    x = np.log(p) - np.log1p(-p) if from_logits else p
    name, kwargs = compound
    expected = sum(w * val(L.get_loss(term, from_logits=from_logits, reduction=None, **kw), g, x)
                   for w, term, kw in terms)
    np.testing.assert_allclose(val(L.get_loss(name, from_logits=from_logits, reduction=None, **kwargs), g, x),
                               expected, rtol=1e-6, atol=1e-7)
