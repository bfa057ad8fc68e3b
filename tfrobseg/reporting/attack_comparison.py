"""Attacks side by side: mean Dice (or HD95 / ASSD) against ε, one line per attack, for one unit or over units.

The question this answers is the one issue 15 raises: how much does the choice of attack change the
robustness a study reports? FGSM, i-FGSM, PGD, the segmentation-aware attacks (SegPGD, CosPGD, APGD,
DAG), the worst-case ensemble ("robust Dice": per case the member attack with the lowest Dice) and the
random controls (sign, Gaussian, Rician noise in the same L∞ box) are put in one table and one figure.

Input: the tidy rows of :func:`tfrobseg.experiment.store.collect_attack_rows`, one row per
unit × attack × patient × ε, with ``attack`` (name, or ``ensemble``) and ``attack_params`` (the
canonical JSON of the attack's options). What is averaged: every row of an attack's setting at one ε,
i.e. its patients of the chosen unit, or its patients × units over all units; the ± is the sample std
(ddof 1) of those values (:func:`tfrobseg.reporting.stats.summarize`: one value gives std 0, with n = 1
beside it). An attack run with several settings gets one line per setting, labelled with the options
that differ between them (``PGD (steps=10)``, ``PGD (steps=40)``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from tfrobseg import study
from tfrobseg.attack_names import ENSEMBLE, NOISE_CONTROLS
from tfrobseg.io import atomic_write_csv, atomic_write_text, save_figure
from tfrobseg.reporting.formatting import mean_std, to_markdown
from tfrobseg.reporting.grid import HOLDOUT_FOLD
from tfrobseg.reporting.stats import require_columns, summarize

__all__ = ["ATTACK_NAMES", "ATTACK_ORDER", "ENSEMBLE", "METRICS", "NOISE_CONTROLS", "attack_labels", "check_metric",
           "format_attack_table", "plot_attacks", "select_unit", "summarize_attacks", "unit_ids",
           "write_attack_comparison"]

#: Table and legend order: single-step, iterative, segmentation-aware, the ensemble, then the controls;
#: an attack not listed here follows, alphabetically.
ATTACK_ORDER = ("fgsm", "ifgsm", "targeted_ifgsm", "pgd", "segpgd", "cospgd", "targeted_cospgd", "apgd", "dag",
                ENSEMBLE, *NOISE_CONTROLS)
ATTACK_NAMES = {"fgsm": "FGSM", "ifgsm": "i-FGSM", "targeted_ifgsm": "targeted i-FGSM", "pgd": "PGD",
                "segpgd": "SegPGD", "cospgd": "CosPGD", "targeted_cospgd": "targeted CosPGD", "apgd": "APGD",
                "dag": "DAG", ENSEMBLE: "ensemble (robust)", "noise": "sign noise", "gaussian": "Gaussian noise",
                "rician": "Rician noise"}
METRICS = study.METRICS
_HEADERS = {"dice": "Dice", "hd95": "HD95 (mm)", "assd": "ASSD (mm)"}
_DECIMALS = {"dice": 3, "hd95": 2, "assd": 2}
_PCT = "epsilon_pct_std"


def check_metric(metric: str) -> str:
    """``metric`` if it is one of :data:`METRICS`; else a one-line ValueError naming the choices."""
    if metric not in METRICS:
        raise ValueError(f"metric {metric!r} is not one of {', '.join(METRICS)}")
    return metric


def unit_ids(rows: pd.DataFrame) -> pd.Series:
    """Each row's unit as ``phase/model/loss/fold<k>`` (``.../holdout`` for the hold-out), as in the results
    folder's layout (:attr:`tfrobseg.experiment.units.Unit.uid`)."""
    require_columns(rows, ["phase", "model", "loss", "fold"], "unit_ids")
    fold = pd.to_numeric(rows["fold"], errors="coerce")
    tail = ["holdout" if pd.isna(f) or int(f) == HOLDOUT_FOLD else f"fold{int(f)}" for f in fold]
    return rows["phase"].astype(str) + "/" + rows["model"].astype(str) + "/" + rows["loss"].astype(str) + "/" + tail


def select_unit(rows: pd.DataFrame, unit: str | None) -> pd.DataFrame:
    """The rows of ``unit`` (e.g. ``crossval/recurrent_unet/dice/fold0``), or all rows when ``unit`` is None.

    Raises LookupError (one line) when there are no rows, or none of ``unit``, naming the units there are.
    """
    if rows.empty:
        raise LookupError("no attack rows (no completed unit)")
    if unit is None:
        return rows
    uids = unit_ids(rows)
    chosen = rows[uids.to_numpy() == unit.strip("/")]
    if chosen.empty:
        present = sorted(uids.unique())
        shown = ", ".join(present[:8]) + (f" … ({len(present)} units)" if len(present) > 8 else "")
        raise LookupError(f"no unit {unit!r} in the rows; units: {shown}")
    return chosen


