"""``experiments/iterations.py``: Liu et al.'s attacks (paper 002) on a 2D and a 3D U-Net - FGSM, i-FGSM and
targeted i-FGSM at a fixed total budget, over the number of iterations.

Both networks are trained with the soft Dice loss (Liu et al.'s), each in a results folder of its own
(``<out>/2d/``, ``<out>/3d/``: cross-validation units, resumable, as ``experiments/crossval.py`` makes them), and
attacked on their saved models (:func:`tfrobseg.experiment.related.attack_saved_units`) with i-FGSM and ti-FGSM
(soft Dice to a target mask: every voxel foreground, Liu et al.'s) for each number of iterations N, with step
α = ε / N (``--step-factor 1``), so that α·N = ε as in Liu et al.; N = 1 is FGSM. The 3D U-Net is attacked
and scored on whole volumes.

Outputs: ``iterations_results.csv`` (the tidy rows of both folders, ``network`` 2D / 3D) and ``report/``: Liu
et al.'s Table 1 layout per network (Dice, PSNR, SSIM, RMSE per attack at the largest N, paired Wilcoxon of
each attack against no attack with Bonferroni correction), their numbers beside, and a figure of Dice and PSNR
against N (their Figs. 3-4) for both networks.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from tfrobseg.errors import OptionError
from tfrobseg.experiment.related import (
    PRESET_3D_PATCH,
    REPORT_LATER,
    Experiment,
    attack_saved_units,
    describe_cases,
    folder_args,
    saved_rows,
    start,
    train_grids,
)

__all__ = ["EXPERIMENT", "STEPS", "attack_table", "main", "plot_iterations"]

#: Numbers of iterations N (N = 1 is FGSM), each at step ε / N.
STEPS: tuple[int, ...] = (1, 2, 5, 10)
#: The 3D U-Net's levels: three poolings as Çiçek et al.'s, so that a volume of ~20 slices pads to 24, not 32.
FILTERS_3D: tuple[int, ...] = (8, 16, 32, 64)
EXPERIMENT = Experiment(
    name="iterations",
    description="Liu et al. (paper 002): a 2D U-Net and a 3D U-Net trained with soft Dice, attacked with FGSM, i-FGSM "
                "and targeted i-FGSM (soft Dice to an all-foreground target) at a fixed budget alpha*N = eps for "
                "N iterations; Dice, PSNR, SSIM, RMSE, paired Wilcoxon with Bonferroni, beside their Table 1 "
                "(docs/experiments/iterations.md). Options as experiments/crossval.py; --filters sets the 2D "
                "network's, --filters-3d the 3D one's.",
    model="unet",
    loss="dice",
    preset={"patch_shape": PRESET_3D_PATCH},
    defaults={"epsilons": (0.1,)},
)
_NETWORKS = {"2d": "2D U-Net", "3d": "3D U-Net"}


def _options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--iterations", default=",".join(map(str, STEPS)),
                   help=f"comma list of the numbers of iterations N (default {','.join(map(str, STEPS))})")
    p.add_argument("--filters-3d", default=",".join(map(str, FILTERS_3D)),
                   help=f"filters per level of the 3D U-Net (default {','.join(map(str, FILTERS_3D))})")


def _ints(text: str, flag: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or min(values) < 1:
        raise OptionError(f"{flag} {text!r}: expected positive integers, e.g. 1,2,5,10")
    return values


def _label(row: pd.Series) -> str:
    import json

    if float(row["epsilon"]) == 0.0:
        return "No attack"
    steps = json.loads(row["attack_params"]).get("steps", 1)
    return {"fgsm": "FGSM", "ifgsm": f"i-FGSM (N={steps})", "targeted_ifgsm": f"ti-FGSM (N={steps})"}[row["attack"]]


def _steps(row: pd.Series) -> int:
    import json

    return 1 if row["attack"] == "fgsm" else int(json.loads(row["attack_params"]).get("steps", 1))


def attack_table(rows: pd.DataFrame, epsilon: float, steps: int) -> pd.DataFrame:
    """Liu et al.'s Table 1 for each network: per attack (no attack, FGSM, i-FGSM and ti-FGSM with ``steps``
    iterations at ``epsilon``), Dice, PSNR, SSIM and RMSE (mean ± std over patients) and the Bonferroni-corrected
    p of a paired Wilcoxon test of the attack's per-patient Dice against no attack."""
    from tfrobseg.reporting.formatting import mean_std
    from tfrobseg.reporting.stats import paired_wilcoxon

    eps = rows["epsilon"].astype(float).round(10)
    part = rows[(eps == 0.0) | (eps == round(float(epsilon), 10))]
    part = part[part.apply(_steps, axis=1).isin({1, steps})]
    part = part.assign(condition=part.apply(_label, axis=1))
    clean = part[part["condition"] == "No attack"].drop_duplicates(["network", "patient_id"])
    part = pd.concat([clean, part[part["condition"] != "No attack"]], ignore_index=True)
    order = ["No attack", "FGSM", f"i-FGSM (N={steps})", f"ti-FGSM (N={steps})"]
    out = []
    for network, group in part.groupby("network", sort=False):
        tests = paired_wilcoxon(group, "condition", "dice", "patient_id", reference="No attack",
                                groups=[c for c in order if c in set(group["condition"])]).set_index("group_b")
        for condition in order:
            cell = group[group["condition"] == condition]
            if cell.empty:
                continue
            attacked = condition != "No attack"

            def stat(metric: str, decimals: int, cell: pd.DataFrame = cell, attacked: bool = attacked) -> str:
                return mean_std(cell[metric].mean(), cell[metric].std(ddof=1), decimals) if attacked else "—"

            out.append({"Network": _NETWORKS.get(network, network), "Attack": condition,
                        "Dice": mean_std(cell["dice"].mean(), cell["dice"].std(ddof=1), 3),
                        "p vs no attack (Bonferroni)": f"{tests.at[condition, 'p_bonferroni']:.3g}" if attacked else "—",
                        "PSNR (dB)": stat("psnr", 2), "SSIM": stat("ssim", 3), "RMSE": stat("rmse", 3)})
    return pd.DataFrame(out)


