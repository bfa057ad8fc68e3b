"""Which rows of a results folder belong to the study's grid, and which of its units are missing.

Tables I–IV of Apostolidis et al. (Sections II-G and III) average the study's 5 models × 6 losses
(× 3 cross-validation folds) at ε ∈ {0.1, …, 1.0} (:mod:`tfrobseg.study`). A results folder can
hold more than that (another loss or model, a fold beyond the third, other ε: they go to the
"additional" table, never into Tables I–IV) or less (a model or a unit not run: the table rows
that lack units are marked and the missing units named).

A *unit* is one trained network: (model, loss, fold) of the cross-validation, (model, loss) of
the hold-out, whose rows carry fold :data:`HOLDOUT_FOLD` (:mod:`tfrobseg.experiment.runner`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tfrobseg import study
from tfrobseg.experiment.units import PHASES, Unit
from tfrobseg.reporting.stats import require_columns

__all__ = ["GRID_COLUMNS", "HOLDOUT_FOLD", "describe_missing", "expected_folds", "outside_reasons", "study_order",
           "unit_status"]

#: The fold value of hold-out rows, as the runner writes it.
HOLDOUT_FOLD = -1
GRID_COLUMNS = ("phase", "model", "loss", "fold", "epsilon")


def study_order(keys, by: str) -> list:
    """``keys`` sorted as in the study's tables (``by``: "model" or "loss"), others after them, alphabetically."""
    order = study.MODELS if by == "model" else study.LOSSES
    return sorted(keys, key=lambda k: (order.index(k) if k in order else len(order), str(k)))


def expected_folds(phase: str) -> tuple[int, ...]:
    """The fold values of the study's units in ``phase``: 0 … N_FOLDS − 1, or the hold-out's one."""
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
    return tuple(range(study.N_FOLDS)) if phase == "crossval" else (HOLDOUT_FOLD,)


def _is_study_epsilon(eps: np.ndarray) -> np.ndarray:
    # Tolerance: ε values read back from CSV can differ from the study's in the last bits.
    return np.isclose(eps[:, None], np.asarray(study.EPSILONS)[None, :]).any(axis=1)


def outside_reasons(df: pd.DataFrame) -> pd.Series:
    """Per row, ``""`` inside the study's grid, else what is outside it (e.g. ``"loss focal"``).

    Inside = a study phase, model and loss, a fold of that phase (:func:`expected_folds`) and a
    study ε (0 included: the clean tables use it).
    """
    require_columns(df, GRID_COLUMNS, "study grid")
    fold = pd.to_numeric(df["fold"], errors="coerce")
    crossval_fold = fold.isin(expected_folds("crossval")).to_numpy()
    holdout_fold = (fold == HOLDOUT_FOLD).to_numpy()
    eps_ok = _is_study_epsilon(df["epsilon"].to_numpy(dtype=float))
    reasons = []
    for phase, model, loss, f, cv_ok, ho_ok, e_ok in zip(df["phase"], df["model"], df["loss"], df["fold"],
                                                          crossval_fold, holdout_fold, eps_ok):
        if phase not in PHASES:
            reasons.append(f"phase {phase}")
            continue
        parts = [] if model in study.MODELS else [f"model {model}"]
        parts += [] if loss in study.LOSSES else [f"loss {loss}"]
        parts += [] if (cv_ok if phase == "crossval" else ho_ok) else [f"fold {f}"]
        parts += [] if e_ok else ["ε"]
        reasons.append(", ".join(parts))
    return pd.Series(reasons, index=df.index, dtype=object)


def unit_status(df: pd.DataFrame, phase: str) -> pd.DataFrame:
    """One row per unit of the study's grid in ``phase``, whether ``df`` has it and which ε it lacks.

    ``df``: rows inside the study grid (:func:`outside_reasons` empty). Columns of the result:
    phase, model, loss, fold, uid, present, missing_eps (tuple of the study ε without a row), complete
    (present and no ε missing).
    """
    require_columns(df, GRID_COLUMNS, "unit_status")
    rows = df[df["phase"] == phase]
    present = {key: grp["epsilon"].to_numpy(dtype=float) for key, grp in rows.groupby(["model", "loss", "fold"])}
    out = []
    for model in study.MODELS:
        for loss in study.LOSSES:
            for fold in expected_folds(phase):
                eps = present.get((model, loss, fold))
                missing = () if eps is None else tuple(e for e in study.EPSILONS if not np.isclose(eps, e).any())
                uid = Unit(phase, model, loss, None if phase == "holdout" else fold).uid
                out.append({"phase": phase, "model": model, "loss": loss, "fold": fold, "uid": uid,
                            "present": eps is not None, "missing_eps": missing,
                            "complete": eps is not None and not missing})
    return pd.DataFrame(out)


def _not_run(status: pd.DataFrame, by: str) -> list[str]:
    """Values of ``by`` none of whose units in ``status`` is present."""
    present = status.groupby(by)["present"].any()
    return [k for k in study_order(present.index, by) if not present[k]]


def describe_missing(status: pd.DataFrame) -> list[str]:
    """What :func:`unit_status` rows lack, summarized: whole models, then whole losses not run
    (with their unit count, not one line per unit), then each other missing unit by its folder
    name, then units that lack some ε (grouped by the ε they lack). ``[]`` when every unit is complete."""
    if status["complete"].all():
        return []
    lines = []
    models = _not_run(status, "model")
    if models:
        each = len(status) // status["model"].nunique()
        lines.append(f"models not run: {', '.join(models)} ({each} units each)")
    rest = status[~status["model"].isin(models)]
    losses = _not_run(rest, "loss") if not rest.empty else []
    if losses:
        each = len(rest) // rest["loss"].nunique()
        lines.append(f"losses not run: {', '.join(losses)} ({each} units each)")
    rest = rest[~rest["loss"].isin(losses)]
    absent = []
    for (model, loss), grp in rest.groupby(["model", "loss"], sort=False):
        if len(grp) > 1 and not grp["present"].any():
            absent.append(f"{grp['uid'].iloc[0].rsplit('/', 1)[0]} (all {len(grp)} folds)")
        else:
            absent += list(grp.loc[~grp["present"], "uid"])
    if absent:
        lines.append(f"units not run: {', '.join(absent)}")
    partial = rest[rest["present"] & ~rest["complete"]]
    n_present = int(rest["present"].sum())
    for eps, grp in partial.groupby("missing_eps", sort=False):
        lacking = f"ε {', '.join(f'{e:g}' for e in eps)}"
        # A run with its own --epsilons lacks the same ε in every unit: one line, not one per unit.
        lines.append(f"all {n_present} units run lack {lacking}" if len(grp) == n_present
                     else f"units lacking {lacking}: {', '.join(grp['uid'])}")
    return lines
