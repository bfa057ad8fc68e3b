"""Tables I–IV of Apostolidis et al. from tidy per-patient metrics, beside the published values.

What is averaged over what (the study, Section II-G: a plain arithmetic mean, every ε weighted
equally, "mean results and standard deviations across the folds"):

1. A *cell* is one trained network evaluated at one ε: one (model, loss, fold, ε) for the
   cross-validation, one (model, loss, ε) for the hold-out. Its value is the mean over the
   cell's patients (the per-patient 3D metrics of :mod:`tfrobseg.experiment.scoring`).
2. A table row averages its cells with equal weight: Table I (model) over the 6 losses × 3 folds
   × 10 ε; Table III (loss) over the 5 models × 3 folds × 10 ε; Tables II / IV the same without
   folds. The ± is the sample standard deviation (ddof = 1) across those cells, which makes it
   the spread across folds, ε (and the other factor), as the captions say.
   ``std_over="cases"`` instead pools every patient row (mean and std over patients × cells).
3. Only the attacked strengths ε > 0 enter Tables I–IV, as in the study (ε ∈ {0.1, …, 1.0});
   the clean ε = 0 results are tabulated separately (``clean`` tables).
4. Empty predictions: :func:`tfrobseg.metrics.evaluate_case` gives them Dice 0 and, for HD95 /
   ASD (undefined without a predicted surface), a finite penalty distance (the volume's physical
   diagonal), so they weigh in every mean; the ``n_empty`` column counts them. A non-finite
   value is an error (:func:`tfrobseg.reporting.stats.summarize`), never silently left out of a mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from tfrobseg import study
from tfrobseg.io import atomic_write_csv, atomic_write_text
from tfrobseg.reporting.formatting import format_table, mean_std, to_latex, to_markdown
from tfrobseg.reporting.stats import summarize

__all__ = ["WrittenTables", "cell_means", "compare_with_published", "display_names", "format_summary",
           "load_published", "most_robust_loss", "published_source", "summarize_table", "write_tables"]

METRICS = study.METRICS
PUBLISHED_COLUMNS = {"dice": "dc", "hd95": "hd95_mm", "assd": "asd_mm"}
DECIMALS = 2


def load_published() -> pd.DataFrame:
    """The study's Tables I–IV as printed (``tfrobseg/data_files/published_tables.csv``).

    The file's leading ``#`` lines give the source; columns: table, phase, group_by, name,
    dc_mean, dc_std, hd95_mm_mean, hd95_mm_std, asd_mm_mean, asd_mm_std.
    """
    with resources.files("tfrobseg").joinpath("data_files/published_tables.csv").open("r", encoding="utf-8") as fh:
        return pd.read_csv(fh, comment="#")


def published_source() -> str:
    """The citation lines at the top of the published-values file."""
    text = resources.files("tfrobseg").joinpath("data_files/published_tables.csv").read_text(encoding="utf-8")
    return " ".join(line.lstrip("# ").strip() for line in text.splitlines() if line.startswith("#"))


def display_names(by: str) -> tuple[dict[str, str], tuple[str, ...]]:
    """Display names and study order of the models or the losses (``by``: "model" or "loss")."""
    if by == "model":
        from tfrobseg.models import MODEL_DISPLAY_NAMES as names
    else:
        from tfrobseg.losses import LOSS_DISPLAY_NAMES as names
    return dict(names), study.MODELS if by == "model" else study.LOSSES


def study_order(keys, by: str) -> list:
    """``keys`` sorted as in the study's tables, names outside the study after them, alphabetically."""
    order = display_names(by)[1]
    return sorted(keys, key=lambda k: (order.index(k) if k in order else len(order), k))


def cell_means(df: pd.DataFrame, metrics: Sequence[str] = METRICS) -> pd.DataFrame:
    """Mean over patients of every (phase, model, loss, fold, ε) cell, with case and empty counts."""
    if df.empty:
        return df
    keys = [k for k in ("phase", "model", "loss", "fold", "epsilon") if k in df.columns]
    data = df.copy()
    data[list(metrics)] = data[list(metrics)].astype(float)
    empty = data["empty_pred"].astype(bool) if "empty_pred" in data else pd.Series(False, index=data.index)
    data["_empty"] = empty.astype(int)
    g = data.groupby(keys, dropna=False)
    out = g[list(metrics)].mean()
    out["n_cases"] = g.size()
    out["n_empty"] = g["_empty"].sum()
    return out.reset_index()


