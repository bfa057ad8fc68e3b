"""The related work's published numbers (``tfrobseg/data_files/related_tables.csv``) and the report files the
related-work experiments write: a table of ours beside the paper's, as CSV and Markdown, and a figure.

The file holds, per paper, the rows of the table each experiment reproduces, copied as printed, with ``key``
our name for the row's condition (a model, a loss, an attack or ``model/loss``) where we run the same one.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import pandas as pd

from tfrobseg.io import atomic_write_csv, atomic_write_text, save_figure
from tfrobseg.reporting.formatting import to_markdown

__all__ = ["PAPERS", "load_related", "related_source", "write_report"]

_FILE = "data_files/related_tables.csv"
#: Paper number -> short citation, as the tables name them.
PAPERS: dict[str, str] = {
    "001": "Wang & Xu",
    "002": "Liu et al.",
    "003": "Adaptive TverskyCE (paper 003)",
    "004": "Thakur",
}


def load_related(paper: str) -> pd.DataFrame:
    """The published rows of ``paper`` (``"001"`` … ``"004"``): columns table, row, key, column, value (float);
    ``key`` is empty where we have no such condition. ValueError for an unknown paper."""
    if paper not in PAPERS:
        raise ValueError(f"unknown paper {paper!r}; choose from {', '.join(PAPERS)}")
    with resources.files("tfrobseg").joinpath(_FILE).open("r", encoding="utf-8") as fh:
        table = pd.read_csv(fh, comment="#", dtype={"paper": str, "table": str, "key": str})
    part = table[table["paper"] == paper].drop(columns="paper").reset_index(drop=True)
    part["key"] = part["key"].fillna("")
    return part


def related_source(paper: str) -> str:
    """The file's citation line(s) of ``paper``."""
    text = resources.files("tfrobseg").joinpath(_FILE).read_text(encoding="utf-8")
    lines, keep = [], False
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        body = line.lstrip("# ").rstrip()
        if body[:4].rstrip(":") in PAPERS:
            keep = body.startswith(f"{paper}:")
        elif body.startswith("Columns:"):
            keep = False
        if keep:
            lines.append(body.removeprefix(f"{paper}:").strip())
    return " ".join(lines)


def write_report(out_dir: Path, name: str, tables: Sequence[tuple[str, pd.DataFrame, Sequence[str]]],
                 figure: object | None = None) -> list[Path]:
    """Write ``<out_dir>/<name>.md`` (every table, titled, with its notes) and one ``<name>_<k>.csv`` per table,
    and the figure as ``<name>.png`` / ``.pdf``; returns the paths, the Markdown first."""
    out_dir.mkdir(parents=True, exist_ok=True)
    parts, written = [], []
    for k, (title, table, notes) in enumerate(tables, 1):
        parts.append(to_markdown(table, title, notes))
        written.append(atomic_write_csv(out_dir / f"{name}_{k}.csv", table))
    markdown = atomic_write_text(out_dir / f"{name}.md", "\n\n".join(parts) + "\n")
    figures = save_figure(figure, out_dir / name) if figure is not None else []
    return [markdown, *written, *figures]
