"""``experiments/attack_loss.py``: Wang & Xu's question - does FGSM crafted with another loss than the training
loss succeed more? (paper 001, Table II).

Their U-Net family (U-Net and UNet++, each also with an EfficientNet encoder) is trained with Dice + focal
(:func:`tfrobseg.losses.dice_focal_loss`), attacked with FGSM whose gradient comes from the training loss, BCE,
focal and Dice, and scored with the attack success ``AS = (Dice_clean - Dice_attacked) / Dice_clean``
(:func:`tfrobseg.metrics.attack_success`, their Eq. 7) per model x attack loss, from the mean Dice over the
evaluated patients as they compute it. The training loss's FGSM is the units' own attack; the others are
computed on the saved networks (:func:`tfrobseg.experiment.related.attack_saved_units`). Outputs in the
results folder: ``attack_loss_results.csv`` (the tidy rows of every attack loss) and ``report/`` (the table,
ours then the paper's, and a figure of Dice vs eps per attack loss).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from tfrobseg.errors import OptionError
from tfrobseg.experiment.related import (
    REPORT_LATER,
    Experiment,
    attack_saved_units,
    describe_cases,
    saved_rows,
    start,
    train_grid,
)

__all__ = ["ATTACK_LOSSES", "EXPERIMENT", "attack_success_table", "main", "paper_table", "plot_attack_losses"]

#: The attack losses besides the training loss: Wang & Xu's BCE and focal, and Dice.
ATTACK_LOSSES: tuple[str, ...] = ("bce", "focal", "dice")
#: The built-in preset: 64 px (EfficientNet halves five times: sizes must be multiples of 32) and fold 0 only
#: (a unit of the EfficientNet UNet++ trains for ~4 minutes on one core, all three folds of the four networks
#: take ~17 minutes on 2 cores; docs/experiments/attack_loss.md). Whatever the data, ε where the networks are
#: hurt but not destroyed, so that the attack losses can differ.
EXPERIMENT = Experiment(
    name="attack_loss",
    description="Wang & Xu (paper 001): U-Net, UNet++ and their EfficientNet-encoder variants trained with Dice + "
                "focal, attacked with FGSM crafted with the training loss, BCE, focal and Dice; attack success "
                "AS = (Dice clean - Dice attacked) / Dice clean per model x attack loss, beside their Table II "
                "(docs/experiments/attack_loss.md). Options as experiments/crossval.py.",
    model="unet,unet_plus_plus,unet_efficientnet,unet_plus_plus_efficientnet",
    loss="dice_focal",
    preset={"image_size": 64, "folds": "0"},
    defaults={"epsilons": (0.05, 0.1, 0.25)},
)


def _options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--attack-losses", default=",".join(ATTACK_LOSSES),
                   help=f"comma list of the losses FGSM is crafted with besides the training loss (default "
                        f"{','.join(ATTACK_LOSSES)})")
    p.add_argument("--table-epsilon", type=float, default=None,
                   help="the eps of the table (default: the smallest attacked one, as Wang & Xu report one small eps)")


def _attack_losses(text: str) -> list[str]:
    from tfrobseg.losses import LOSS_NAMES, SECOND_READER_LOSSES

    names = list(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    bad = [n for n in names if n not in LOSS_NAMES or n in SECOND_READER_LOSSES]
    if not names or bad:
        raise OptionError(f"--attack-losses: {', '.join(bad) or 'none given'}: choose from "
                          f"{', '.join(n for n in LOSS_NAMES if n not in SECOND_READER_LOSSES)}")
    return names


def _in_order(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows with the models in the experiment's order (U-Net, UNet++, then their EfficientNet variants)."""
    order = EXPERIMENT.model.split(",")
    return rows.iloc[rows["model"].map(lambda m: order.index(m) if m in order else len(order)).argsort(kind="stable")]