def summarize_table(
    df: pd.DataFrame,
    by: str,
    *,
    attacked_only: bool = True,
    clean_only: bool = False,
    std_over: str = "cells",
    metrics: Sequence[str] = METRICS,
) -> pd.DataFrame:
    """Mean and std of each metric per ``by`` group (see the module docstring for the rules).

    Args:
        df: per-patient rows of one phase (``metrics.csv`` of the units).
        by: ``"model"`` or ``"loss"``.
        attacked_only: keep ε > 0 only (Tables I–IV).
        clean_only: keep ε = 0 only (the clean reference tables).
        std_over: ``"cells"`` (the study's "across the folds" reading) or ``"cases"``.

    Returns:
        One row per group, in study order: ``by``, ``name`` (display), ``<m>_mean``, ``<m>_std``,
        ``n_cells``, ``n_cases``, ``n_empty``.
    """
    if by not in ("model", "loss"):
        raise ValueError(f"by must be 'model' or 'loss', got {by!r}")
    if std_over not in ("cells", "cases"):
        raise ValueError(f"std_over must be 'cells' or 'cases', got {std_over!r}")
    if attacked_only and clean_only:
        raise ValueError("attacked_only and clean_only exclude each other")
    missing = [c for c in (by, "epsilon", *metrics) if c not in df.columns]
    if missing:
        raise ValueError(f"metrics table lacks columns {missing}")
    eps = df["epsilon"].astype(float)
    data = df[eps > 0] if attacked_only else df[np.isclose(eps, 0.0)] if clean_only else df
    if data.empty:
        return pd.DataFrame()
    cells = cell_means(data, metrics)
    # stats.summarize refuses NaN/inf: a non-finite metric is a broken upstream step, never dropped.
    summary = summarize(cells if std_over == "cells" else data, by, metrics).set_index(by)
    counts = cells.groupby(by).agg(n_cells=("n_cases", "size"), n_cases=("n_cases", "sum"), n_empty=("n_empty", "sum"))
    names = display_names(by)[0]
    keys = study_order(summary.index, by)
    out = summary.loc[keys].drop(columns="n").join(counts).reset_index()
    out.insert(1, "name", [names.get(k, k) for k in keys])
    return out


def format_summary(summary: pd.DataFrame, by: str, metrics: Sequence[str] = METRICS) -> pd.DataFrame:
    """The published layout: a name column and one "mean ± std" string per metric."""
    header = _header(by)
    out = format_table(summary.rename(columns={"name": header}), header, metrics, decimals=DECIMALS)
    if "n_empty" in summary and summary["n_empty"].sum() > 0:
        out["empty predictions"] = summary["n_empty"].astype(int).to_numpy()
    return out


def compare_with_published(summary: pd.DataFrame, table: str, by: str, metrics: Sequence[str] = METRICS) -> pd.DataFrame:
    """Our values next to the study's for one table (rows: union of both, study order)."""
    pub = load_published()
    pub = pub[pub["table"] == table]
    header = _header(by)
    names = list(summary["name"]) if not summary.empty else []
    names += [n for n in pub["name"] if n not in names]
    ours = summary.set_index("name") if not summary.empty else pd.DataFrame()
    theirs = pub.set_index("name")
    out = pd.DataFrame({header: names})
    for m in metrics:
        col = PUBLISHED_COLUMNS[m]
        out[f"{study.METRIC_HEADERS[m]} ours"] = [
            mean_std(ours.at[n, f"{m}_mean"], ours.at[n, f"{m}_std"], DECIMALS) if n in ours.index else "not run"
            for n in names
        ]
        out[f"{study.METRIC_HEADERS[m]} published"] = [
            mean_std(theirs.at[n, f"{col}_mean"], theirs.at[n, f"{col}_std"], DECIMALS) if n in theirs.index else "—"
            for n in names
        ]
    return out


def _header(by: str) -> str:
    return "Model" if by == "model" else "Loss Function"


