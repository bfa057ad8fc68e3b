"""tfrobseg.dataset.splits: the paper's 70/15/15 patient split (143/30/31 of 204) and 3 folds inside train."""

import pytest

from tfrobseg.dataset.splits import make_split, split_sizes


@pytest.mark.parametrize("n, expected", [(204, (143, 30, 31)), (12, (8, 2, 2)), (3, (2, 0, 1)), (0, (0, 0, 0))])
def test_split_sizes(n, expected):
    assert split_sizes(n) == expected


def test_split_by_patient_disjoint_and_folds_partition_train():
    ids = [f"ProstateX-{i:04d}" for i in range(204)]
    s = make_split(ids, seed=3)
    assert (len(s["train"]), len(s["val"]), len(s["test"])) == (143, 30, 31)
    parts = [set(s["train"]), set(s["val"]), set(s["test"])]
    assert set().union(*parts) == set(ids)
    assert all(not (a & b) for i, a in enumerate(parts) for b in parts[i + 1:])
    assert sorted(len(f) for f in s["folds"]) == [47, 48, 48]
    assert sorted(p for f in s["folds"] for p in f) == sorted(s["train"])


def test_split_is_seeded_and_order_independent():
    ids = [f"P{i:03d}" for i in range(30)]
    assert make_split(ids, seed=1) == make_split(list(reversed(ids)), seed=1)
    assert make_split(ids, seed=1)["test"] != make_split(ids, seed=2)["test"]
    with pytest.raises(ValueError, match="duplicates"):
        make_split(["a", "a"])