def attack_success_table(rows: pd.DataFrame, epsilon: float, params: dict[str, int] | None = None) -> pd.DataFrame:
    """Wang & Xu's Table II from our tidy rows: per model (in the experiment's order), the clean Dice and per attack loss the attacked Dice
    and the attack success at ``epsilon`` (means over every evaluated patient of every fold).

    The training loss comes first among the attack losses (its column says "(training)"); ``params`` adds the
    parameter counts. ValueError when ``epsilon`` was not attacked.
    """
    from tfrobseg.losses import LOSS_DISPLAY_NAMES
    from tfrobseg.metrics import attack_success
    from tfrobseg.models import display_names

    eps = rows["epsilon"].astype(float).round(10)
    if not (eps == round(float(epsilon), 10)).any():
        raise ValueError(f"eps {epsilon} was not attacked; attacked: {sorted(set(eps) - {0.0})}")
    shown = display_names()
    rows = _in_order(rows)
    out = []
    for model, part in rows.groupby("model", sort=False):
        training = str(part["loss"].iat[0])
        part_eps = part["epsilon"].astype(float).round(10)
        clean = part.loc[(part_eps == 0.0) & (part["attack_loss"] == training), "dice"].mean()
        row: dict[str, object] = {"Model": shown.get(model, model)}
        if params:
            row["Parameters"] = f"{params[model] / 1e6:.2f}M"
        row["Normal"] = round(float(clean), 4)
        others = set(part["attack_loss"]) - {training}
        losses = [training, *(n for n in ATTACK_LOSSES if n in others), *sorted(others - set(ATTACK_LOSSES))]
        for loss in losses:
            attacked = part.loc[(part_eps == round(float(epsilon), 10)) & (part["attack_loss"] == loss), "dice"].mean()
            name = LOSS_DISPLAY_NAMES.get(loss, loss) + (" (training)" if loss == training else "")
            row[f"FGSM {name}"] = round(float(attacked), 4)
            row[f"AS {name}"] = round(float(attack_success(clean, attacked)), 4)
        out.append(row)
    return pd.DataFrame(out)


def paper_table() -> pd.DataFrame:
    """Wang & Xu's Table II as printed, with the attack success computed from its Dice values (Eq. 7)."""
    from tfrobseg.metrics import attack_success
    from tfrobseg.reporting.related import load_related

    pub = load_related("001")
    names = {"bce": "BCE", "dice_focal": "Dice-Focal (training)", "focal": "Focal"}
    out = []
    for model, part in pub.groupby("row", sort=False):
        values = dict(zip(part["column"], part["value"]))
        row: dict[str, object] = {"Model": model, "Normal": values["normal"]}
        for key in ("dice_focal", "bce", "focal"):
            row[f"FGSM {names[key]}"] = values[key]
            row[f"AS {names[key]}"] = round(float(attack_success(values["normal"], values[key])), 4)
        out.append(row)
    return pd.DataFrame(out)


