"""``experiments/adaptive_loss.py``: paper 003's comparison - a 3D U-Net and a dilated 3D U-Net trained with the
Tversky loss (α = 0.7, β = 0.3), Dice + CE and the adaptive TverskyCE loss (α = β = 0.5 and α = 0.7, β = 0.3) -
and, ours, the same networks under FGSM.

The adaptive TverskyCE loss (:class:`tfrobseg.losses.AdaptiveTverskyCELoss`) weighs its two terms each epoch by
their means over the previous epoch; every training records the weights in its ``history.csv``
(``w_tversky``, ``w_ce``). Its two α/β settings are two results folders (``<out>/main/`` with Tversky, Dice + CE
and the adaptive loss at α = β = 0.5; ``<out>/alpha0.7/`` with the adaptive loss at α = 0.7, β = 0.3), both
cross-validation runs as ``experiments/crossval.py`` makes them (3D networks: random patches for training, whole
volumes for evaluation and attack).

Outputs: ``adaptive_loss_results.csv`` and ``report/``: paper 003's Tables 1-2 layout (Dice, F2, specificity,
sensitivity, precision, in %), ours beside theirs, with the Dice under FGSM, and a figure of the adaptive weights
per epoch.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from tfrobseg.experiment.related import (
    PRESET_3D_PATCH,
    Experiment,
    describe_cases,
    folder_args,
    start,
    train_grids,
)

__all__ = ["EXPERIMENT", "adaptive_weights", "main", "metric_table", "paper_table", "plot_weights"]

#: The conditions: results folder -> losses and their options (paper 003, Sec. 4 and Table 1).
FOLDERS: dict[str, tuple[str, list[str]]] = {
    "main": ("tversky,bce_dice,adaptive_tversky_ce", ["tversky.alpha=0.7", "tversky.beta=0.3"]),
    "alpha0.7": ("adaptive_tversky_ce", ["adaptive_tversky_ce.alpha=0.7", "adaptive_tversky_ce.beta=0.3"]),
}
#: Our row key of each (folder, loss): the ``key`` of paper 003's rows in the published-numbers file.
_KEYS = {("main", "tversky"): "tversky", ("main", "bce_dice"): "bce_dice",
         ("main", "adaptive_tversky_ce"): "adaptive_tversky_ce",
         ("alpha0.7", "adaptive_tversky_ce"): "adaptive_tversky_ce_07"}
_LABELS = {"tversky": "Tversky (α 0.7, β 0.3)", "bce_dice": "Dice + CE",
           "adaptive_tversky_ce": "adaptive TverskyCE (α = β = 0.5)",
           "adaptive_tversky_ce_07": "adaptive TverskyCE (α 0.7, β 0.3)"}
_METRICS = {"dice": "DSC", "f2": "F2", "specificity": "Spec.", "sensitivity": "Sens.", "precision": "Prec."}
EXPERIMENT = Experiment(
    name="adaptive_loss",
    description="Paper 003: 3D U-Net and dilated 3D U-Net x {Tversky (0.7/0.3), Dice + CE, adaptive TverskyCE "
                "(0.5/0.5 and 0.7/0.3)}; Dice, F2, specificity, sensitivity, precision beside their Tables 1-2, the "
                "Dice under FGSM, and the adaptive weights per epoch (docs/experiments/adaptive_loss.md). Options as "
                "experiments/crossval.py.",
    model="unet_3d,dilated_unet_3d",
    loss="",
    preset={"folds": "0", "max_epochs": 8, "patch_shape": PRESET_3D_PATCH},
    defaults={"epsilons": (0.1,), "filters": (8, 16, 32, 64)},
)


def _condition(rows: pd.DataFrame) -> pd.Series:
    return pd.Series([_KEYS[(f, loss)] for f, loss in zip(rows["folder"], rows["loss"])], index=rows.index)


def metric_table(rows: pd.DataFrame, epsilon: float) -> pd.DataFrame:
    """Per model x condition (the experiment's models, then paper 003's order of losses): the clean Dice, F2,
    specificity, sensitivity and precision in % (mean ± std over patients) and the Dice under FGSM at ``epsilon``."""
    from tfrobseg.models import display_names
    from tfrobseg.reporting.formatting import mean_std

    eps = rows["epsilon"].astype(float).round(10)
    rows = rows.assign(condition=_condition(rows))
    models = EXPERIMENT.model.split(",")
    order = list(_LABELS)
    rank = rows["model"].map(lambda m: models.index(m) if m in models else len(models)) * len(order) + \
        rows["condition"].map(order.index)
    rows = rows.iloc[rank.argsort(kind="stable")]
    out = []
    for (model, condition), group in rows.groupby(["model", "condition"], sort=False):
        clean = group[eps.loc[group.index] == 0.0]
        attacked = group[eps.loc[group.index] == round(float(epsilon), 10)]
        row = {"Model": display_names().get(model, model), "Loss": _LABELS[condition]}
        for metric, header in _METRICS.items():
            row[header] = mean_std(100 * clean[metric].mean(), 100 * clean[metric].std(ddof=1), 1)
        row[f"DSC under FGSM ε={epsilon:g}"] = mean_std(100 * attacked["dice"].mean(),
                                                        100 * attacked["dice"].std(ddof=1), 1)
        out.append(row)
    return pd.DataFrame(out)


def paper_table() -> pd.DataFrame:
    """Paper 003's Tables 1 and 2 as printed (percent, NIH Pancreas-CT)."""
    from tfrobseg.reporting.related import load_related

    pub = load_related("003")
    table = pub.pivot_table(index=["row", "key"], columns="column", values="value", sort=False).reset_index()
    return table.rename(columns={"row": "Configuration", **_METRICS}).drop(columns="key")[
        ["Configuration", *_METRICS.values()]]


