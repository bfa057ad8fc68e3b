"""Figures 1–3 of Apostolidis et al. and robustness curves, from a results folder.

Figures 1–3 (Section III): one MRI slice, one row per ε (0 = clean, 0.1 … 1.0) with the attacked
image, the perturbation x_adv − x as a difference heatmap, and the predicted mask against the
reference. Figure 1: ResU-Net trained with the most robust loss; Figure 2: Recurrent U-Net with
the most robust loss; Figure 3: Recurrent U-Net with BCE. "Most robust loss" = highest mean
attacked Dice in the loss table (Table III from the cross-validation, Table IV if only the
hold-out was run). The study shows "a random slice"; for reproducibility we take the slice with
the largest reference area of the first evaluation patient of the unit (fold 0 of the
cross-validation when present, otherwise the hold-out unit), and re-run the unit's attack on it
with the saved model (``best.keras``).

A unit a figure needs that the folder lacks (the main command trains only the Recurrent U-Net, Figure 1
shows the ResU-Net) is trained with the folder's own settings into ``<results>/figure_units``, outside the
folder's tables (:mod:`tfrobseg.reporting.figure_units`), and reused from there by later calls. With
``train=False`` such a figure is skipped instead; when none of the three model / loss pairs is there, a
documented fallback panel is drawn for each model that was run, with the most robust loss
(``fallback_<model>_<loss>``); the missing figures are listed in ``index.md`` and printed.

Robustness curves: mean Dice, HD95 and ASSD against ε, one line per model and one per loss,
with a band of ± one standard deviation across the cells (units) at each ε.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from tfrobseg import study
from tfrobseg.errors import UnitFilesError
from tfrobseg.experiment import store
from tfrobseg.experiment.units import MARKER, Unit, UnitRecord
from tfrobseg.io import atomic_write_text, save_figure
from tfrobseg.reporting.figure_units import (
    FIGURE_UNITS_DIR,
    find_figure_unit,
    train_figure_unit,
)
from tfrobseg.reporting.tables import (
    cell_means,
    display_names,
    first_attack_rows,
    most_robust_loss,
    study_order,
)

__all__ = ["OVERLAY_ALPHA", "OVERLAY_COLOURS", "attack_figure", "attack_slice", "draw_attack_figure", "load_unit_model",
           "make_figures", "overlay_rgba", "robustness_curves"]


def _display(name: str, kind: str) -> str:
    return display_names(kind)[0].get(name, name)


def robustness_curves(results: pd.DataFrame, out_dir: str | Path, phase: str = "crossval") -> list[Path]:
    """Dice / HD95 / ASSD against ε per model and per loss (PNG + PDF per grouping)."""
    data = results[results["phase"] == phase] if "phase" in results else results
    if data.empty:
        return []
    cells = cell_means(data)
    written: list[Path] = []
    for by in ("model", "loss"):
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
        groups = dict(list(cells.groupby(by)))
        for key in study_order(groups, by):
            grp = groups[key]
            stats = grp.groupby("epsilon")[["dice", "hd95", "assd"]].agg(["mean", "std"])
            eps = stats.index.to_numpy(dtype=float)
            for ax, m in zip(axes, ("dice", "hd95", "assd")):
                mean = stats[(m, "mean")].to_numpy()
                std = np.nan_to_num(stats[(m, "std")].to_numpy())
                (line,) = ax.plot(eps, mean, marker="o", ms=3, label=_display(key, by))
                ax.fill_between(eps, mean - std, mean + std, color=line.get_color(), alpha=0.12)
        for ax, m in zip(axes, ("dice", "hd95", "assd")):
            ax.set_xlabel("ε (z-score units)")
            ax.set_ylabel(study.METRIC_HEADERS[m].replace("DC", "Dice"))
            ax.grid(alpha=0.3)
        axes[0].set_ylim(0, 1)
        axes[0].legend(fontsize=8)
        n_units = data.groupby(["model", "loss", "fold"]).ngroups
        fig.suptitle(f"{phase}: robustness per {by} ({n_units} units; line = mean of the units' patient means, "
                     "band = ± std across units)")
        fig.tight_layout()
        written += save_figure(fig, Path(out_dir) / f"robustness_{phase}_per_{by}")
    return written


def load_unit_model(unit_dir: Path) -> Any:
    """Load a unit's ``best.keras`` (rebuilding the architecture from its record if needed).

    Raises :class:`~tfrobseg.errors.UnitFilesError` naming the unit when the file cannot be loaded.
    """
    import keras

    import tfrobseg.defenses.model  # registers DefendedModel (a defended unit's best.keras)
    import tfrobseg.models  # noqa: F401  (registers the custom layers for deserialisation)

    try:
        try:
            return keras.saving.load_model(unit_dir / store.MODEL_NAME, compile=False)
        except (TypeError, ValueError):
            # Custom layers not registered for deserialisation: rebuild and load the weights only.
            from tfrobseg.models import build_model

            rec = UnitRecord.read(unit_dir)
            size = rec.settings.image_size
            model = build_model(rec.unit.model, (size, size, 1), filters=rec.settings.filters)
            model.load_weights(unit_dir / store.MODEL_NAME)
            return model
    except Exception as exc:  # noqa: BLE001 (any failure to read the file makes it unusable: say which unit)
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise UnitFilesError(f"{unit_dir}: {store.MODEL_NAME} cannot be loaded ({type(exc).__name__}: {first}); "
                             "recompute the unit (run its experiment again with the same --out after removing its "
                             f"{MARKER}), and check the folder with experiments/verify.py") from None


def attack_slice(unit_dir: Path) -> dict[str, Any]:
    """Re-run the unit's attack on its figure slice; returns images, predictions and metadata.

    The attack is the run's first (the one of its tables, :func:`~tfrobseg.reporting.tables.first_attack_rows`)
    with its options. For the ensemble, each ε is attacked with the member that was worst for the patient at
    that ε (``worst_attack`` in the unit's ``metrics.csv``; the clean row with the first member).
    """
    from tfrobseg.attacks import attack_dataset
    from tfrobseg.dataset.pipeline import make_dataset
    from tfrobseg.losses import get_loss

    rec = UnitRecord.read(unit_dir)
    s = rec.settings
    pid = rec.patients.eval[0]
    ds = make_dataset(s.data_dir, [pid], batch_size=1, shuffle=False, image_size=s.image_size)
    areas = [(float(np.asarray(e["mask"]).sum()), int(np.asarray(e["slice_index"]).reshape(-1)[0])) for e in ds]
    best_area, best_slice = max(areas)
    one = ds.filter(lambda e: e["slice_index"][0] == best_slice)
    model = load_unit_model(unit_dir)
    outs = []
    for spec, epsilons in _figure_attacks(unit_dir, s.attack_specs()[0], pid, list(s.epsilons)):
        outs += attack_dataset(model, one, epsilons, attack=spec.name, loss=get_loss(rec.attack_loss), batch_size=1,
                               return_images=True, jit_compile=False, attack_precision=s.attack_precision,
                               **spec.options)
    outs.sort(key=lambda o: o["epsilon"])
    mask = next(iter(one))["mask"].numpy()[0, ..., 0] > 0.5
    return {"patient_id": pid, "slice_index": best_slice, "mask": mask, "outs": outs, "record": rec,
            "gt_area": best_area}


def _figure_attacks(unit_dir: Path, spec: Any, patient: str, epsilons: list[float]) -> list[tuple[Any, list[float]]]:
    """``[(attack spec, its ε)]`` that draw the figure of ``spec``: itself at every ε, or for the ensemble each
    member at the ε where it was the worst for ``patient``."""
    if not spec.is_ensemble:
        return [(spec, epsilons)]
    rows = store.tidy_rows(pd.read_csv(unit_dir / store.METRICS_NAME))
    rows = rows[(rows["attack"] == spec.name) & (rows["patient_id"].astype(str) == patient)]
    worst = dict(zip(rows["epsilon"].astype(float).round(10), rows["worst_attack"]))
    by_name = {m.name: m for m in spec.members}
    plan: dict[Any, list[float]] = {}
    for eps in epsilons:
        member = by_name.get(worst.get(round(eps, 10)) or "", spec.members[0])
        plan.setdefault(member, []).append(eps)
    return list(plan.items())


OVERLAY_COLOURS = {
    "agreement": (1.0, 1.0, 0.0),  # reference and prediction: yellow
    "missed": (0.0, 0.8, 0.0),  # reference only: green
    "false_positive": (0.9, 0.0, 0.0),  # prediction only: red
}
OVERLAY_ALPHA = 0.55


def overlay_rgba(mask: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """(H, W, 4) overlay of a prediction on its reference: yellow overlap, green missed, red false
    positive, transparent where both are background."""
    mask, pred = np.asarray(mask, bool), np.asarray(pred, bool)
    rgba = np.zeros(mask.shape + (4,))
    for region, where in (("agreement", mask & pred), ("missed", mask & ~pred), ("false_positive", ~mask & pred)):
        rgba[where, :3] = OVERLAY_COLOURS[region]
        rgba[where, 3] = OVERLAY_ALPHA
    return rgba


def attack_figure(unit_dir: Path, title: str, stem: Path, threshold: float = 0.5) -> list[Path]:
    """Rows = ε; columns = attacked image, perturbation heatmap, prediction vs reference."""
    return draw_attack_figure(attack_slice(unit_dir), title, stem, threshold)


def draw_attack_figure(res: dict[str, Any], title: str, stem: Path, threshold: float = 0.5) -> list[Path]:
    """Draw and save :func:`attack_figure` from an :func:`attack_slice` result."""
    from tfrobseg import metrics

    outs, mask = res["outs"], res["mask"]
    n = len(outs)
    clean = outs[0]["image"][..., 0]
    lim = max(float(np.abs(o["adversarial"][..., 0] - clean).max()) for o in outs) or 1.0
    vmin, vmax = np.percentile(clean, [1, 99])
    fig, axes = plt.subplots(n, 3, figsize=(6.6, 2.0 * n + 0.8), layout="constrained")
    axes = np.atleast_2d(axes)
    for row, o in zip(axes, outs):
        adv = o["adversarial"][..., 0]
        pred = o["prediction"][..., 0] > threshold
        dice = metrics.dice(pred, mask)
        row[0].imshow(adv, cmap="gray", vmin=vmin, vmax=vmax)
        row[0].set_ylabel(f"ε = {o['epsilon']:.1f}", fontsize=9)
        im = row[1].imshow(adv - clean, cmap="coolwarm", vmin=-lim, vmax=lim)
        row[2].imshow(adv, cmap="gray", vmin=vmin, vmax=vmax)
        row[2].imshow(overlay_rgba(mask, pred))
        row[2].text(2, 10, f"Dice {dice:.2f}", color="white", fontsize=7, va="top",
                    bbox={"facecolor": "black", "alpha": 0.5, "pad": 1})
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_title("attacked image", fontsize=9)
    axes[0, 1].set_title("perturbation x_adv − x", fontsize=9)
    axes[0, 2].set_title("prediction vs reference", fontsize=9)
    fig.colorbar(im, ax=axes[-1, 1], orientation="horizontal", fraction=0.08, pad=0.04, label="x_adv − x")
    fig.suptitle(f"{title}\n{res['record'].unit.uid}, patient {res['patient_id']} slice {res['slice_index']}; "
                 "yellow overlap, green missed, red false positive", fontsize=9)
    return save_figure(fig, stem)


def make_figures(results_dir: str | Path, out_dir: str | Path | None = None, *, train: bool = True,
                 progress: bool = True, quiet: bool = False) -> dict[str, Any]:
    """Write Figures 1–3 and the robustness curves.

    Returns ``{"written": [paths], "missing": [explanations], "most_robust_loss": name, "trained": [unit
    folders trained by this call]}``. A figure's unit that the folder lacks is trained into
    ``<results>/figure_units`` (:func:`~tfrobseg.reporting.figure_units.train_figure_unit`; ``progress`` and
    ``quiet`` as for :func:`~tfrobseg.experiment.grid.run_grid`), or with ``train=False`` the figure is skipped
    with an explanation, never faked. Every unit a figure needs is found (or trained), checked against its
    marker and attacked before any figure is written, so an error (FileNotFoundError: no results;
    :class:`~tfrobseg.errors.UnitFilesError`: a unit's model; :class:`~tfrobseg.errors.FigureUnitError`: a
    unit that cannot be trained) leaves no half set of figures and creates no figure folder.
    """
    root = Path(results_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"--results {root}: no such folder (the --out of crossval.py / holdout.py)")
    out = Path(out_dir) if out_dir else root / "figures"
    results = first_attack_rows(store.collect_metrics(root))[0]  # what the tables show
    if results.empty:
        raise LookupError(f"no completed units (with {MARKER}) under {root}")
    phase = "crossval" if (results["phase"] == "crossval").any() else "holdout"
    best = most_robust_loss(results, phase)
    trained: list[Path] = []

    def train_unit(model: str, loss: str, number: int) -> Path | None:
        if not train:
            return None
        unit = Unit(phase, model, loss, 0 if phase == "crossval" else None)
        trained.append(train_figure_unit(root, unit, number, progress=progress, quiet=quiet))
        return trained[-1]

    panels, missing = _plan_panels(root, results, phase, best, train_unit)
    computed = [(attack_slice(unit), title, stem) for unit, title, stem in panels]
    written: list[Path] = []
    for p in ("crossval", "holdout"):
        written += robustness_curves(results, out, p)
    for res, title, stem in computed:
        written += draw_attack_figure(res, title, out / stem)
    index = ["# Figures", "", f"Most robust loss ({phase} loss table, highest attacked mean Dice): {best}", ""]
    index += [f"- {p.name}" for p in written if p.suffix == ".png"]
    extra = [unit.relative_to(root).as_posix() for unit, _, _ in panels if unit.is_relative_to(root / FIGURE_UNITS_DIR)]
    if extra:
        index += ["", "Trained for the figures only, with this folder's settings (not in its tables):"]
        index += [f"- {uid}" for uid in extra]
    if missing:
        index += ["", "Not made:"] + [f"- {m}" for m in missing]
    atomic_write_text(out / "index.md", "\n".join(index) + "\n")
    return {"written": written, "missing": missing, "most_robust_loss": best, "trained": trained}


def _plan_panels(root: Path, results: pd.DataFrame, phase: str, best: str | None,
                 train_unit: Callable[[str, str, int], Path | None]) -> tuple[list[tuple[Path, str, str]], list[str]]:
    """The attack panels to draw (unit folder, title, file stem) and the figures that cannot be made.

    A figure's unit is looked for in ``root``, then in ``root/figure_units``; when it is in neither,
    ``train_unit(model, loss, figure number)`` trains it (or returns None: the figure is skipped).
    """
    panels: list[tuple[Path, str, str]] = []
    missing: list[str] = []
    for spec in study.FIGURES:
        loss = spec.loss or best
        unit = find_figure_unit(root, spec.model, loss) if loss else None
        if unit is None and loss:
            unit = train_unit(spec.model, loss, spec.number)
        if unit is None:
            missing.append(
                f"Figure {spec.number} ({spec.title}: {spec.model} + {loss}) needs that trained unit, which is not "
                f"in {root} nor in {root / FIGURE_UNITS_DIR}; run figures/make_figures.py without --no-train to "
                f"train it there, or e.g. `python experiments/crossval.py --model {spec.model} --loss {loss}`"
            )
            continue
        title = f"Figure {spec.number}: {_display(spec.model, 'model')} trained with {_display(loss, 'loss')}"
        if spec.loss is None:
            title += f" (most robust loss in the {phase} loss table)"
        panels.append((unit, title, f"figure{spec.number}_{spec.model}_{loss}"))
    if not panels and best is not None:
        # Fallback: none of the study's three model/loss pairs was run (e.g. only U-Net); draw the
        # same panel for every model that was, with the most robust loss, so the attack is visible.
        for model in sorted(results["model"].unique()):
            unit = store.find_unit(root, model, best)
            if unit is not None:
                title = (f"Fallback panel: {_display(model, 'model')} trained with {_display(best, 'loss')} "
                         "(the study's figure models were not run)")
                panels.append((unit, title, f"fallback_{model}_{best}"))
    return panels, missing