def plot_attack_losses(rows: pd.DataFrame) -> object:
    """Mean Dice vs ε, one panel per model, one line per attack loss (the training loss in black)."""
    import matplotlib.pyplot as plt

    from tfrobseg.losses import LOSS_DISPLAY_NAMES
    from tfrobseg.models import display_names

    rows = _in_order(rows)
    models = list(dict.fromkeys(rows["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(3.2 * len(models), 3.2), sharey=True, squeeze=False)
    palette = dict(zip(ATTACK_LOSSES, plt.get_cmap("tab10").colors))
    for ax, model in zip(axes[0], models):
        part = rows[rows["model"] == model].assign(epsilon=lambda d: d["epsilon"].astype(float))
        training = str(part["loss"].iat[0])
        clean = part.loc[(part["epsilon"] == 0.0) & (part["attack_loss"] == training), "dice"].mean()
        for loss, group in part.groupby("attack_loss", sort=False):
            means = group[group["epsilon"] > 0].groupby("epsilon")["dice"].mean()
            ax.plot([0.0, *means.index], [clean, *means.values], marker="o", ms=3,
                    color="black" if loss == training else palette.get(loss, "0.5"),
                    label=LOSS_DISPLAY_NAMES.get(loss, loss) + (" (training)" if loss == training else ""))
        ax.set_title(display_names().get(model, model), fontsize=9)
        ax.set_xlabel("ε (z-score units)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("mean Dice over patients")
    axes[0][0].set_ylim(-0.02, 1.02)
    axes[0][-1].legend(fontsize=7, title="FGSM loss", title_fontsize=7)
    fig.suptitle("Wang & Xu: FGSM crafted with each loss (models trained with Dice + focal)", fontsize=9)
    fig.tight_layout()
    return fig


def _parameters(rows: pd.DataFrame, out_dir: Path) -> dict[str, int]:
    """Each model's parameter count, from its first unit's saved network."""
    import keras

    counts = {}
    for model in dict.fromkeys(rows["model"]):
        path = next(iter(sorted(out_dir.glob(f"crossval/{model}/*/*/best.keras"))), None)
        if path is not None:
            counts[model] = int(keras.saving.load_model(path, compile=False).count_params())
    return counts


def report(rows: pd.DataFrame, out_dir: Path, epsilon: float) -> list[Path]:
    """Write ``attack_loss_results.csv`` and ``report/``; returns the report's files (the Markdown first)."""
    from tfrobseg.io import atomic_write_csv
    from tfrobseg.reporting.related import related_source, write_report

    atomic_write_csv(out_dir / "attack_loss_results.csv", rows)
    ours = attack_success_table(rows, epsilon, _parameters(rows, out_dir))
    notes_ours = [
        (f"Normal: clean Dice; FGSM <loss>: Dice under FGSM at ε = {epsilon:g} (z-score units) crafted with that loss. "
        f"Means over the {describe_cases(rows)}, per volume."),
        ("AS = (Dice clean - Dice attacked) / Dice clean from these means (Wang & Xu, Eq. 7); higher: a more "
        "successful attack.")]
    notes_paper = [related_source("001"),
                   ("AS computed here from the printed Dice values. Their encoders: VGG13, ResNeXt-101, EfficientNet-B7 "
                   "(ImageNet weights); ours: docs/experiments/attack_loss.md.")]
    return write_report(out_dir / "report", "attack_loss",
                        [("Ours: attack success of FGSM per attack loss", ours, notes_ours),
                         ("Wang & Xu, Table II (as printed)", paper_table(), notes_paper)],
                        plot_attack_losses(rows))


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point of ``experiments/attack_loss.py``."""
    args, say = start(EXPERIMENT, argv, _options)
    try:
        attack_losses = _attack_losses(args.attack_losses)
        if args.attack != "fgsm":
            raise OptionError("--attack: attack_loss.py compares the losses of FGSM, as Wang & Xu; for another "
                              "attack use experiments/attack.py --attack-loss")
        EXPERIMENT.apply_preset(args)
        table_eps = args.table_epsilon if args.table_epsilon is not None else min(args.epsilons)
        if round(table_eps, 10) not in {round(e, 10) for e in args.epsilons}:
            raise OptionError(f"--table-epsilon {table_eps:g} is not among --epsilons {list(args.epsilons)}")
    except OptionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    trained = train_grid(args, say)
    if trained.rows is None:
        return trained.code
    codes = []
    for loss in attack_losses:
        say(f"FGSM crafted with {loss} on every saved network ...")
        codes.append(attack_saved_units(trained.out_dir, "fgsm", attack_loss=loss, progress=not args.no_progress,
                                        args=args))
        if codes[-1]:
            return codes[-1]
    if None in codes:
        say(REPORT_LATER)
        return 0
    rows = saved_rows(trained.out_dir)
    rows = rows[rows["attack"] == "fgsm"].reset_index(drop=True)
    written = report(rows, trained.out_dir, table_eps)
    say(f"Results: {trained.out_dir / 'attack_loss_results.csv'} ({len(rows)} rows); report: {written[0].parent}")
    say(written[0].read_text(encoding="utf-8"))
    return 0
