"""How numbers are shown: "mean ± std" cells, and Markdown / LaTeX tables (no extra dependency)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from tfrobseg import study
from tfrobseg.reporting.stats import require_columns, summarize

__all__ = ["format_table", "mean_std", "to_latex", "to_markdown"]


def _number(value: float, decimals: int, strip_zeros: bool) -> str:
    text = f"{value:.{decimals}f}"
    if strip_zeros and "." in text:
        text = text.rstrip("0").rstrip(".")
        # Python's str(round(x, 2)) keeps one decimal ("0.5", "14.0"), as the published tables show.
        if "." not in text:
            text += ".0"
    return text


def mean_std(mean: float, std: float, decimals: int = 2, *, strip_zeros: bool = False) -> str:
    """``"0.49 ± 0.17"``; the mean alone when the std is not finite, ``"n/a"`` without a mean."""
    if not np.isfinite(mean):
        return "n/a"
    if not np.isfinite(std):
        return _number(mean, decimals, strip_zeros)
    return f"{_number(mean, decimals, strip_zeros)} ± {_number(std, decimals, strip_zeros)}"


def format_table(
    summary: pd.DataFrame,
    by: str | Sequence[str],
    metrics: Sequence[str] = study.METRICS,
    *,
    decimals: int = 2,
    strip_zeros: bool = False,
    labels: dict[str, str] | None = None,
) -> pd.DataFrame:
    """A display table with one "mean ± std" string per metric, e.g. "0.49 ± 0.17".

    ``summary`` is the output of :func:`~tfrobseg.reporting.stats.summarize`; a per-case table
    (with the raw metric columns) is summarized first. Columns are the ``by`` columns and the
    metric headers (``labels``, default the study's "DC", "HD95 (mm)", "ASD (mm)").
    ``strip_zeros=True`` drops trailing zeros as the published tables do ("0.5 ± 0.26").
    """
    by_columns = [by] if isinstance(by, str) else list(by)
    metrics = list(metrics)
    if not all(f"{metric}_mean" in summary.columns for metric in metrics):
        summary = summarize(summary, by_columns, metrics)
    require_columns(summary, by_columns + [f"{m}_{s}" for m in metrics for s in ("mean", "std")], "format_table")
    names = {**study.METRIC_HEADERS, **(labels or {})}
    table = summary[by_columns].copy()
    for metric in metrics:
        table[names.get(metric, metric)] = [
            mean_std(mean, std, decimals, strip_zeros=strip_zeros)
            for mean, std in zip(summary[f"{metric}_mean"], summary[f"{metric}_std"])
        ]
    return table.reset_index(drop=True)


def to_markdown(df: pd.DataFrame, title: str | None = None, notes: Sequence[str] = ()) -> str:
    """A GitHub-flavoured Markdown table; ``notes`` (what ± and n are, footnotes) follow it, one a line."""
    cols = [str(c) for c in df.columns]
    lines = [f"**{title}**", ""] if title else []
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(cols))) + "|")
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(str(v) for v in r.tolist()) + " |")
    if notes:
        lines += [""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def _latex_escape(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#")):
        text = text.replace(a, b)
    return text.replace("±", r"$\pm$").replace("ε", r"$\varepsilon$").replace("—", "--")


def to_latex(df: pd.DataFrame, caption: str, label: str, notes: Sequence[str] = ()) -> str:
    """A booktabs LaTeX table; ``notes`` go below the tabular in small print, one a line."""
    cols = [str(c) for c in df.columns]
    spec = "l" + "c" * (len(cols) - 1)
    lines = [
        r"\begin{table}[t]", r"\centering", rf"\caption{{{_latex_escape(caption)}}}", rf"\label{{{label}}}",
        rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
        " & ".join(_latex_escape(c) for c in cols) + r" \\", r"\midrule",
    ]
    for _, r in df.iterrows():
        lines.append(" & ".join(_latex_escape(str(v)) for v in r.tolist()) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if notes:
        escaped = [_latex_escape(note) for note in notes]
        lines += [r"\par\footnotesize"] + [note + r" \\" for note in escaped[:-1]] + escaped[-1:]
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"