def paper_table() -> pd.DataFrame:
    """Liu et al.'s Table 1 (3D U-Net, whole tumour Dice) and the no-defence rows of their Tables 2-3."""
    from tfrobseg.reporting.related import load_related

    pub = load_related("002")
    table1 = pub[pub["table"] == "1"].pivot_table(index="row", columns="column", values="value", sort=False)
    table1 = table1.reindex(columns=["dice_whole_tumor", "psnr", "ssim", "rmse"]).reset_index()
    return table1.rename(columns={"row": "Attack (3D U-Net, BraTS)", "dice_whole_tumor": "Dice (whole tumour)",
                                  "psnr": "PSNR (dB)", "ssim": "SSIM", "rmse": "RMSE"}).fillna("—")


def plot_iterations(rows: pd.DataFrame, epsilon: float) -> object:
    """Dice (left) and PSNR (right) against the number of iterations at ``epsilon``: i-FGSM solid, ti-FGSM dashed,
    one colour per network (Liu et al.'s Figs. 3 and 4)."""
    import matplotlib.pyplot as plt

    data = rows[rows["epsilon"].astype(float).round(10) == round(float(epsilon), 10)]
    data = data.assign(steps=data.apply(_steps, axis=1))
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    colours = dict(zip(_NETWORKS, ("tab:blue", "tab:orange")))
    for (network, attack), group in data.groupby(["network", "attack"], sort=False):
        if attack == "fgsm":
            continue
        # N = 1 of both is FGSM's step: the FGSM rows start the untargeted curve.
        if attack == "ifgsm":
            group = pd.concat([data[(data["network"] == network) & (data["attack"] == "fgsm")], group])
        stats = group.groupby("steps")[["dice", "psnr"]].agg(["mean", "std"])
        style = {"color": colours.get(network), "ls": "-" if attack == "ifgsm" else "--", "marker": "o", "ms": 3,
                 "label": f"{_NETWORKS.get(network, network)} {'i-FGSM' if attack == 'ifgsm' else 'ti-FGSM'}"}
        left.errorbar(stats.index, stats[("dice", "mean")], yerr=stats[("dice", "std")], capsize=2, **style)
        right.plot(stats.index, stats[("psnr", "mean")], **style)
    left.set_ylabel("Dice (mean ± std)")
    left.set_ylim(-0.02, 1.02)
    right.set_ylabel("PSNR of the attacked input (dB)")
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_xlabel("iterations N (α = ε / N)")
        ax.grid(alpha=0.3)
    left.legend(fontsize=7)
    fig.suptitle(f"Liu et al.'s attacks at ε = {epsilon:g} (z-score units), 2D vs 3D U-Net", fontsize=9)
    fig.tight_layout()
    return fig


