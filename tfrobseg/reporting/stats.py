"""Summary tables and paired significance tests over per-case metric tables.

* :func:`summarize` — mean and standard deviation of each metric per group (tidy).
* :func:`paired_wilcoxon` — Wilcoxon signed-rank tests (SciPy) between groups on paired
  samples (e.g. the same patient × ε under two models), with Bonferroni correction across the
  comparisons made, as in Liu et al., "Robustifying Deep Networks for Medical Image
  Segmentation".
* :func:`wilcoxon_signed_rank` — the one test of two paired samples behind it (and behind the
  defenses' table), with the all-differences-zero case made explicit.
* :func:`bootstrap_median_ci` — a seeded paired percentile bootstrap of the median difference.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from tfrobseg import study

DEFAULT_METRICS = study.METRICS
CORRECTIONS = ("bonferroni", "none")


def _as_list(value: str | Sequence[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def require_columns(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [column for column in columns if column not in df.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {missing}; available: {list(df.columns)}")


def summarize(
    df: pd.DataFrame,
    by: str | Sequence[str],
    metrics: Sequence[str] = DEFAULT_METRICS,
    *,
    ddof: int = 1,
) -> pd.DataFrame:
    """Mean and standard deviation of ``metrics`` per group of ``by``.

    Returns one row per group (in sorted group order) with the ``by`` columns, ``n`` and
    ``<metric>_mean``, ``<metric>_std`` for each metric. ``ddof=1`` is the sample standard
    deviation (pandas' default; a single-row group then has std 0.0, not NaN); ``ddof=0`` the
    population one. Non-finite metric values are an error: the metric functions never produce
    them, so one here means a broken upstream step that a mean would hide.
    """
    by_columns = _as_list(by)
    metrics = list(metrics)
    require_columns(df, by_columns + metrics, "summarize")
    values = df[metrics].to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError("summarize: metric columns contain NaN or inf values")
    grouped = df.groupby(by_columns, sort=True, dropna=False)
    out = grouped.size().rename("n").to_frame()
    for metric in metrics:
        out[f"{metric}_mean"] = grouped[metric].mean()
        std = grouped[metric].std(ddof=ddof)
        out[f"{metric}_std"] = std.fillna(0.0)
    return out.reset_index()


def bonferroni(p_values: Sequence[float] | np.ndarray, n_comparisons: int | None = None) -> np.ndarray:
    """Bonferroni-corrected p-values min(1, p · m), m = number of comparisons (default: len)."""
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size if n_comparisons is None else int(n_comparisons)
    if m < p.size:
        raise ValueError(f"n_comparisons ({m}) cannot be smaller than the number of p-values ({p.size})")
    return np.minimum(1.0, p * m)


def wilcoxon_signed_rank(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    alternative: str = "two-sided",
    zero_method: str = "wilcox",
) -> tuple[float, float]:
    """Statistic and p of ``scipy.stats.wilcoxon(a, b)`` on paired samples (differences a − b).

    When every difference is zero there is no evidence of a difference: ``(0.0, 1.0)``, never NaN
    (SciPy's own answer for ``zero_method="wilcox"``, decided here so that no other zero method or
    SciPy version changes it), so a defense identical to its baseline reads "not significant".
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"wilcoxon_signed_rank needs two non-empty 1-D samples of one length, got {a.shape}, {b.shape}")
    if np.all(a == b):
        return 0.0, 1.0
    result = sps.wilcoxon(a, b, zero_method=zero_method, alternative=alternative)
    return float(result.statistic), float(result.pvalue)


