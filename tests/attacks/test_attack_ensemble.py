"""tfrobseg.attacks.ensemble: the worst case per case over member rows, against a hand-made frame."""

import json

import pandas as pd
import pytest

from tfrobseg.attacks.ensemble import DEFAULT_MEMBERS, ENSEMBLE, worst_case
from tfrobseg.experiment import attacks as spec_module

UNIT = {"phase": "crossval", "model": "unet", "loss": "bce", "fold": 0, "attack_loss": "bce"}
# (attack, patient, ε, dice, hd95): P1 at 0.5 ties fgsm and pgd (the first member, fgsm, wins);
# at ε = 0 every member gives the clean prediction (noise with a jitter here): the first member's row is kept.
HAND = [
    ("fgsm", "P1", 0.0, 0.90, 2.0), ("pgd", "P1", 0.0, 0.90, 2.0), ("noise", "P1", 0.0, 0.89, 2.5),
    ("fgsm", "P1", 0.5, 0.40, 7.0), ("pgd", "P1", 0.5, 0.40, 6.0), ("noise", "P1", 0.5, 0.85, 3.0),
    ("fgsm", "P1", 1.0, 0.30, 9.0), ("pgd", "P1", 1.0, 0.10, 4.0), ("noise", "P1", 1.0, 0.80, 3.5),
    ("fgsm", "P2", 0.0, 0.70, 5.0), ("pgd", "P2", 0.0, 0.70, 5.0), ("noise", "P2", 0.0, 0.70, 5.0),
    ("fgsm", "P2", 0.5, 0.60, 8.0), ("pgd", "P2", 0.5, 0.65, 8.5), ("noise", "P2", 0.5, 0.55, 12.0),
    ("fgsm", "P2", 1.0, 0.50, 9.5), ("pgd", "P2", 1.0, 0.20, 30.0), ("noise", "P2", 1.0, 0.52, 4.0),
]
PARAMS = {"fgsm": "{}", "pgd": '{"steps": 3}', "noise": "{}"}


def _rows(hand=HAND, **extra) -> pd.DataFrame:
    return pd.DataFrame([{**UNIT, "attack": a, "attack_params": PARAMS[a], "worst_attack": "", "patient_id": p,
                          "epsilon": e, "dice": d, "hd95": h, "assd": h / 3, **extra} for a, p, e, d, h in hand])


def test_worst_case_keeps_per_case_the_lowest_dice_row_with_its_distances():
    out = worst_case(_rows(), ["fgsm", "pgd", "noise"])
    got = [(r.patient_id, r.epsilon, r.worst_attack, r.dice, r.hd95) for r in out.itertuples()]
    # By hand: the clean row is the first member's; a tie goes to the first member; HD95 is the worst row's
    # (P2 at ε = 1: pgd's 30 mm, although noise's 4 mm row exists), not the worst HD95 over the members.
    assert got == [("P1", 0.0, "", 0.90, 2.0), ("P1", 0.5, "fgsm", 0.40, 7.0), ("P1", 1.0, "pgd", 0.10, 4.0),
                   ("P2", 0.0, "", 0.70, 5.0), ("P2", 0.5, "noise", 0.55, 12.0), ("P2", 1.0, "pgd", 0.20, 30.0)]
    assert (out["attack"] == ENSEMBLE).all() and out["assd"].tolist() == pytest.approx(out["hd95"] / 3)
    assert json.loads(out["attack_params"].iloc[0]) == [
        {"attack": "fgsm", "params": {}}, {"attack": "pgd", "params": {"steps": 3}}, {"attack": "noise", "params": {}}]
    # Under attack the robust Dice is at most every member's, case by case.
    rows = _rows()
    attacked = out["epsilon"].to_numpy() > 0
    for member, grp in rows.groupby("attack"):
        member_dice = grp.sort_values(["patient_id", "epsilon"])["dice"].to_numpy()
        assert (out["dice"].to_numpy()[attacked] <= member_dice[attacked]).all()


def test_member_order_breaks_ties_and_defaults_to_the_rows():
    out = worst_case(_rows(), ["pgd", "fgsm", "noise"])
    assert out.loc[(out["patient_id"] == "P1") & (out["epsilon"] == 0.5), "worst_attack"].item() == "pgd"
    assert out.loc[(out["patient_id"] == "P1") & (out["epsilon"] == 0.0), "hd95"].item() == 2.0
    assert worst_case(_rows()).equals(worst_case(_rows(), ["fgsm", "pgd", "noise"]))


