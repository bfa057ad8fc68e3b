"""``experiments/two_readers.py``: Thakur's question (paper 004) - does a loss that knows where two readers
disagree segment better than focal loss? - and, ours: is the network it trains more robust?

One network (U-Net by default) per loss: focal (γ = 2), AG-BCE (the readers' disagreement weighted 4 : 1,
:func:`tfrobseg.losses.ag_bce_loss`) and the adaptive focal loss (dilated disagreement, γ from the sample's
difficulty and the readers' variability, :func:`tfrobseg.losses.adaptive_focal_loss`); the last two train on
both readers' masks (:func:`tfrobseg.dataset.pipeline.to_xy`), every network is scored against reader 1.
Every network is then attacked by the same FGSM, crafted with BCE against reader 1 (the attack does not
know the second reader), so that the robustness of the three is compared under one attack.

Outputs in the results folder: ``two_readers_results.csv`` (tidy rows) and ``report/`` (Dice and HD95 per
loss beside Thakur's Table 3, paired Wilcoxon tests against focal loss with Bonferroni correction, the readers'
own agreement, and a figure of Dice vs eps per loss).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from tfrobseg.experiment.related import (
    Experiment,
    describe_cases,
    start,
    train_grid,
)

__all__ = ["EXPERIMENT", "main", "paper_table", "plot_losses", "reader_agreement", "two_readers_table"]

#: Thakur's three losses, in the order of his Table 3.
LOSSES: tuple[str, ...] = ("focal", "ag_bce", "adaptive_focal")
EXPERIMENT = Experiment(
    name="two_readers",
    description="Thakur (paper 004): focal vs AG-BCE vs adaptive focal loss, the last two trained on two readers' "
                "masks; Dice and HD95 against reader 1 beside his Table 3, then the three networks under the same "
                "FGSM (crafted with BCE). Needs a second reader's masks (data_prep/prostatex.py --second-masks; the "
                "built-in cohort has them). Options as experiments/crossval.py (docs/experiments/two_readers.md).",
    model="unet",
    loss=",".join(LOSSES),
    preset={},
    defaults={"attack_loss": "bce", "epsilons": (0.1, 0.25, 0.5)},
)


def _mean_std(values: pd.Series, decimals: int) -> str:
    from tfrobseg.reporting.formatting import mean_std

    return mean_std(float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0, decimals)


def two_readers_table(rows: pd.DataFrame, epsilon: float) -> pd.DataFrame:
    """Per model x loss: clean Dice and HD95 (mean ± std over patients, against reader 1) and the Dice under the
    attack at ``epsilon``; the p-values of paired Wilcoxon tests of each loss against focal loss (clean Dice,
    per patient, Bonferroni over the comparisons), where focal loss was trained."""
    from tfrobseg.losses import LOSS_DISPLAY_NAMES
    from tfrobseg.models import display_names
    from tfrobseg.reporting.stats import paired_wilcoxon

    order = {name: k for k, name in enumerate(LOSSES)}
    rows = rows.sort_values("loss", key=lambda s: s.map(lambda n: (order.get(n, len(order)), n)), kind="stable")
    eps = rows["epsilon"].astype(float).round(10)
    clean, attacked = rows[eps == 0.0], rows[eps == round(float(epsilon), 10)]
    if attacked.empty:
        raise ValueError(f"eps {epsilon} was not attacked; attacked: {sorted(set(eps) - {0.0})}")
    out = []
    for model, part in clean.groupby("model", sort=False):
        tests = pd.DataFrame()
        if "focal" in set(part["loss"]) and part["loss"].nunique() > 1:
            tests = paired_wilcoxon(part, "loss", "dice", "patient_id", reference="focal").set_index("group_b")
        for loss, group in part.groupby("loss", sort=False):
            hit = attacked[(attacked["model"] == model) & (attacked["loss"] == loss)]
            out.append({
                "Model": display_names().get(model, model), "Loss": LOSS_DISPLAY_NAMES.get(loss, loss),
                "DSC": _mean_std(group["dice"], 3), "HD95 (mm)": _mean_std(group["hd95"], 2),
                f"DSC under FGSM ε={epsilon:g}": _mean_std(hit["dice"], 3),
                "p vs focal (Bonferroni)": f"{tests.at[loss, 'p_bonferroni']:.3g}" if loss in tests.index else "—",
            })
    return pd.DataFrame(out)


def paper_table() -> pd.DataFrame:
    """Thakur's Table 3 as printed (means over his 20 micro-ultrasound test cases)."""
    from tfrobseg.reporting.related import load_related

    pub = load_related("004")
    return pub.pivot_table(index="row", columns="column", values="value", sort=False).reset_index().rename(
        columns={"row": "Loss", "dice": "DSC", "hd95": "HD95 (mm)"})[["Loss", "DSC", "HD95 (mm)"]]