def _canonical(text: Any) -> str:
    """An ``attack_params`` cell as canonical JSON (sorted keys); empty cells are ``{}``. An object for an
    attack's options, a list of ``{"attack", "params"}`` for the ensemble's members."""
    if not isinstance(text, str) or not text.strip():
        return "{}"
    try:
        params = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"attack_params is not JSON: {text!r} ({exc.msg})") from None
    if not isinstance(params, (dict, list)):
        raise ValueError(f"attack_params must be a JSON object or list, got {text!r}")  # noqa: TRY004
    return json.dumps(params, sort_keys=True)


def _value(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def _member(member: Any) -> str:
    """An ensemble member as ``pgd`` or ``pgd(steps=3)``."""
    if not isinstance(member, dict) or "attack" not in member:
        return _value(member)
    options = ", ".join(f"{k}={_value(v)}" for k, v in sorted((member.get("params") or {}).items()))
    return f"{member['attack']}({options})" if options else str(member["attack"])


def _setting(params_text: str, attack_loss: str | None) -> dict[str, Any]:
    """What makes an attack's rows: its options (the ensemble: ``members``) and, when known, its loss."""
    params = json.loads(params_text)
    setting = {"members": "+".join(_member(m) for m in params)} if isinstance(params, list) else dict(params)
    return setting if attack_loss is None else {**setting, "attack_loss": attack_loss}


def attack_labels(rows: pd.DataFrame) -> pd.DataFrame:
    """``attack``, canonical ``attack_params``, ``attack_loss`` (when the rows have it) and a display
    ``label`` per row.

    ``attack_loss`` is ``same`` where it is the unit's training loss (the study's choice; over units of
    different losses, that is one setting), else the loss's name. The label is the attack's display
    name; an attack that appears with several settings gets, per setting, the options whose values differ
    between its settings: ``PGD (step_factor=1, steps=10)``, ``FGSM (attack_loss=bce)``,
    ``ensemble (robust) (members=fgsm+pgd(steps=3))``. Two different settings always differ in some
    option, so their labels differ.
    """
    require_columns(rows, ["attack"], "attack_labels")
    texts = rows["attack_params"] if "attack_params" in rows else [None] * len(rows)
    out = pd.DataFrame({"attack": rows["attack"].astype(str).to_numpy(),
                        "attack_params": [_canonical(t) for t in texts]}, index=rows.index)
    if "attack_loss" in rows:
        require_columns(rows, ["loss"], "attack_labels")
        same = rows["attack_loss"].astype(str) == rows["loss"].astype(str)
        out["attack_loss"] = np.where(same, "same", rows["attack_loss"].astype(str))
    keys = ["attack_params"] + (["attack_loss"] if "attack_loss" in out else [])
    labels: dict[tuple[str, ...], str] = {}
    for attack, group in out.groupby("attack", sort=False):
        name = ATTACK_NAMES.get(attack, attack)
        settings = {tuple(k): _setting(k[0], k[1] if len(k) > 1 else None)
                    for k in group[keys].drop_duplicates().itertuples(index=False)}
        options = sorted({k for setting in settings.values() for k in setting})
        differing = [k for k in options if len({(k in s, _value(s.get(k))) for s in settings.values()}) > 1]
        for key, setting in settings.items():
            suffix = ", ".join(f"{k}={_value(setting[k])}" for k in differing if k in setting)
            labels[(attack, *key)] = f"{name} ({suffix})" if suffix else name
    out["label"] = [labels[(a, *k)] for a, k in zip(out["attack"], out[keys].itertuples(index=False))]
    return out


def _rank(attack: str) -> tuple[int, str]:
    return (ATTACK_ORDER.index(attack) if attack in ATTACK_ORDER else len(ATTACK_ORDER), attack)


def summarize_attacks(rows: pd.DataFrame, *, unit: str | None = None) -> pd.DataFrame:
    """Mean, sample std and n of each metric per attack setting × ε (see the module docstring).

    Returns one row per (label, ε), attacks in :data:`ATTACK_ORDER`, then label, then ε: ``attack``,
    ``label``, ``attack_params``, ``attack_loss`` (when the rows have it; :func:`attack_labels`),
    ``epsilon``, ``n`` (rows averaged), ``n_units``, ``<m>_mean`` and ``<m>_std`` for each metric of
    :data:`METRICS` the rows have, and, when the rows have ``epsilon_pct_std`` (not all empty), its median
    over all selected rows at that ε (``epsilon_pct_std_median``: the same for every attack, so the table
    can state ε as % of the intensity std once per ε).

    Raises LookupError (no rows, no such unit) or ValueError (a row repeated: the same unit, attack
    setting, patient and ε twice would be counted twice).
    """
    data = select_unit(rows, unit)
    require_columns(data, ["attack", "patient_id", "epsilon"], "summarize_attacks")
    metrics = [m for m in METRICS if m in data.columns]
    if not metrics:
        raise ValueError(f"the rows have none of the metrics {', '.join(METRICS)}")
    labelled = attack_labels(data)
    data = pd.concat([data.drop(columns=list(labelled.columns), errors="ignore"), labelled], axis=1)
    data["unit"] = unit_ids(data)
    data["epsilon"] = data["epsilon"].astype(float).round(6)
    setting = ["attack_params"] + (["attack_loss"] if "attack_loss" in data else [])
    keys = ["unit", "attack", *setting, "patient_id", "epsilon"]
    repeated = data.duplicated(subset=keys)
    if repeated.any():
        example = data.loc[repeated, keys].iloc[0].to_dict()
        raise ValueError(f"{int(repeated.sum())} row(s) repeat a unit × attack setting × patient × ε, e.g. {example}")
    by = ["attack", "label", *setting, "epsilon"]
    out = summarize(data, by, metrics).set_index(by)
    out["n_units"] = data.groupby(by)["unit"].nunique()
    out = out.reset_index()
    with_pct = _PCT in data.columns and bool(data[_PCT].notna().any())
    if with_pct:
        pct = data.groupby("epsilon")[_PCT].median().rename(f"{_PCT}_median")
        out = out.join(pct, on="epsilon")
    order = sorted(range(len(out)), key=lambda i: (_rank(out["attack"].iat[i]), out["label"].iat[i],
                                                   out["epsilon"].iat[i]))
    columns = by + ["n", "n_units"] + [f"{m}_{s}" for m in metrics for s in ("mean", "std")]
    columns += [f"{_PCT}_median"] if with_pct else []
    return out.iloc[order][columns].reset_index(drop=True)


def _eps_header(eps: float, pct: float | None) -> str:
    return f"ε={eps:g}" + (f" ({pct:.1f} % σ)" if pct is not None and np.isfinite(pct) else "")


def format_attack_table(summary: pd.DataFrame, metric: str = "dice") -> pd.DataFrame:
    """One row per attack setting, one "mean ± std" column per ε (headed with ε as % of the intensity std
    when known), then ``n``: the values behind each cell (``a–b`` when it varies across ε)."""
    check_metric(metric)
    require_columns(summary, ["label", "epsilon", "n", f"{metric}_mean", f"{metric}_std"], "format_attack_table")
    pcts = summary.groupby("epsilon")[f"{_PCT}_median"].first() if f"{_PCT}_median" in summary else None
    eps_values = sorted(summary["epsilon"].unique())
    headers = {e: _eps_header(e, None if pcts is None else float(pcts[e])) for e in eps_values}
    rows = []
    for label in pd.unique(summary["label"]):
        part = summary[summary["label"] == label].set_index("epsilon")
        row = {"attack": label}
        for e in eps_values:
            row[headers[e]] = (mean_std(part.at[e, f"{metric}_mean"], part.at[e, f"{metric}_std"], _DECIMALS[metric])
                               if e in part.index else "—")
        n_min, n_max = int(part["n"].min()), int(part["n"].max())
        row["n"] = str(n_min) if n_min == n_max else f"{n_min}–{n_max}"
        rows.append(row)
    return pd.DataFrame(rows)


def _scope(data: pd.DataFrame) -> str:
    """The unit of the rows, or how many units they pool."""
    uids = sorted(unit_ids(data).unique())
    return uids[0] if len(uids) == 1 else f"all {len(uids)} units"


def _notes(summary: pd.DataFrame, pooled: bool) -> list[str]:
    over = "patient × unit" if pooled else "patient"
    notes = [f"mean ± sample std (ddof 1) of the n per-case values (one per {over}) at each ε; ε in z-score units"]
    if f"{_PCT}_median" in summary:
        notes.append("% σ: ε as % of the case's intensity std in the original (pre-z-score) image, median over cases")
    present = set(summary["attack"])
    if ENSEMBLE in present:
        notes.append(f"{ATTACK_NAMES[ENSEMBLE]}: per case, the member attack with the lowest Dice (robust Dice)")
    controls = [ATTACK_NAMES[a] for a in NOISE_CONTROLS if a in present]
    if controls:
        notes.append(f"{', '.join(controls)}: random perturbations in the same L∞ box, controls, not attacks")
    if "attack_loss" in summary:
        notes.append("attack loss: the unit's training loss unless the settings below name another; SegPGD, CosPGD "
                     "(weighted BCE), DAG (logit margin) and sign noise have their own objective and ignore it")
    for _, row in summary.drop_duplicates("label").iterrows():
        loss = row.get("attack_loss", "same")
        setting = _setting(row["attack_params"], None if loss == "same" else loss)
        if setting:
            notes.append(f"{row['label']}: " + ", ".join(f"{k}={_value(v)}" for k, v in setting.items()))
    return notes


def plot_attacks(summary: pd.DataFrame, metric: str = "dice", title: str = "") -> plt.Figure:
    """Mean ``metric`` against ε, one line per attack setting: the ensemble bold black, the noise controls
    dashed grey, the attacks in colour; a top axis gives ε as % of the intensity std when known."""
    check_metric(metric)
    require_columns(summary, ["attack", "label", "epsilon", f"{metric}_mean"], "plot_attacks")
    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    # tab10 without its grey (index 7), which belongs to the controls.
    colours = iter(c for i, c in enumerate(plt.get_cmap("tab10").colors) if i != 7)
    greys = iter(("0.35", "0.55", "0.7", "0.45", "0.62"))
    grey_markers = iter(("s", "^", "v", "D", "P"))
    for label in pd.unique(summary["label"]):
        part = summary[summary["label"] == label].sort_values("epsilon")
        attack = part["attack"].iat[0]
        if attack == ENSEMBLE:
            style = {"color": "black", "lw": 2.8, "marker": "o", "ms": 5, "zorder": 5}
        elif attack in NOISE_CONTROLS:
            style = {"color": next(greys, "0.5"), "ls": "--", "lw": 1.4, "marker": next(grey_markers, "x"), "ms": 4}
        else:
            style = {"color": next(colours, None), "lw": 1.5, "marker": "o", "ms": 3}
        ax.plot(part["epsilon"], part[f"{metric}_mean"], label=label, **style)
    ax.set_xlabel("ε (z-score units)")
    ax.set_ylabel(f"mean {_HEADERS[metric]}")
    if metric == "dice":
        ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    if f"{_PCT}_median" in summary:
        pcts = summary.groupby("epsilon")[f"{_PCT}_median"].first().dropna()
        top = ax.twiny()
        top.set_xlim(ax.get_xlim())
        top.set_xticks(pcts.index.to_numpy(dtype=float), [f"{p:.0f}" for p in pcts], fontsize=7)
        top.set_xlabel("ε as % of the intensity std (median over cases)", fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def write_attack_comparison(rows: pd.DataFrame, out_dir: str | Path, *, unit: str | None = None,
                            metric: str = "dice") -> list[Path]:
    """Write ``tables/attacks.csv`` (every metric, numeric), ``tables/attacks.md`` (one table per metric)
    and ``figures/attacks_<metric>_vs_eps.{png,pdf}`` under ``out_dir``; returns the paths.

    The table and the figure are made before the first file is written, so bad rows or options leave no file.
    """
    check_metric(metric)
    summary = summarize_attacks(rows, unit=unit)
    if f"{metric}_mean" not in summary:
        raise ValueError(f"the rows have no {metric} column")
    scope = _scope(select_unit(rows, unit))
    pooled = summary["n_units"].max() > 1
    notes = _notes(summary, pooled)
    present = [m for m in METRICS if f"{m}_mean" in summary]
    md = [f"# Attacks compared: {scope}", ""]
    for m in [metric] + [m for m in present if m != metric]:
        md.append(to_markdown(format_attack_table(summary, m), f"{_HEADERS[m]} vs ε per attack ({scope})"))
    md += [f"- {note}" for note in notes]
    n = int(summary["n"].max())
    fig = plot_attacks(summary, metric, f"{_HEADERS[metric]} vs ε per attack: {scope} (mean of up to {n} cases)")
    out = Path(out_dir)
    paths = [atomic_write_csv(out / "tables" / "attacks.csv", summary),
             atomic_write_text(out / "tables" / "attacks.md", "\n".join(md) + "\n")]
    return paths + save_figure(fig, out / "figures" / f"attacks_{metric}_vs_eps")
