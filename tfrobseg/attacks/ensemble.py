"""Worst-case ensemble ("robust Dice"): per case, the member attack that hurt the segmentation most.

After SEA (Croce et al., 2024): a single attack, even a strong one, overstates robustness, because
which attack succeeds differs from case to case. The ensemble runs several attacks at each ε and
keeps, per case (unit × patient × ε), the row of the member with the lowest Dice. Its mean Dice is
the *robust Dice*, never above the mean Dice of any member; the HD95 and ASSD reported with it are
those of each case's worst row (robust HD95 / ASSD), not the worst HD95 over the members.

The ensemble is a reduction over scored rows, not an attack of :data:`~tfrobseg.attacks.runner.ATTACKS`:
it computes nothing itself, so member rows recorded earlier (``experiments/attack.py``) are reused.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from tfrobseg.attack_names import DEFAULT_MEMBERS, ENSEMBLE, members_params

__all__ = ["CASE_KEYS", "DEFAULT_MEMBERS", "ENSEMBLE", "members_params", "worst_case"]

#: What identifies a case, where the rows have the column: the unit, the attack loss, the patient, ε.
CASE_KEYS = ("phase", "model", "loss", "fold", "attack_loss", "patient_id", "epsilon")


def worst_case(rows: pd.DataFrame, members: Sequence[str] | None = None) -> pd.DataFrame:
    """The ensemble's rows from its members' scored rows: per case, the member row with the lowest Dice.

    Args:
        rows: tidy rows (one per attack × case) of the member attacks, each member with one
            ``attack_params`` (``"{}"`` when the column is absent).
        members: the member names in order; ties in Dice go to the first. Default: the order in
            which the attacks first appear in ``rows``.

    Returns:
        One row per case: the worst member's row with ``attack="ensemble"``, ``worst_attack`` = that
        member, ``attack_params`` = :func:`members_params`. At ε = 0 every member's row is the clean
        prediction: the first member's row is kept and ``worst_attack`` is empty. Sorted by case.

    Raises:
        ValueError: no rows, a member without rows or with several ``attack_params``, a row of another
            attack, or a case that lacks some member's row (a robust Dice over fewer attacks than it
            claims).
    """
    if rows.empty:
        raise ValueError("worst_case: no member rows")
    data = rows.copy()
    if "attack_params" not in data:
        data["attack_params"] = "{}"
    present = list(dict.fromkeys(data["attack"]))
    members = list(dict.fromkeys(members)) if members is not None else present
    missing = [m for m in members if m not in present]
    extra = [a for a in present if a not in members]
    if missing or extra:
        raise ValueError(f"worst_case: members {members}; rows lack {missing or 'none'}, rows of non-members {extra or 'none'}")
    params = data.groupby("attack", sort=False)["attack_params"].unique()
    several = {m: list(p) for m, p in params.items() if len(p) > 1}
    if several:
        raise ValueError(f"worst_case: a member must have one attack_params, got {several}")
    keys = [k for k in CASE_KEYS if k in data.columns]
    data["epsilon"] = data["epsilon"].astype(float).round(10)  # as read back from CSV
    data["_order"] = data["attack"].map({m: i for i, m in enumerate(members)})
    counts = data.groupby(keys, dropna=False)["_order"].nunique()
    short = counts[counts < len(members)]
    if not short.empty:
        case = dict(zip(keys, short.index[0] if len(keys) > 1 else (short.index[0],)))
        raise ValueError(f"worst_case: {len(short)} case(s) lack a member's row, e.g. {case}")
    clean = np.isclose(data["epsilon"].to_numpy(), 0.0)
    # The clean case ranks by member order only; the attacked ones by Dice, then member order.
    data["_rank"] = np.where(clean, 0.0, data["dice"].astype(float))
    data = data.sort_values([*keys, "_rank", "_order"], kind="stable")
    worst = data.groupby(keys, dropna=False, sort=False).head(1).copy()
    worst["worst_attack"] = np.where(np.isclose(worst["epsilon"].to_numpy(), 0.0), "", worst["attack"])
    worst["attack"] = ENSEMBLE
    worst["attack_params"] = members_params([(m, str(params[m][0])) for m in members])
    return worst.drop(columns=["_order", "_rank"]).reset_index(drop=True)