def bootstrap_median_ci(
    differences: Sequence[float] | np.ndarray,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the median of paired differences.

    The cases (one difference each, so the pairing is kept) are resampled with replacement:
    ``numpy.random.default_rng(seed).integers(0, n, size=(n_boot, n))`` are the resamples, the
    median of each is taken, and the interval is their ``(1 − level) / 2`` and ``(1 + level) / 2``
    percentiles (NumPy's linear interpolation). A fixed seed makes a table reproducible; the
    interval is a per-comparison one (no multiplicity correction), beside the corrected p.
    """
    d = np.asarray(differences, dtype=np.float64)
    if d.ndim != 1 or d.size == 0 or not np.all(np.isfinite(d)):
        raise ValueError(f"bootstrap_median_ci needs a non-empty 1-D array of finite differences, got shape {d.shape}")
    if int(n_boot) != n_boot or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    index = np.random.default_rng(seed).integers(0, d.size, size=(int(n_boot), d.size))
    medians = np.median(d[index], axis=1)
    low, high = np.percentile(medians, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def paired_wilcoxon(
    df: pd.DataFrame,
    group: str,
    value: str,
    pair_on: str | Sequence[str],
    *,
    groups: Sequence[object] | None = None,
    reference: object | None = None,
    correction: str = "bonferroni",
    alpha: float = 0.05,
    alternative: str = "two-sided",
    zero_method: str = "wilcox",
) -> pd.DataFrame:
    """Wilcoxon signed-rank tests between groups on paired samples, Bonferroni-corrected.

    ``df`` is a long per-case table; ``group`` names the column whose values are compared
    (e.g. "model"), ``value`` the metric column (e.g. "dice"), ``pair_on`` the column(s) that
    identify a pair across groups (e.g. ["patient_id", "epsilon"]). Samples are matched on
    ``pair_on`` (pairs present in only one group are dropped and ``n`` reports how many were
    used). All pairs of ``groups`` (default: all groups in order of appearance) are compared,
    or only each group against ``reference`` when given. ``scipy.stats.wilcoxon(a, b)`` is
    run on each comparison; with m comparisons, ``p_bonferroni = min(1, p · m)`` and
    ``significant = p_bonferroni <= alpha`` (``correction="none"`` uses p itself).
    If every paired difference is zero there is no evidence of a difference: ``statistic`` 0
    and ``p`` 1.0 (SciPy's own value for this case), never NaN.

    Returns columns: group_a, group_b, n, mean_a, mean_b, statistic, p, p_bonferroni,
    significant.
    """
    pair_columns = _as_list(pair_on)
    require_columns(df, [group, value] + pair_columns, "paired_wilcoxon")
    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of {CORRECTIONS}, got {correction!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    duplicated = df.duplicated(subset=[group] + pair_columns)
    if duplicated.any():
        example = df.loc[duplicated, [group] + pair_columns].iloc[0].to_dict()
        raise ValueError(f"paired_wilcoxon: several rows share the same {group} and {pair_columns}, e.g. {example}")
    present = list(pd.unique(df[group]))
    names = present if groups is None else list(groups)
    unknown = [name for name in names if name not in present]
    if unknown:
        raise ValueError(f"paired_wilcoxon: groups {unknown} not found in column {group!r}")
    if reference is None:
        comparisons = list(itertools.combinations(names, 2))
    else:
        if reference not in present:
            raise ValueError(f"paired_wilcoxon: reference {reference!r} not found in column {group!r}")
        comparisons = [(reference, name) for name in names if name != reference]
    if not comparisons:
        raise ValueError("paired_wilcoxon needs at least two groups to compare")
    wide = df.pivot(index=pair_columns, columns=group, values=value)
    rows = []
    for name_a, name_b in comparisons:
        pairs = wide[[name_a, name_b]].dropna()
        if pairs.empty:
            raise ValueError(f"paired_wilcoxon: groups {name_a!r} and {name_b!r} share no {pair_columns}")
        a = pairs[name_a].to_numpy(dtype=np.float64)
        b = pairs[name_b].to_numpy(dtype=np.float64)
        statistic, p = wilcoxon_signed_rank(a, b, alternative=alternative, zero_method=zero_method)
        rows.append({
            "group_a": name_a, "group_b": name_b, "n": len(pairs), "mean_a": float(a.mean()),
            "mean_b": float(b.mean()), "statistic": statistic, "p": p,
        })
    out = pd.DataFrame(rows)
    out["p_bonferroni"] = bonferroni(out["p"].to_numpy()) if correction == "bonferroni" else out["p"]
    out["significant"] = out["p_bonferroni"] <= alpha
    return out