@dataclass
class WrittenTables:
    """What :func:`write_tables` wrote: every file by name, the overview, and the main study tables."""

    paths: dict[str, Path] = field(default_factory=dict)
    overview: Path | None = None
    #: ``table_<T>.md`` of each of Tables I–IV that had attacked results, in the study's order.
    study_tables: list[Path] = field(default_factory=list)

    def add(self, out: Path, name: str, content: str | pd.DataFrame) -> Path:
        writer = atomic_write_csv if isinstance(content, pd.DataFrame) else atomic_write_text
        self.paths[name] = writer(out / name, content)
        return self.paths[name]


def _write_attacked(spec: study.TableSpec, summary: pd.DataFrame, out: Path, written: WrittenTables) -> list[str]:
    """``table_<T>`` and ``table_<T>_vs_published`` in CSV, Markdown and LaTeX; returns their Markdown."""
    stem, label = f"table_{spec.table}", f"tab:{spec.table.lower()}"
    formatted = format_summary(summary, spec.by)
    written.add(out, f"{stem}.csv", formatted)
    written.add(out, f"{stem}_values.csv", summary)
    md = to_markdown(formatted, f"Table {spec.table}. {spec.caption}")
    written.study_tables.append(written.add(out, f"{stem}.md", md))
    written.add(out, f"{stem}.tex", to_latex(formatted, spec.caption, label))
    comp = compare_with_published(summary, spec.table, spec.by)
    written.add(out, f"{stem}_vs_published.csv", comp)
    comp_md = to_markdown(comp, f"Table {spec.table} — ours vs published")
    written.add(out, f"{stem}_vs_published.md", comp_md)
    written.add(out, f"{stem}_vs_published.tex", to_latex(comp, spec.caption + " (ours vs published)", f"{label}-pub"))
    return [md, comp_md]


def _write_table(spec: study.TableSpec, results: pd.DataFrame, out: Path, std_over: str,
                 written: WrittenTables) -> list[str]:
    """One study table (attacked, vs published, clean); returns its Markdown for the overview."""
    phase_df = results[results["phase"] == spec.phase] if "phase" in results else pd.DataFrame()
    if phase_df.empty:
        return [f"Table {spec.table}: no {spec.phase} results in this folder.", ""]
    summary = summarize_table(phase_df, spec.by, std_over=std_over)
    md = (_write_attacked(spec, summary, out, written) if not summary.empty
          else [f"Table {spec.table}: no attacked (ε > 0) results.", ""])
    clean = summarize_table(phase_df, spec.by, attacked_only=False, clean_only=True, std_over=std_over)
    if not clean.empty:
        stem = f"table_{spec.table}_clean"
        formatted = format_summary(clean, spec.by)
        written.add(out, f"{stem}.csv", formatted)
        md.append(to_markdown(formatted, f"Table {spec.table} (clean, ε = 0, no attack)"))
        written.add(out, f"{stem}.md", md[-1])
    return md


def write_tables(results: pd.DataFrame, out_dir: str | Path, *, std_over: str = "cells") -> WrittenTables:
    """Write Tables I–IV (ours, ours vs published, and the clean ε = 0 counterparts).

    For every table with data: ``table_<T>.{md,tex,csv}`` (formatted), ``table_<T>_values.csv``
    (numeric mean/std/counts), ``table_<T>_vs_published.{md,tex,csv}`` and
    ``table_<T>_clean.{md,csv}``; plus ``tables.md`` collecting all Markdown. Tables whose phase
    was not run are listed as missing in ``tables.md``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = WrittenTables()
    md_parts = [
        "# Tables I–IV (reproduction)",
        "",
        (
            "Cells = one trained network at one ε (mean over its patients); rows = mean ± sample std "
            f"across {std_over}; ε > 0 only; clean ε = 0 tables separate. Empty predictions get Dice 0 "
            "and the metrics' penalty distance; counted in 'empty predictions'."
        ),
        "",
        f"Published values: {published_source()}",
        "",
    ]
    for spec in study.TABLES:
        md_parts += _write_table(spec, results, out, std_over, written)
    written.overview = written.add(out, "tables.md", "\n".join(md_parts))
    return written


def most_robust_loss(results: pd.DataFrame, phase: str = "crossval") -> str | None:
    """The loss with the highest mean attacked Dice in the loss table of ``phase`` (Figures 1–2)."""
    data = results[results["phase"] == phase] if "phase" in results else results
    summary = summarize_table(data, "loss") if not data.empty else pd.DataFrame()
    if summary.empty:
        return None
    return str(summary.sort_values("dice_mean", ascending=False, kind="stable")["loss"].iloc[0])