def reader_agreement(data_dir: str | Path, patient_ids: Sequence[str], image_size: int | None) -> pd.DataFrame:
    """Dice and HD95 (mm) of reader 2 against reader 1 per patient with both, at the networks' input size (the
    agreement the losses learn from; the volumes and spacing the networks are scored on)."""
    from tfrobseg import metrics
    from tfrobseg.dataset.manifest import Manifest
    from tfrobseg.dataset.pipeline import load_slices

    manifest = Manifest.read(data_dir)
    rows = []
    for pid in patient_ids:
        if not manifest.entry(pid, data_dir).second_reader:
            continue
        slices = load_slices(data_dir, [pid], image_size=image_size)
        order = np.argsort(slices["slice_index"])
        reader1, reader2 = (slices[k][order, ..., 0] > 0 for k in ("mask", "mask2"))
        spacing = tuple(float(s) for s in slices["spacing"][0])
        rows.append({"patient_id": pid, "dice": metrics.dice(reader2, reader1),
                     "hd95": metrics.hd95(reader2, reader1, spacing)})
    return pd.DataFrame(rows)


def plot_losses(rows: pd.DataFrame) -> object:
    """Mean Dice (against reader 1) vs ε, one line per training loss, ± std band."""
    import matplotlib.pyplot as plt

    from tfrobseg.losses import LOSS_DISPLAY_NAMES

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    data = rows.assign(epsilon=rows["epsilon"].astype(float))
    for (model, loss), part in data.groupby(["model", "loss"], sort=False):
        stats = part.groupby("epsilon")["dice"].agg(["mean", "std"]).fillna(0.0)
        label = LOSS_DISPLAY_NAMES.get(loss, loss) + (f" ({model})" if data["model"].nunique() > 1 else "")
        line, = ax.plot(stats.index, stats["mean"], marker="o", ms=3, label=label)
        ax.fill_between(stats.index, stats["mean"] - stats["std"], stats["mean"] + stats["std"],
                        color=line.get_color(), alpha=0.12, lw=0)
    ax.set_xlabel("ε of FGSM crafted with BCE (z-score units)")
    ax.set_ylabel("Dice vs reader 1 (mean ± std)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="training loss", title_fontsize=8)
    ax.set_title("Thakur's losses: clean and under FGSM", fontsize=9)
    fig.tight_layout()
    return fig


def report(rows: pd.DataFrame, out_dir: Path, data_dir: str, image_size: int, epsilon: float) -> list[Path]:
    """Write ``two_readers_results.csv`` and ``report/``; returns the report's files (the Markdown first)."""
    from tfrobseg.io import atomic_write_csv
    from tfrobseg.reporting.related import related_source, write_report

    atomic_write_csv(out_dir / "two_readers_results.csv", rows)
    agreement = reader_agreement(data_dir, sorted(set(rows["patient_id"])), image_size)
    readers = (f"Reader 2 against reader 1 on these patients: Dice {_mean_std(agreement['dice'], 3)}, HD95 "
               f"{_mean_std(agreement['hd95'], 2)} mm (n = {len(agreement)})." if not agreement.empty
               else "No evaluated patient has a second reader: AG-BCE and adaptive focal saw agreement everywhere.")
    notes = [f"Mean ± std over {describe_cases(rows)}; every network scored against reader 1, in 3D.",
             ("FGSM crafted with BCE against reader 1 for every network. p: paired Wilcoxon signed-rank test of the "
             "clean per-patient Dice against focal loss, Bonferroni-corrected over the comparisons."), readers]
    return write_report(out_dir / "report", "two_readers",
                        [("Ours: annotation-guided losses, clean and under FGSM", two_readers_table(rows, epsilon),
                          notes),
                         ("Thakur, Table 3 (as printed)", paper_table(), [related_source("004")])],
                        plot_losses(rows))


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point of ``experiments/two_readers.py``."""
    args, say = start(EXPERIMENT, argv)
    EXPERIMENT.apply_preset(args)
    trained = train_grid(args, say)
    if trained.rows is None:
        return trained.code
    rows = trained.rows[trained.rows["attack"] == trained.rows["attack"].iat[0]].reset_index(drop=True)
    from tfrobseg.experiment.store import folder_settings

    settings, _ = folder_settings(trained.out_dir)
    written = report(rows, trained.out_dir, settings.data_dir, settings.image_size, min(args.epsilons))
    say(f"Results: {trained.out_dir / 'two_readers_results.csv'} ({len(rows)} rows); report: {written[0].parent}")
    say(written[0].read_text(encoding="utf-8"))
    return 0
