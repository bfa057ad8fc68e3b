"""Defended networks against their baseline: Liu et al.'s Table 2 layout, paired tests, a bootstrap CI of the
median difference, the gradient-masking flag, and Dice (HD95, ASSD) vs ε per defense.

The question is issue 16's: does a defense keep a higher Dice than the undefended network under the same
attack, on the same cases? Input: tidy rows, one per attack × defense × view × ε × case, with the columns
``attack``, ``defense`` (its label; the undefended network's is :data:`~tfrobseg.defenses.config.BASELINE`),
``view`` (``"deployed"``, or e.g. ``"T=100"`` for the distilled network attacked at its training
temperature), ``epsilon``, the case (``model``, ``loss``, ``fold``, ``patient_id``) and the metric.

Every (attack, defense, view, ε) is compared with the baseline's *deployed* rows of the same attack and ε,
paired case by case (same model, loss, fold and patient): the per-case difference is defense − baseline.
Two-sided Wilcoxon signed-rank test on those differences (:func:`~tfrobseg.reporting.stats.wilcoxon_signed_rank`,
zero differences dropped, all zero -> p = 1), Bonferroni-corrected over the m tests of that attack (every
non-baseline (defense, view) × ε, clean ε = 0 included, as Liu et al. test every ε); a paired percentile
bootstrap interval of the median difference (cases resampled, seeded;
:func:`~tfrobseg.reporting.stats.bootstrap_median_ci`). A defense whose cases are not exactly the baseline's
is refused: an unpaired case would silently change the test.

Gradient masking (Carlini & Wagner on distillation): a check view attacks the same network through another
output (the distilled student at its training temperature). :func:`masking_flags` flags a defense that is
significantly better than the baseline at the largest ε only as deployed, not under its check view.

Plain pandas / NumPy / SciPy / matplotlib: importing it never imports TensorFlow.
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from tfrobseg.defenses.config import BASELINE
from tfrobseg.defenses.masking import DEPLOYED
from tfrobseg.io import atomic_write_csv, atomic_write_text, save_figure
from tfrobseg.reporting.attack_comparison import ATTACK_ORDER, check_metric
from tfrobseg.reporting.formatting import mean_std, to_markdown
from tfrobseg.reporting.stats import (
    bonferroni,
    bootstrap_median_ci,
    require_columns,
    summarize,
    wilcoxon_signed_rank,
)

__all__ = ["CASE", "CI_LEVEL", "defense_table", "liu_layout", "masking_flags", "plot_defenses",
           "write_defense_report"]

#: The columns that make one case: a defense's row and the baseline's row with these values (and the same
#: attack and ε) are a pair.
CASE = ("model", "loss", "fold", "patient_id")
#: Level of the bootstrap interval of the median difference (a per-comparison interval).
CI_LEVEL = 0.95
_CI = f"{CI_LEVEL * 100:g} %"
_GROUP = ["attack", "defense", "view", "epsilon"]
_HIGHER_IS_BETTER = {"dice": True, "hd95": False, "assd": False}
_HEADERS = {"dice": "Dice", "hd95": "HD95", "assd": "ASSD"}
_DECIMALS = {"dice": 3, "hd95": 2, "assd": 2}
_COLUMNS = ["attack", "defense", "view", "epsilon", "metric", "n", "mean", "std", "median_diff", "ci_low",
            "ci_high", "p_value", "p_bonferroni", "m", "significant"]
_FLAG_COLUMNS = ["attack", "defense", "view", "epsilon", "deployed_median_diff", "deployed_p_bonferroni",
                 "view_median_diff", "view_p_bonferroni", "flagged"]


def _rank(attack: str) -> tuple[int, str]:
    return (ATTACK_ORDER.index(attack) if attack in ATTACK_ORDER else len(ATTACK_ORDER), attack)


def _eps(value: float) -> str:
    return f"ε={value:g}"


def _prepare(rows: pd.DataFrame, baseline: str, metric: str) -> pd.DataFrame:
    """The rows' needed columns, ε rounded to 6 decimals (so that 0.1 and 0.1000000001 pair), checked."""
    check_metric(metric)
    require_columns(rows, [*_GROUP, *CASE, metric], "defense_table")
    data = rows[[*_GROUP, *CASE, metric]].copy()
    for column in ("attack", "defense", "view"):
        data[column] = data[column].astype(str)
    data["epsilon"] = pd.to_numeric(data["epsilon"], errors="raise").astype(float).round(6)
    values = pd.to_numeric(data[metric], errors="coerce").to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"defense_table: column {metric!r} has {int((~np.isfinite(values)).sum())} non-finite "
                         "value(s); the metric functions never give them, so an upstream step is broken")
    data[metric] = values
    repeated = data.duplicated(subset=[*_GROUP, *CASE])
    if repeated.any():
        example = data.loc[repeated, [*_GROUP, *CASE]].iloc[0].to_dict()
        raise ValueError(f"defense_table: {int(repeated.sum())} row(s) repeat an attack × defense × view × ε × case, "
                         f"e.g. {example}")
    if not (data["defense"] == baseline).any():
        raise ValueError(f"defense_table: no rows of the baseline {baseline!r} in column 'defense'; defenses: "
                         f"{sorted(data['defense'].unique())}")
    return data