def adaptive_weights(out_dir: Path) -> pd.DataFrame:
    """The Tversky weight of every epoch of every adaptive TverskyCE training under ``out_dir``: columns folder,
    model, fold, epoch, w_tversky, loss_tversky, loss_ce (from each unit's ``history.csv``)."""
    frames = []
    for path in sorted(out_dir.glob("*/crossval/*/adaptive_tversky_ce/*/history.csv")):
        history = pd.read_csv(path)
        if "w_tversky" in history:
            unit = path.parent
            frames.append(history[["epoch", "w_tversky", "loss_tversky", "loss_ce"]].assign(
                folder=unit.parents[3].name, model=unit.parents[1].name, fold=unit.name))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def plot_weights(weights: pd.DataFrame) -> object:
    """w_Tversky per epoch, one line per adaptive training (colour: α/β; line style: model)."""
    import matplotlib.pyplot as plt

    from tfrobseg.models import display_names

    fig, ax = plt.subplots(figsize=(6, 3.6))
    colours = {"main": "tab:blue", "alpha0.7": "tab:red"}
    styles = {"unet_3d": "-", "dilated_unet_3d": "--"}
    for (folder, model, fold), group in weights.groupby(["folder", "model", "fold"], sort=False):
        label = f"{display_names().get(model, model)}, {'α = β = 0.5' if folder == 'main' else 'α 0.7, β 0.3'}"
        ax.plot(group["epoch"], group["w_tversky"], color=colours.get(folder), ls=styles.get(model, ":"), marker="o",
                ms=3, label=f"{label}, {fold}")
    ax.axhline(0.5, color="0.6", lw=0.8)
    ax.set_xlabel("epoch")
    ax.set_ylabel("w_Tversky (w_CE = 1 - w_Tversky)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("Adaptive TverskyCE: the weights of each epoch (paper 003, Eqs. 9-11)", fontsize=9)
    fig.tight_layout()
    return fig


def report(rows: pd.DataFrame, out_dir: Path, epsilon: float) -> list[Path]:
    """Write ``adaptive_loss_results.csv`` and ``report/``; returns the report's files (the Markdown first)."""
    from tfrobseg.io import atomic_write_csv
    from tfrobseg.reporting.related import related_source, write_report

    atomic_write_csv(out_dir / "adaptive_loss_results.csv", rows)
    weights = adaptive_weights(out_dir)
    final = weights.groupby(["folder", "model", "fold"])["w_tversky"].last() if not weights.empty else pd.Series()
    notes = [(f"Percent; mean ± std over {describe_cases(rows)}, each scored on its whole volume. DSC under FGSM: "
             f"ε = {epsilon:g} (z-score units), crafted with the training loss."),
             "The last epoch's w_Tversky of the adaptive trainings: "
             + ", ".join(f"{m} {f} {fold}: {w:.2f}" for (f, m, fold), w in final.items()) + "."]
    return write_report(out_dir / "report", "adaptive_loss",
                        [("Ours: 3D networks and losses (paper 003's Tables 1-2), with FGSM", metric_table(rows, epsilon),
                          notes),
                         ("Paper 003, Tables 1-2 (as printed)", paper_table(), [related_source("003")])],
                        plot_weights(weights) if not weights.empty else None)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point of ``experiments/adaptive_loss.py``."""
    args, say = start(EXPERIMENT, argv)
    if args.loss or args.loss_option:
        print("error: --loss / --loss-option: adaptive_loss.py trains paper 003's losses (Tversky 0.7/0.3, Dice + CE, "
              "adaptive TverskyCE 0.5/0.5 and 0.7/0.3)", file=sys.stderr)
        return 2
    EXPERIMENT.apply_preset(args)
    runs = [folder_args(args, folder, loss=losses, loss_option=options) for folder, (losses, options) in FOLDERS.items()]
    trained = train_grids(runs, say)
    if any(t.rows is None for t in trained):
        return trained[0].code
    rows = pd.concat([t.rows.assign(folder=t.out_dir.name) for t in trained], ignore_index=True)
    rows = rows[rows["attack"] == rows["attack"].iat[0]].reset_index(drop=True)
    written = report(rows, Path(args.out), min(args.epsilons))
    say(f"Results: {Path(args.out) / 'adaptive_loss_results.csv'} ({len(rows)} rows); report: {written[0].parent}")
    say(written[0].read_text(encoding="utf-8"))
    return 0