def report(rows: pd.DataFrame, out_dir: Path, epsilon: float, steps: int) -> list[Path]:
    """Write ``iterations_results.csv`` and ``report/``; returns the report's files (the Markdown first)."""
    from tfrobseg.io import atomic_write_csv
    from tfrobseg.reporting.related import related_source, write_report

    atomic_write_csv(out_dir / "iterations_results.csv", rows)
    notes = [(f"ε = {epsilon:g} (z-score units); i-FGSM and ti-FGSM with N = {steps} steps of ε / N; ti-FGSM drives "
             "the prediction to all foreground (soft Dice to the target). Mean ± std over "
             f"{describe_cases(rows)}; the 3D U-Net attacked and scored on whole volumes."),
             ("p: paired Wilcoxon signed-rank test of the per-patient Dice against no attack, Bonferroni-corrected "
             "over the three attacks of the network. PSNR / SSIM / RMSE: the attacked volume against the clean one, "
             "data range of the clean volume.")]
    return write_report(out_dir / "report", "iterations",
                        [("Ours: FGSM, i-FGSM and ti-FGSM on a 2D and a 3D U-Net", attack_table(rows, epsilon, steps),
                          notes),
                         ("Liu et al., Table 1 (as printed)", paper_table(),
                          [related_source("002"), "Their ε = α·N = 0.05 of the maximum intensity of [0, 1] images."])],
                        plot_iterations(rows, epsilon))


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point of ``experiments/iterations.py``."""
    args, say = start(EXPERIMENT, argv, _options)
    try:
        steps = _ints(args.iterations, "--iterations")
        filters_3d = _ints(args.filters_3d, "--filters-3d")
        if args.model != EXPERIMENT.model or args.attack != "fgsm":
            raise OptionError("--model / --attack: iterations.py compares Liu et al.'s U-Nets (2D unet, 3D unet_3d) "
                              "under FGSM, i-FGSM and ti-FGSM")
    except OptionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    EXPERIMENT.apply_preset(args)
    # --patch-shape is the 3D network's alone.
    runs = [folder_args(args, "2d", patch_shape=None), folder_args(args, "3d", model="unet_3d", filters=filters_3d)]
    trained = train_grids(runs, say)
    if any(t.rows is None for t in trained):
        return trained[0].code
    codes = []
    for t in trained:
        for n in steps:
            say(f"{t.out_dir.name}: i-FGSM and ti-FGSM with {n} iteration(s) of eps/{n} ...")
            codes.append(attack_saved_units(t.out_dir, "ifgsm,targeted_ifgsm", progress=not args.no_progress, args=args,
                                            options=["--steps", str(n), "--step-factor", "1", "--target", "foreground"]))
            if codes[-1]:
                return codes[-1]
    if None in codes:
        say(REPORT_LATER)
        return 0
    rows = pd.concat([saved_rows(t.out_dir).assign(network=t.out_dir.name) for t in trained], ignore_index=True)
    written = report(rows, Path(args.out), min(args.epsilons), max(steps))
    say(f"Results: {Path(args.out) / 'iterations_results.csv'} ({len(rows)} rows); report: {written[0].parent}")
    say(written[0].read_text(encoding="utf-8"))
    return 0