def _paired(group: pd.DataFrame, base: pd.DataFrame, metric: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    """The defense's and the baseline's values of ``group``'s cases, in one order; a one-line ValueError when
    the two sets of cases differ."""
    mine = group.set_index(list(CASE))[metric]
    theirs = base.set_index(list(CASE))[metric]
    extra, missing = mine.index.difference(theirs.index), theirs.index.difference(mine.index)
    if len(extra) or len(missing):
        case = (extra if len(extra) else missing)[0]
        example = {c: v.item() if isinstance(v, np.generic) else v for c, v in zip(CASE, case)}
        raise ValueError(f"defense_table: {where} does not pair with the baseline's cases: {len(extra)} case(s) "
                         f"without a baseline row, {len(missing)} baseline case(s) missing, e.g. {example}")
    return mine.to_numpy(), theirs.loc[mine.index].to_numpy()


def defense_table(rows: pd.DataFrame, *, baseline: str = BASELINE, metric: str = "dice", n_boot: int = 2000,
                  seed: int = 0, alpha: float = 0.05) -> pd.DataFrame:
    """One row per (attack, defense, view, ε): n, mean, std and, against the baseline, the paired statistics.

    Columns: ``attack, defense, view, epsilon, metric, n, mean, std`` (sample std, ddof 1; 0 for n = 1),
    ``median_diff`` (median of the per-case differences defense − baseline), ``ci_low, ci_high`` (the
    :data:`CI_LEVEL` paired percentile bootstrap interval of that median, ``n_boot`` resamples from ``seed``),
    ``p_value`` (two-sided Wilcoxon signed-rank), ``p_bonferroni`` (min(1, p · m)), ``m`` (tests of that
    attack: its non-baseline (defense, view) × ε rows) and ``significant`` (p_bonferroni < alpha). The
    baseline's rows carry n, mean and std, NaN statistics, m = 0 and significant False. Rows are ordered by
    attack (:data:`~tfrobseg.reporting.attack_comparison.ATTACK_ORDER`), the baseline first, then the
    defenses in order of appearance, the deployed view first, then ε.

    Raises ValueError (one line) on missing columns, an unknown metric, non-finite values, a repeated row, no
    baseline rows (or none deployed under an attack), or a defense whose cases are not the baseline's.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"defense_table: alpha must be in (0, 1), got {alpha}")
    data = _prepare(rows, baseline, metric)
    summary = summarize(data, _GROUP, [metric]).rename(columns={f"{metric}_mean": "mean", f"{metric}_std": "std"})
    summary["metric"] = metric
    defenses = [baseline] + [d for d in pd.unique(data["defense"]) if d != baseline]
    summary["_defense"] = summary["defense"].map(defenses.index)
    summary["_view"] = summary["view"] != DEPLOYED
    summary["_attack"] = summary["attack"].map(_rank)
    summary = summary.sort_values(["_attack", "_defense", "_view", "view", "epsilon"], kind="stable")
    groups = dict(tuple(data.groupby(_GROUP, sort=False)))
    found: dict[str, list[float | int]] = {column: [] for column in ("median_diff", "ci_low", "ci_high", "p_value", "m")}
    for attack, part in summary.groupby("attack", sort=False):
        if not any(key[:3] == (attack, baseline, DEPLOYED) for key in groups):
            raise ValueError(f"defense_table: attack {attack!r} has no rows of the baseline {baseline!r} with view "
                             f"{DEPLOYED!r}")
        m = int((part["defense"] != baseline).sum())
        for defense, view, eps in part[["defense", "view", "epsilon"]].itertuples(index=False):
            if defense == baseline:
                values: tuple[float | int, ...] = (np.nan, np.nan, np.nan, np.nan, 0)
            else:
                where = f"{defense!r} (view {view!r}) under {attack!r} at {_eps(eps)}"
                base = groups.get((attack, baseline, DEPLOYED, eps))
                if base is None:
                    raise ValueError(f"defense_table: {where} has no baseline rows at that ε")
                mine, theirs = _paired(groups[(attack, defense, view, eps)], base, metric, where)
                low, high = bootstrap_median_ci(mine - theirs, n_boot=n_boot, seed=seed, level=CI_LEVEL)
                _, p = wilcoxon_signed_rank(mine, theirs)
                values = (float(np.median(mine - theirs)), low, high, p, m)
            for column, value in zip(found, values):
                found[column].append(value)
    for column, column_values in found.items():
        summary[column] = column_values
    tested = summary["m"] > 0
    summary["p_bonferroni"] = np.nan
    for _, part in summary[tested].groupby("attack", sort=False):
        summary.loc[part.index, "p_bonferroni"] = bonferroni(part["p_value"].to_numpy(), int(part["m"].iat[0]))
    summary["significant"] = tested & (summary["p_bonferroni"] < alpha)
    summary["m"] = summary["m"].astype(int)
    return summary[_COLUMNS].reset_index(drop=True)


def _better(median_diff: float, p_bonferroni: float, metric: str, alpha: float) -> bool:
    """Significantly better than the baseline: corrected p < alpha and the median difference in the metric's
    good direction (higher Dice, lower distances)."""
    direction = median_diff > 0 if _HIGHER_IS_BETTER[metric] else median_diff < 0
    return bool(direction and p_bonferroni < alpha)


def masking_flags(table: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Per (attack, defense, check view): is the defense's win at the largest ε only a win of the deployed view?

    ``table`` is :func:`defense_table`'s. ε is the largest one at which both the deployed view and the check
    view were attacked. ``flagged`` is True when there the deployed network is significantly better than the
    baseline (p_bonferroni < alpha, median difference in the metric's good direction) and the check view is
    not: the defense "wins only under the masked attack". Columns: attack, defense, view, epsilon,
    deployed_median_diff, deployed_p_bonferroni, view_median_diff, view_p_bonferroni, flagged; no rows when
    no defense has a check view.
    """
    require_columns(table, ["attack", "defense", "view", "epsilon", "metric", "median_diff", "p_bonferroni"],
                    "masking_flags")
    if not 0 < alpha < 1:
        raise ValueError(f"masking_flags: alpha must be in (0, 1), got {alpha}")
    tested = table[table["p_bonferroni"].notna()]
    out = []
    for (attack, defense), part in tested.groupby(["attack", "defense"], sort=False):
        deployed = part[part["view"] == DEPLOYED].set_index("epsilon")
        for view, checks in part[part["view"] != DEPLOYED].groupby("view", sort=False):
            common = sorted(set(deployed.index) & set(checks["epsilon"]))
            if not common:
                raise ValueError(f"masking_flags: {defense!r} under {attack!r} has no ε at which both the deployed "
                                 f"view and view {view!r} were attacked")
            eps = common[-1]
            dep, check = deployed.loc[eps], checks.set_index("epsilon").loc[eps]
            metric = check_metric(str(check["metric"]))
            flagged = (_better(dep["median_diff"], dep["p_bonferroni"], metric, alpha)
                       and not _better(check["median_diff"], check["p_bonferroni"], metric, alpha))
            out.append([attack, defense, view, eps, dep["median_diff"], dep["p_bonferroni"], check["median_diff"],
                        check["p_bonferroni"], flagged])
    return pd.DataFrame(out, columns=_FLAG_COLUMNS).astype({"flagged": bool})


def _p_text(p: float) -> str:
    """Liu et al.'s p: four significant digits, scientific below 0.001 (``0.2287``, ``6.628e-4``)."""
    if not np.isfinite(p):
        return "—"
    if p >= 1e-3:
        return f"{p:.4g}"
    mantissa, exponent = f"{p:.3e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _row_label(defense: str, view: str) -> str:
    return defense if view == DEPLOYED else f"{defense} [view {view}]"


def liu_layout(table: pd.DataFrame, attack: str, *, alpha: float = 0.05) -> pd.DataFrame:
    """Liu et al.'s Table 2 for one attack: a row per defense (and check view), the baseline first.

    Columns: ``defense``; ``"<Metric> ε=<e>"`` per ε as ``"0.812 ± 0.101*"`` (mean ± sample std; * when the
    Bonferroni-corrected p < alpha); ``"p ε=<e>"`` per ε (the corrected p, four significant digits, scientific
    below 0.001; "—" for the baseline); ``"Δ median [95 % CI] ε=<max>"`` (the median difference to the baseline
    and its :data:`CI_LEVEL` bootstrap interval at the largest ε); ``masking`` ("flagged" / "no" for a defense with a
    check view, on all its rows, see :func:`masking_flags`; "—" otherwise). Cells a defense lacks are "—".
    """
    require_columns(table, _COLUMNS, "liu_layout")
    part = table[table["attack"] == attack]
    if part.empty:
        raise ValueError(f"liu_layout: no rows of attack {attack!r}; attacks: {sorted(table['attack'].unique())}")
    metric = check_metric(str(part["metric"].iat[0]))
    decimals = _DECIMALS[metric]
    eps_values = sorted(part["epsilon"].unique())
    top = eps_values[-1]
    flags = masking_flags(part, alpha)
    flag_of = {d: ("flagged" if f.any() else "no") for d, f in flags.groupby("defense", sort=False)["flagged"]}
    rows = []
    for (defense, view), group in part.groupby(["defense", "view"], sort=False):
        cells = group.set_index("epsilon")
        row = {"defense": _row_label(defense, view)}
        for e in eps_values:
            if e not in cells.index:
                row[f"{_HEADERS[metric]} {_eps(e)}"] = "—"
                continue
            star = "*" if cells.at[e, "p_bonferroni"] < alpha else ""
            row[f"{_HEADERS[metric]} {_eps(e)}"] = mean_std(cells.at[e, "mean"], cells.at[e, "std"], decimals) + star
        for e in eps_values:
            row[f"p {_eps(e)}"] = _p_text(cells.at[e, "p_bonferroni"]) if e in cells.index else "—"
        if top in cells.index and np.isfinite(cells.at[top, "median_diff"]):
            md, low, high = (cells.at[top, c] for c in ("median_diff", "ci_low", "ci_high"))
            row[f"Δ median [{_CI} CI] {_eps(top)}"] = f"{md:+.{decimals}f} [{low:+.{decimals}f}, {high:+.{decimals}f}]"
        else:
            row[f"Δ median [{_CI} CI] {_eps(top)}"] = "—"
        row["masking"] = flag_of.get(defense, "—")
        rows.append(row)
    return pd.DataFrame(rows)


def plot_defenses(table: pd.DataFrame, attack: str) -> plt.Figure:
    """Mean metric ± std band vs ε under ``attack``, one line per defense: the baseline black, each defense in
    its colour, its check views dashed in the same colour."""
    require_columns(table, ["attack", "defense", "view", "epsilon", "metric", "n", "mean", "std", "p_value"],
                    "plot_defenses")
    part = table[table["attack"] == attack]
    if part.empty:
        raise ValueError(f"plot_defenses: no rows of attack {attack!r}; attacks: {sorted(table['attack'].unique())}")
    metric = check_metric(str(part["metric"].iat[0]))
    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    palette = iter(plt.get_cmap("tab10").colors)
    colour_of: dict[str, object] = {}
    for (defense, view), group in part.groupby(["defense", "view"], sort=False):
        group = group.sort_values("epsilon")
        is_baseline = group["p_value"].isna().all()
        if defense not in colour_of:
            colour_of[defense] = "black" if is_baseline else next(palette, "0.4")
        colour = colour_of[defense]
        dashed = view != DEPLOYED
        ax.plot(group["epsilon"], group["mean"], color=colour, ls="--" if dashed else "-",
                lw=2.2 if is_baseline else 1.6, marker="x" if dashed else "o", ms=4, label=_row_label(defense, view))
        ax.fill_between(group["epsilon"], group["mean"] - group["std"], group["mean"] + group["std"], color=colour,
                        alpha=0.06 if dashed else 0.12, lw=0)
    ax.set_xlabel("ε (model-input units)")
    ax.set_ylabel(f"{_HEADERS[metric]} (mean ± std)")
    if metric == "dice":
        ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title(f"{_HEADERS[metric]} vs ε under {attack}, per defense (up to {int(part['n'].max())} cases)",
                 fontsize=9)
    fig.tight_layout()
    return fig


def _slug(attack: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", attack)


def _notes(part: pd.DataFrame, metric: str, n_boot: int, seed: int, alpha: float) -> list[str]:
    m, n_min, n_max = int(part["m"].max()), int(part["n"].min()), int(part["n"].max())
    return [
        (f"{_HEADERS[metric]}: mean ± sample std (ddof 1) over the n cases (model × loss × fold × patient) at each ε; "
         f"n = {n_min}" + ("" if n_min == n_max else f"–{n_max}")),
        ("test: two-sided Wilcoxon signed-rank test of the per-case differences defense − baseline, paired on model, "
         "loss, fold, patient and ε under the same attack (baseline as deployed); zero differences dropped, all zero "
         "-> p = 1"),
        (f"correction: Bonferroni over m = {m} tests of this attack (every defense × view × ε); p is the corrected "
         f"one, * = corrected p < {alpha:g}"),
        (f"Δ median: median per-case difference at the largest ε, [{_CI} CI] a paired percentile bootstrap "
         f"over cases ({n_boot} resamples, seed {seed}), not corrected for multiplicity"),
        ("masking: a defense with a check view (e.g. the distilled network attacked at its training temperature) is "
         "flagged when at the largest ε it is significantly better than the baseline as deployed but not under the "
         "check view"),
    ]


def write_defense_report(rows: pd.DataFrame, out_dir: str | Path, *, baseline: str = BASELINE,
                         metric: str = "dice", n_boot: int = 2000, seed: int = 0) -> list[Path]:
    """Per attack, ``defenses_<attack>.csv`` (:func:`defense_table`'s rows), ``defenses_<attack>.md`` (Liu
    layout and what the test, correction, m, CI and flag are) and ``defenses_<metric>_vs_eps_<attack>.{png,pdf}``
    under ``out_dir``, written atomically; returns the paths. Significance at alpha 0.05.

    Everything is computed before the first file is written, so bad rows leave no file.
    """
    table = defense_table(rows, baseline=baseline, metric=metric, n_boot=n_boot, seed=seed)
    outputs = []
    for attack, part in table.groupby("attack", sort=False):
        layout = liu_layout(part, attack)
        title = f"Defenses under {attack}: {_HEADERS[metric]} vs ε against the baseline {baseline!r}"
        md = f"# {title}\n\n" + to_markdown(layout, notes=_notes(part, metric, n_boot, seed, 0.05))
        outputs.append((_slug(attack), part.reset_index(drop=True), md, plot_defenses(part, attack)))
    out = Path(out_dir)
    paths: list[Path] = []
    for slug, part, md, fig in outputs:
        paths.append(atomic_write_csv(out / f"defenses_{slug}.csv", part))
        paths.append(atomic_write_text(out / f"defenses_{slug}.md", md))
        paths += save_figure(fig, out / f"defenses_{metric}_vs_eps_{slug}")
    return paths
