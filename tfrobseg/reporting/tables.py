"""Tables I–IV of Apostolidis et al. from tidy per-patient metrics, beside the published values.

What is averaged over what (the study, Section II-G: a plain arithmetic mean, every ε weighted
equally, "mean results and standard deviations across the folds"):

1. Rows come from the study's grid only (:mod:`tfrobseg.reporting.grid`): the study's models and
   losses, folds 0–2 of the cross-validation or the hold-out, the study's ε. Any other row of the
   results folder (another loss or model, another fold or ε) goes to the *additional* table. A
   table row that lacks some of its study units is marked † and the missing units are named
   (whole models / losses not run are summarized as such).
2. Only the attacked strengths ε > 0 enter Tables I–IV, as in the study (ε ∈ {0.1, …, 1.0});
   the clean ε = 0 results are tabulated separately (``clean`` tables).
3. ``std_over="patients"`` (default): a row is the mean ± sample std (ddof 1) of its per-patient
   values, one per patient × fold × ε × the other factor (Table I: 6 losses × 3 folds × 10 ε ×
   the fold's patients). This must be what the paper's ± is: Table IV prints BCE-Tversky ASD
   0.74 ± 5.8, and 50 non-negative cell values (5 models × 10 ε) with mean 0.74 have a sample std
   of at most 0.74·√50 ≈ 5.2. ``std_over="cells"``: a *cell* is one trained network at one ε (one
   (model, loss, fold, ε), the mean over its patients) and a row is the mean ± sample std of its
   cells. With the same number of patients in every fold both give the same mean.
4. One attack: a run can evaluate several attacks (``--attack fgsm,pgd,ensemble``); Tables I–IV and the
   additional table use only the rows of the run's first attack (:func:`first_attack_rows`), never an
   average over attacks, and say which in their notes. The other attacks' rows stay in the units'
   ``metrics.csv`` (:func:`tfrobseg.experiment.store.collect_attack_rows` reads them all).
5. Empty predictions: :func:`tfrobseg.metrics.evaluate_case` gives them Dice 0 and, for HD95 /
   ASD (undefined without a predicted surface), a finite penalty distance (the volume's physical
   diagonal), flagged ``empty_pred``. ``empty_predictions="penalty"`` (default) keeps them in every
   mean; ``"exclude"`` leaves them out of HD95 / ASD (and HD), as a MedPy-based evaluation must,
   and keeps their Dice 0 (Dice is defined for them). Either way ``n_empty`` counts them and each
   metric's ``<m>_n`` says how many values it averages. A non-finite value is an error
   (:func:`tfrobseg.reporting.stats.summarize`), never silently left out of a mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from tfrobseg import study
from tfrobseg.experiment.units import PHASES
from tfrobseg.io import atomic_write_csv, atomic_write_text
from tfrobseg.reporting.formatting import format_table, mean_std, to_latex, to_markdown
from tfrobseg.reporting.grid import (
    describe_missing,
    outside_reasons,
    study_order,
    unit_status,
)
from tfrobseg.reporting.stats import summarize

__all__ = ["EMPTY_PREDICTIONS", "PENALIZED", "STD_OVER", "WrittenTables", "cell_means", "check_options",
           "compare_with_published", "display_names", "first_attack_rows", "format_summary", "load_published",
           "most_robust_loss",
           "published_source", "study_order", "summarize_additional", "summarize_groups", "summarize_table",
           "write_tables"]

METRICS = study.METRICS
PUBLISHED_COLUMNS = {"dice": "dc", "hd95": "hd95_mm", "assd": "asd_mm"}
DECIMALS = 2
#: What the ± of a table is taken over: the per-patient values (default) or the cells.
STD_OVER = ("patients", "cells")
#: How empty predictions enter HD95 / ASD: the metrics' penalty distance (default) or not at all.
EMPTY_PREDICTIONS = ("penalty", "exclude")
#: Metrics that give an empty prediction the penalty distance (tfrobseg.metrics); "exclude" drops them there.
PENALIZED = ("hd95", "assd", "hausdorff")
CELL_KEYS = ("phase", "model", "loss", "fold", "epsilon")
#: Marks a table row whose study units are not all complete.
INCOMPLETE = "†"


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


def first_attack_rows(results: pd.DataFrame) -> tuple[pd.DataFrame, str | None]:
    """The rows of the run's first attack and a note naming it (None when the rows hold one attack only).

    Every unit's ``metrics.csv`` starts with the rows of the run's first ``--attack``, so the first row's
    attack and ``attack_params`` are the run's first attack; rows of other attacks are left out.
    """
    if results.empty or "attack" not in results:
        return results, None
    params = results["attack_params"].fillna("{}") if "attack_params" in results else pd.Series("{}", results.index)
    first = (results["attack"].iloc[0], params.iloc[0])
    mine = (results["attack"] == first[0]).to_numpy() & (params == first[1]).to_numpy()
    if mine.all():
        return results, None
    others = sorted({f"{a} {p}" if p != "{}" else str(a) for a, p in zip(results["attack"][~mine], params[~mine])})
    label = first[0] if first[1] == "{}" else f"{first[0]} {first[1]}"
    return results[mine], (f"attack: {label}, the run's first; its other attacks ({'; '.join(others)}) are not "
                            "averaged in (their rows are in the units' metrics.csv)")


def display_names(by: str) -> tuple[dict[str, str], tuple[str, ...]]:
    """Display names and study order of the models or the losses (``by``: "model" or "loss")."""
    if by == "model":
        from tfrobseg.models import MODEL_DISPLAY_NAMES as names
    else:
        from tfrobseg.losses import LOSS_DISPLAY_NAMES as names
    return dict(names), study.MODELS if by == "model" else study.LOSSES


def check_options(std_over: str, empty_predictions: str) -> None:
    """Refuse unknown ``std_over`` / ``empty_predictions`` values, naming the choices."""
    if std_over not in STD_OVER:
        raise ValueError(f"std_over must be one of {STD_OVER}, got {std_over!r}")
    if empty_predictions not in EMPTY_PREDICTIONS:
        raise ValueError(f"empty_predictions must be one of {EMPTY_PREDICTIONS}, got {empty_predictions!r}")


def cell_means(df: pd.DataFrame, metrics: Sequence[str] = METRICS, extra_keys: Sequence[str] = ()) -> pd.DataFrame:
    """Mean over patients of every (phase, model, loss, fold, ε) cell, with case and empty counts.

    ``extra_keys``: further columns to keep, constant within a cell (e.g. a row label).
    """
    if df.empty:
        return df
    keys = [k for k in CELL_KEYS if k in df.columns] + [k for k in extra_keys if k not in CELL_KEYS]
    data = df.copy()
    data[list(metrics)] = data[list(metrics)].astype(float)
    data["_empty"] = _empty_flags(data).astype(int)
    g = data.groupby(keys, dropna=False)
    out = g[list(metrics)].mean()
    out["n_cases"] = g.size()
    out["n_empty"] = g["_empty"].sum()
    return out.reset_index()


def _empty_flags(df: pd.DataFrame) -> pd.Series:
    return df["empty_pred"].astype(bool) if "empty_pred" in df else pd.Series(False, index=df.index)


def summarize_groups(
    df: pd.DataFrame,
    keys: Sequence[str],
    *,
    std_over: str = "patients",
    empty_predictions: str = "penalty",
    metrics: Sequence[str] = METRICS,
) -> pd.DataFrame:
    """Mean, sample std and count of each metric per group of ``keys`` (rules: module docstring).

    Returns one row per group (sorted): the ``keys``, ``<m>_mean``, ``<m>_std``, ``<m>_n`` (the number
    of values behind them) per metric, then ``n`` (values behind a metric nothing was excluded from:
    patient rows or cells), ``n_cells``, ``n_cases`` (patient rows), ``n_empty`` (empty predictions)
    and ``n_excluded`` (patient rows left out of the penalized metrics).
    """
    check_options(std_over, empty_predictions)
    keys, metrics = list(keys), list(metrics)
    if empty_predictions == "exclude" and "empty_pred" not in df:
        raise ValueError("empty_predictions='exclude' needs the empty_pred column of the metrics")
    empty = _empty_flags(df)
    cells = cell_means(df, metrics, keys)
    parts = [cells.groupby(keys, dropna=False).agg(n_cells=("n_cases", "size"), n_cases=("n_cases", "sum"),
                                                    n_empty=("n_empty", "sum"))]
    for m in metrics:
        rows = df[~empty] if empty_predictions == "exclude" and m in PENALIZED else df
        values = cell_means(rows, [m], keys) if std_over == "cells" else rows
        # stats.summarize refuses NaN/inf: a non-finite metric is a broken upstream step, never dropped.
        parts.append(summarize(values, keys, [m]).set_index(keys).rename(columns={"n": f"{m}_n"}))
    out = pd.concat(parts, axis=1)
    for m in metrics:
        out[f"{m}_n"] = out[f"{m}_n"].fillna(0).astype(int)
    out["n"] = out["n_cases"] if std_over == "patients" else out["n_cells"]
    excluding = empty_predictions == "exclude" and any(m in PENALIZED for m in metrics)
    out["n_excluded"] = out["n_empty"] if excluding else 0
    columns = [f"{m}_{s}" for m in metrics for s in ("mean", "std", "n")]
    return out[columns + ["n", "n_cells", "n_cases", "n_empty", "n_excluded"]].reset_index()


def summarize_table(
    df: pd.DataFrame,
    by: str,
    *,
    attacked_only: bool = True,
    clean_only: bool = False,
    std_over: str = "patients",
    empty_predictions: str = "penalty",
    metrics: Sequence[str] = METRICS,
) -> pd.DataFrame:
    """Mean and std of each metric per ``by`` group of the rows given (see the module docstring).

    Args:
        df: per-patient rows of one phase (``metrics.csv`` of the units); every row given is
            averaged: :func:`write_tables` passes the study grid's rows only.
        by: ``"model"`` or ``"loss"``.
        attacked_only: keep ε > 0 only (Tables I–IV).
        clean_only: keep ε = 0 only (the clean reference tables).
        std_over: ``"patients"`` (default: the per-patient values, as the published ± must be) or
            ``"cells"`` (one value per trained network and ε).
        empty_predictions: ``"penalty"`` (default: the metrics' penalty distance) or ``"exclude"``
            (left out of HD95 / ASD).

    Returns:
        One row per group, in study order: ``by``, ``name`` (display), then the columns of
        :func:`summarize_groups`.
    """
    if by not in ("model", "loss"):
        raise ValueError(f"by must be 'model' or 'loss', got {by!r}")
    check_options(std_over, empty_predictions)
    if attacked_only and clean_only:
        raise ValueError("attacked_only and clean_only exclude each other")
    missing = [c for c in (by, "epsilon", *metrics) if c not in df.columns]
    if missing:
        raise ValueError(f"metrics table lacks columns {missing}")
    eps = df["epsilon"].astype(float)
    data = df[eps > 0] if attacked_only else df[np.isclose(eps, 0.0)] if clean_only else df
    if data.empty:
        return pd.DataFrame()
    out = summarize_groups(data, [by], std_over=std_over, empty_predictions=empty_predictions, metrics=metrics)
    out = out.set_index(by).loc[study_order(out[by], by)].reset_index()
    names = display_names(by)[0]
    out.insert(1, "name", [names.get(k, k) for k in out[by]])
    return out


def _short(metric: str) -> str:
    return study.METRIC_HEADERS.get(metric, metric).split(" (")[0]


def _count_columns(table: pd.DataFrame, summary: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Add the counts behind each row: n, n of the penalized metrics when empties were excluded, empties."""
    table["n"] = summary["n"].astype(int).to_numpy()
    penalized = [m for m in metrics if m in PENALIZED]
    if penalized and summary["n_excluded"].sum() > 0:
        table[f"n {', '.join(_short(m) for m in penalized)}"] = summary[f"{penalized[0]}_n"].to_numpy()
    if summary["n_empty"].sum() > 0:
        table["empty predictions"] = summary["n_empty"].astype(int).to_numpy()
    return table


def format_summary(summary: pd.DataFrame, by: str, metrics: Sequence[str] = METRICS) -> pd.DataFrame:
    """The published layout (a name column, one "mean ± std" string per metric), then the counts
    behind each row and, with a study grid attached (:func:`write_tables`), its units."""
    header = _header(by)
    out = format_table(summary.rename(columns={"name": header}), header, metrics, decimals=DECIMALS)
    out = _count_columns(out, summary, metrics)
    if "units_expected" in summary:
        out["study units"] = [f"{k}/{n}" + ("" if k == n else f" {INCOMPLETE}")
                              for k, n in zip(summary["units_complete"], summary["units_expected"])]
    return out


def compare_with_published(summary: pd.DataFrame, table: str, by: str, metrics: Sequence[str] = METRICS) -> pd.DataFrame:
    """Our values next to the study's for one table (rows: union of both, study order), with our n."""
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
    out["n ours"] = [str(int(ours.at[n, "n"])) if n in ours.index else "—" for n in names]
    return out


def _header(by: str) -> str:
    return "Model" if by == "model" else "Loss Function"


def _legend(std_over: str, empty_predictions: str, dims: Sequence[str], n_empty: int) -> list[str]:
    """What the ± and the counts of a table are; ``dims``: what one patient row differs in within a row."""
    if std_over == "patients":
        spread = (f"± = sample std (ddof 1) of the row's n per-patient values (one per patient × {' × '.join(dims)}); "
                  "the mean is their mean")
    else:
        spread = (f"± = sample std (ddof 1) of the row's n cells (one per {' × '.join(dims)}: one trained "
                  "network's mean over its patients at one ε); the mean is their mean")
    if n_empty == 0:
        empty = "empty predictions: none"
    elif empty_predictions == "penalty":
        empty = ("empty predictions (no voxel predicted): DC 0 and the penalty distance (the volume's diagonal) "
                 "in HD95 and ASD; their count in 'empty predictions'")
    else:
        empty = ("empty predictions excluded from HD95 and ASD (undefined without a predicted surface, as in "
                 "MedPy), kept in DC as 0; 'n HD95, ASD' = values behind those columns; their count in "
                 "'empty predictions'")
    return [spread, empty]


def _dims(spec: study.TableSpec, attacked: bool) -> list[str]:
    return (["loss" if spec.by == "model" else "model"] + (["fold"] if spec.phase == "crossval" else [])
            + (["ε"] if attacked else []))


def _with_units(summary: pd.DataFrame, status: pd.DataFrame, by: str) -> pd.DataFrame:
    units = status.groupby(by).agg(units_complete=("complete", "sum"), units_expected=("complete", "size"))
    return summary.join(units.astype(int), on=by)


def _grid_notes(summary: pd.DataFrame, status: pd.DataFrame, by: str) -> list[str]:
    """One footnote per distinct shortfall, naming the rows that share it."""
    shortfalls: dict[str, list[str]] = {}
    for key, name in zip(summary[by], summary["name"]):
        units = status[status[by] == key]
        if not units["complete"].all():
            text = f"{int(units['complete'].sum())} of {len(units)} study units; " + "; ".join(describe_missing(units))
            shortfalls.setdefault(text, []).append(name)
    return [f"{INCOMPLETE} incomplete study grid, {', '.join(names)}: {text}" for text, names in shortfalls.items()]


@dataclass
class WrittenTables:
    """What :func:`write_tables` wrote: every file by name, the overview, the study tables and the
    additional table."""

    paths: dict[str, Path] = field(default_factory=dict)
    overview: Path | None = None
    #: ``table_<T>.md`` of each of Tables I–IV that had attacked results, in the study's order.
    study_tables: list[Path] = field(default_factory=list)
    #: ``table_additional.md``: the results outside the study's grid, if any.
    additional: Path | None = None

    @property
    def printed(self) -> list[Path]:
        """The Markdown tables a script prints: Tables I–IV, then the additional table."""
        return self.study_tables + ([self.additional] if self.additional else [])

    def add(self, out: Path, name: str, content: str | pd.DataFrame) -> Path:
        writer = atomic_write_csv if isinstance(content, pd.DataFrame) else atomic_write_text
        self.paths[name] = writer(out / name, content)
        return self.paths[name]


@dataclass(frozen=True)
class _Options:
    std_over: str
    empty_predictions: str
    run: list[str] = field(default_factory=list)  # notes on the run: its attack when it had several, its defense


def _write_attacked(spec: study.TableSpec, summary: pd.DataFrame, notes: list[str], opts: _Options, out: Path,
                    written: WrittenTables) -> list[str]:
    """``table_<T>`` and ``table_<T>_vs_published`` in CSV, Markdown and LaTeX; returns their Markdown."""
    stem, label = f"table_{spec.table}", f"tab:{spec.table.lower()}"
    formatted = format_summary(summary, spec.by)
    written.add(out, f"{stem}.csv", formatted)
    written.add(out, f"{stem}_values.csv", summary.assign(std_over=opts.std_over,
                                                          empty_predictions=opts.empty_predictions))
    md = to_markdown(formatted, f"Table {spec.table}. {spec.caption}", notes)
    written.study_tables.append(written.add(out, f"{stem}.md", md))
    written.add(out, f"{stem}.tex", to_latex(formatted, spec.caption, label, notes))
    comp = compare_with_published(summary, spec.table, spec.by)
    comp_notes = [f"ours: {notes[0]}", "published: as printed in the paper", *notes[1:]]
    written.add(out, f"{stem}_vs_published.csv", comp)
    comp_md = to_markdown(comp, f"Table {spec.table} — ours vs published", comp_notes)
    written.add(out, f"{stem}_vs_published.md", comp_md)
    written.add(out, f"{stem}_vs_published.tex",
                to_latex(comp, spec.caption + " (ours vs published)", f"{label}-pub", comp_notes))
    return [md, comp_md]


def _write_table(spec: study.TableSpec, results: pd.DataFrame, inside: pd.DataFrame, opts: _Options, out: Path,
                 written: WrittenTables) -> list[str]:
    """One study table (attacked, vs published, clean) from the study grid's rows; returns its Markdown."""
    if not (results["phase"] == spec.phase).any():
        return [f"Table {spec.table}: no {spec.phase} results in this folder.", ""]
    rows = inside[inside["phase"] == spec.phase]
    if rows.empty:
        return [f"Table {spec.table}: no {spec.phase} results inside the study's grid (see the additional table).", ""]
    status = unit_status(rows, spec.phase)
    md: list[str] = []
    for attacked in (True, False):
        summary = summarize_table(rows, spec.by, attacked_only=attacked, clean_only=not attacked,
                                  std_over=opts.std_over, empty_predictions=opts.empty_predictions)
        if summary.empty:
            md += [f"Table {spec.table}: no {'attacked (ε > 0)' if attacked else 'clean (ε = 0)'} results.", ""]
            continue
        summary = _with_units(summary, status, spec.by)
        notes = _legend(opts.std_over, opts.empty_predictions, _dims(spec, attacked),
                        int(summary["n_empty"].sum())) + _grid_notes(summary, status, spec.by) + opts.run
        if attacked:
            md += _write_attacked(spec, summary, notes, opts, out, written)
            continue
        stem = f"table_{spec.table}_clean"
        formatted = format_summary(summary, spec.by)
        written.add(out, f"{stem}.csv", formatted)
        md.append(to_markdown(formatted, f"Table {spec.table} (clean, ε = 0, no attack)", notes))
        written.add(out, f"{stem}.md", md[-1])
    return md


def _eps_label(values: pd.Series) -> str:
    eps = sorted(set(np.round(values.to_numpy(dtype=float), 6)))
    if len(eps) <= 3:
        return ", ".join(f"{e:g}" for e in eps)
    return f"{eps[0]:g}–{eps[-1]:g} ({len(eps)} values)"


def summarize_additional(other: pd.DataFrame, *, std_over: str = "patients", empty_predictions: str = "penalty",
                         metrics: Sequence[str] = METRICS) -> pd.DataFrame:
    """The rows outside the study's grid, one table row per phase, model, loss, what is outside the
    study, and clean (ε = 0) or attacked (ε > 0); columns of :func:`summarize_groups` plus ``epsilons``."""
    data = other.assign(outside=outside_reasons(other).to_numpy(), attacked=other["epsilon"].astype(float) > 0)
    keys = ["phase", "model", "loss", "outside", "attacked"]
    out = summarize_groups(data, keys, std_over=std_over, empty_predictions=empty_predictions, metrics=metrics)
    labels = data.groupby(keys)["epsilon"].agg(_eps_label).rename("epsilons")
    out = out.join(labels, on=keys)
    ranks = {"phase": list(PHASES), "model": study_order(out["model"].unique(), "model"),
             "loss": study_order(out["loss"].unique(), "loss")}

    def rank(column: pd.Series) -> pd.Series:  # study order; an unknown phase ranks NaN, i.e. last
        order = ranks.get(column.name)
        return column if order is None else column.map({v: i for i, v in enumerate(order)})

    return out.sort_values(keys, key=rank, kind="stable").reset_index(drop=True)


def _write_additional(other: pd.DataFrame, opts: _Options, out: Path, written: WrittenTables) -> list[str]:
    """``table_additional.{md,tex,csv}`` and ``_values.csv`` for rows outside the study's grid."""
    if other.empty:
        return ["Additional table: none (every result is inside the study's grid).", ""]
    summary = summarize_additional(other, std_over=opts.std_over, empty_predictions=opts.empty_predictions)
    models, losses = display_names("model")[0], display_names("loss")[0]
    table = pd.DataFrame({"Phase": summary["phase"], "Model": [models.get(m, m) for m in summary["model"]],
                          "Loss Function": [losses.get(k, k) for k in summary["loss"]],
                          "outside the study": summary["outside"], "ε": summary["epsilons"]})
    for m in METRICS:
        table[study.METRIC_HEADERS[m]] = [mean_std(a, b, DECIMALS) for a, b in
                                          zip(summary[f"{m}_mean"], summary[f"{m}_std"])]
    table = _count_columns(table, summary, METRICS)
    caption = "Additional: results outside the study's grid (never part of Tables I–IV)"
    notes = _legend(opts.std_over, opts.empty_predictions, ["fold", "ε"], int(summary["n_empty"].sum())) + opts.run
    written.add(out, "table_additional.csv", table)
    written.add(out, "table_additional_values.csv", summary.assign(std_over=opts.std_over,
                                                                   empty_predictions=opts.empty_predictions))
    written.add(out, "table_additional.tex", to_latex(table, caption, "tab:additional", notes))
    md = to_markdown(table, caption, notes)
    written.additional = written.add(out, "table_additional.md", md)
    return [md]


def write_tables(results: pd.DataFrame, out_dir: str | Path, *, std_over: str = "patients",
                 empty_predictions: str = "penalty", defense: str | None = None) -> WrittenTables:
    """Write Tables I–IV from the study grid's rows, and the additional table from the others; only the rows
    of the run's first attack (:func:`first_attack_rows`), named in the notes when the run had several.
    ``defense``: the label of the defense the run's networks were trained under, named in every table's notes.

    For every table with data: ``table_<T>.{md,tex,csv}`` (formatted), ``table_<T>_values.csv``
    (numeric mean/std/counts), ``table_<T>_vs_published.{md,tex,csv}`` and
    ``table_<T>_clean.{md,csv}``; ``table_additional.{md,tex,csv}`` and ``_values.csv`` when results
    lie outside the grid; plus ``tables.md`` collecting all Markdown, with what each ± is, the
    study grid's missing units and the tables whose phase was not run.
    """
    check_options(std_over, empty_predictions)
    results, attack_note = first_attack_rows(results)
    defense_note = f"networks trained under the defense {defense} (docs/defenses.md)" if defense else None
    opts = _Options(std_over, empty_predictions, [note for note in (attack_note, defense_note) if note])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = WrittenTables()
    outside = outside_reasons(results)
    inside, other = results[outside == ""], results[outside != ""]
    md_parts = [
        "# Tables I–IV (reproduction)",
        "",
        (f"Rows: only the study's grid ({len(study.MODELS)} models × {len(study.LOSSES)} losses × "
         f"{study.N_FOLDS} folds or the hold-out, ε > 0; clean ε = 0 tables separate); anything else is in the "
         f"additional table. Mean ± std over {std_over} (see under each table); empty predictions: "
         f"{empty_predictions}." + (f" One {attack_note}." if attack_note else "")
         + (f" All {defense_note}." if defense_note else "")),
        "",
        f"Published values: {published_source()}",
        "",
    ]
    for phase in PHASES:
        if (results["phase"] == phase).any():
            status = unit_status(inside, phase)
            missing = describe_missing(status)
            md_parts.append(f"Study grid, {phase}: {int(status['complete'].sum())} of {len(status)} units complete"
                            + (":" if missing else "."))
            md_parts += [f"- {line}" for line in missing] + [""]
    for spec in study.TABLES:
        md_parts += _write_table(spec, results, inside, opts, out, written)
    md_parts += _write_additional(other, opts, out, written)
    written.overview = written.add(out, "tables.md", "\n".join(md_parts))
    return written


def most_robust_loss(results: pd.DataFrame, phase: str = "crossval") -> str | None:
    """The study loss with the highest mean attacked Dice in the loss table of ``phase`` (Figures 1–2), under
    the run's first attack (:func:`first_attack_rows`), as the table shows it."""
    results = first_attack_rows(results)[0]
    data = results[results["phase"] == phase]
    data = data[outside_reasons(data) == ""] if not data.empty else data
    summary = summarize_table(data, "loss") if not data.empty else pd.DataFrame()
    if summary.empty:
        return None
    return str(summary.sort_values("dice_mean", ascending=False, kind="stable")["loss"].iloc[0])
