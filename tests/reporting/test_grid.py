"""tfrobseg.reporting.grid: which rows are in the study's grid, which of its units are missing, summarized."""

import itertools

import pandas as pd
import pytest

from tfrobseg import study
from tfrobseg.reporting import grid


def _rows(units, eps=study.EPSILONS, phase="crossval"):
    return pd.DataFrame([{"phase": phase, "model": m, "loss": l, "fold": f, "epsilon": e}
                         for (m, l, f), e in itertools.product(units, eps)])


def test_outside_reasons_name_what_is_not_the_study():
    df = pd.DataFrame({
        "phase": ["crossval", "crossval", "crossval", "crossval", "holdout", "holdout", "crossval", "other"],
        "model": ["unet", "unet_plus_plus", "unet", "unet", "unet", "unet", "unet_plus_plus", "unet"],
        "loss": ["bce", "bce", "focal", "bce", "bce", "bce", "focal", "bce"],
        "fold": [2, 0, 0, 3, -1, 0, 0, 0],
        "epsilon": [0.30000000000000004, 0.1, 0.1, 0.1, 1.0, 0.1, 1.5, 0.1],
    })
    assert list(grid.outside_reasons(df)) == ["", "model unet_plus_plus", "loss focal", "fold 3", "", "fold 0",
                                              "model unet_plus_plus, loss focal, ε", "phase other"]
    with pytest.raises(ValueError, match="missing column"):
        grid.outside_reasons(df.drop(columns="fold"))


def test_unit_status_finds_missing_units_and_eps():
    units = [(m, l, f) for m, l, f in itertools.product(study.MODELS, study.LOSSES, range(3))
             if (m, l, f) != ("unet", "dice", 2)]
    df = _rows(units)
    df = df[~((df["model"] == "resunet") & (df["loss"] == "bce") & (df["fold"] == 0) & (df["epsilon"] == 0.3))]
    status = grid.unit_status(df, "crossval").set_index("uid")
    assert len(status) == 90 and status["complete"].sum() == 88
    assert not status.loc["crossval/unet/dice/fold2", "present"]
    assert status.loc["crossval/resunet/bce/fold0", "missing_eps"] == (0.3,)
    assert grid.describe_missing(status.reset_index()) == [
        "units not run: crossval/unet/dice/fold2", "units lacking ε 0.3: crossval/resunet/bce/fold0"]
    hold = grid.unit_status(_rows([("unet", "bce", -1)], phase="holdout"), "holdout")
    assert len(hold) == 30 and list(hold.loc[hold["complete"], "uid"]) == ["holdout/unet/bce/holdout"]
    with pytest.raises(ValueError, match="phase must be one of"):
        grid.expected_folds("test")


def test_describe_missing_summarizes_whole_models_and_losses():
    # Only the Recurrent U-Net run (the built-in demo): one line for the four models, not 72 units.
    demo = grid.unit_status(_rows(itertools.product(["recurrent_unet"], study.LOSSES, range(3))), "crossval")
    assert grid.describe_missing(demo) == ["models not run: unet, attention_unet, resunet, unet_vit (18 units each)"]
    # A whole loss, a model + loss in no fold, a single unit, and every unit run lacking the same ε.
    units = [(m, l, f) for m, l, f in itertools.product(["unet", "resunet"], study.LOSSES, range(3))
             if l != "tversky" and (m, l) != ("unet", "bce") and (m, l, f) != ("resunet", "dice", 1)]
    lines = grid.describe_missing(grid.unit_status(_rows(units, eps=(0.0, 0.5)), "crossval"))
    assert lines == [
        "models not run: attention_unet, recurrent_unet, unet_vit (18 units each)",
        "losses not run: tversky (6 units each)",
        "units not run: crossval/unet/bce (all 3 folds), crossval/resunet/dice/fold1",
        "all 26 units run lack ε 0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9, 1",
    ]
    assert grid.describe_missing(grid.unit_status(_rows(itertools.product(study.MODELS, study.LOSSES, range(3))),
                                                  "crossval")) == []
