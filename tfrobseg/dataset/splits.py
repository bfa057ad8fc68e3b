"""Seeded patient-level split of the study (Apostolidis et al., Sec. II-G).

70 % training / 15 % validation / 15 % hold-out test, then 3 cross-validation folds inside the
training part; always by patient, never by slice. Sizes: ``n_train = round(0.70 n)``, the rest
halved with the odd one to the test set: 204 patients -> 143 / 30 / 31 as in the paper.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["make_split", "split_sizes"]


def split_sizes(n: int, train_fraction: float = 0.70) -> tuple[int, int, int]:
    """(train, val, test) sizes for ``n`` patients."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 0.0 < train_fraction <= 1.0:
        raise ValueError(f"train_fraction must be in (0, 1], got {train_fraction}")
    n_train = min(n, int(np.floor(train_fraction * n + 0.5)))
    n_val = (n - n_train) // 2
    return n_train, n_val, n - n_train - n_val


def make_split(patient_ids: Sequence[str], *, seed: int = 0, n_folds: int = 3,
               train_fraction: float = 0.70) -> dict[str, list]:
    """Seeded split ``{"train", "val", "test": [...], "folds": [[...] x n_folds]}``.

    The ids are sorted first, so the split depends only on the set of ids and the seed. The folds
    partition "train" (``numpy.array_split`` of its seeded order: sizes differ by at most one).
    """
    if n_folds < 1:
        raise ValueError(f"n_folds must be >= 1, got {n_folds}")
    ids = sorted(set(patient_ids))
    if len(ids) != len(patient_ids):
        raise ValueError("patient_ids contains duplicates")
    rng = np.random.default_rng(seed)
    order = [ids[i] for i in rng.permutation(len(ids))]
    n_train, n_val, _ = split_sizes(len(ids), train_fraction)
    train, val, test = order[:n_train], order[n_train:n_train + n_val], order[n_train + n_val:]
    folds = [sorted(f.tolist()) for f in np.array_split(np.array(train, dtype=object), n_folds)]
    return {"train": sorted(train), "val": sorted(val), "test": sorted(test), "folds": folds}