def test_cases_are_per_unit_and_epsilon_read_back_from_csv():
    two = pd.concat([_rows(), _rows(fold=1).assign(dice=lambda d: 1 - d["dice"])], ignore_index=True)
    two.loc[two["epsilon"] == 0.5, "epsilon"] = 0.5 + 1e-13  # as a CSV round trip may give
    out = worst_case(two)
    assert len(out) == 12 and sorted(out["fold"].unique()) == [0, 1]
    fold1 = out[(out["fold"] == 1) & (out["patient_id"] == "P2") & (out["epsilon"] == 1.0)]
    assert fold1["worst_attack"].item() == "noise" and fold1["dice"].item() == pytest.approx(0.48)


def test_incomplete_or_ambiguous_members_are_refused():
    rows = _rows()
    with pytest.raises(ValueError, match="lack a member's row"):
        worst_case(rows.drop(index=4), ["fgsm", "pgd", "noise"])
    with pytest.raises(ValueError, match="rows lack \\['dag'\\]"):
        worst_case(rows, ["fgsm", "pgd", "noise", "dag"])
    with pytest.raises(ValueError, match="rows of non-members \\['noise'\\]"):
        worst_case(rows, ["fgsm", "pgd"])
    rows.loc[rows.index[4], "attack_params"] = '{"steps": 5}'
    with pytest.raises(ValueError, match="one attack_params"):
        worst_case(rows)
    with pytest.raises(ValueError, match="no member rows"):
        worst_case(rows.iloc[:0])


def test_the_names_are_those_of_the_contract():
    assert ENSEMBLE == spec_module.ENSEMBLE == "ensemble"
    assert DEFAULT_MEMBERS == ("fgsm", "pgd", "segpgd", "cospgd", "apgd", "dag")


def test_robust_dice_on_a_trained_toy_model_is_at_most_every_attack():
    """Real attack runs on the trained toy model, each image a case: the ensemble's Dice is, per case and ε,
    the lowest member's, so its mean is ≤ the mean of every single attack; APGD and SegPGD reach a mean
    Dice ≤ FGSM's at every ε."""
    import tensorflow as tf
    from attack_cases import disks, trained_net

    from tfrobseg.attacks import attack_dataset
    from tfrobseg.attacks.budget import batch_dice

    x, y = disks(8, seed=9)
    data = tf.data.Dataset.from_tensor_slices({"image": x, "mask": y, "patient_id": [f"p{i}" for i in range(8)],
                                               "slice_index": list(range(8))})
    grid = [0.0, 0.25, 0.5, 1.0]
    members = ["fgsm", "pgd", "segpgd", "apgd"]
    frames = []
    for attack in members:
        options = {} if attack == "fgsm" else {"steps": 5}
        for r in attack_dataset(trained_net(), data, grid, attack=attack, batch_size=4, jit_compile=False, **options):
            dice = float(batch_dice(tf.constant(r["prediction"][None]), tf.constant(y[r["slice_index"]][None]))[0])
            frames.append({"attack": attack, "patient_id": r["patient_id"], "epsilon": r["epsilon"], "dice": dice})
    rows = pd.DataFrame(frames)
    robust = worst_case(rows, members)
    assert len(robust) == 8 * len(grid)
    per_case = rows.pivot_table(index=["patient_id", "epsilon"], columns="attack", values="dice")
    merged = robust.set_index(["patient_id", "epsilon"])["dice"].reindex(per_case.index)
    assert (merged.to_numpy() == per_case.min(axis=1).to_numpy()).all()
    means = rows.groupby(["attack", "epsilon"])["dice"].mean().unstack("attack")
    robust_mean = robust.groupby("epsilon")["dice"].mean()
    for eps in grid[1:]:
        assert robust_mean[eps] <= means.loc[eps].min() + 1e-12
        assert means.loc[eps, "apgd"] <= means.loc[eps, "fgsm"] and means.loc[eps, "segpgd"] <= means.loc[eps, "fgsm"]
    assert robust_mean[1.0] < means.loc[1.0, "fgsm"]  # the ensemble gains on the study's attack
