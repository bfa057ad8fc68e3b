"""tfrobseg.reporting.tables: Tables I–IV against hand-computed means / stds, layouts, published values."""

import itertools

import numpy as np
import pandas as pd
import pytest
from conftest import SHARED, require

from tfrobseg.reporting import tables

SHARED_REFERENCE = SHARED / "reference" / "published_tables.csv"


def _results():
    # 2 models x 2 losses x 2 folds x eps {0, 0.5, 1} x 2 patients, values chosen to be distinct.
    rows = []
    for (mi, m), (li, l), f, e, p in itertools.product(
        enumerate(["unet", "resunet"]), enumerate(["bce", "tversky"]), [0, 1], [0.0, 0.5, 1.0], [0, 1]
    ):
        dice = 0.9 - 0.3 * e - 0.1 * mi + 0.05 * li + 0.01 * f + 0.02 * p
        rows.append({"phase": "crossval", "model": m, "loss": l, "fold": f, "epsilon": e, "patient_id": f"P{f}{p}",
                     "dice": dice, "hd95": 5 + 10 * e + mi + p, "assd": 1 + e + 0.1 * li, "empty_pred": False})
    return pd.DataFrame(rows)


def test_table_means_and_stds_by_hand():
    df = _results()
    summary = tables.summarize_table(df, "model").set_index("model")
    # Hand computation, Table I rule: cell = (model, loss, fold, eps>0) mean over its 2 patients;
    # row = mean and sample std over the cells of the model (2 losses x 2 folds x 2 eps = 8).
    for mi, m in enumerate(["unet", "resunet"]):
        cells = []
        for li, f, e in itertools.product([0, 1], [0, 1], [0.5, 1.0]):
            cells.append(np.mean([0.9 - 0.3 * e - 0.1 * mi + 0.05 * li + 0.01 * f + 0.02 * p for p in (0, 1)]))
        assert summary.loc[m, "dice_mean"] == pytest.approx(np.mean(cells))
        assert summary.loc[m, "dice_std"] == pytest.approx(np.std(cells, ddof=1))
        assert summary.loc[m, "n_cells"] == 8 and summary.loc[m, "n_cases"] == 16
        assert summary.loc[m, "hd95_mean"] == pytest.approx(np.mean([5 + 10 * e + mi + 0.5 for e in (0.5, 1.0)]))
    # Study order and display names come from the model registry.
    assert list(summary["name"]) == ["U-Net", "ResU-Net"]


def test_cases_std_and_clean_table():
    df = _results()
    by_case = tables.summarize_table(df, "loss", std_over="cases").set_index("loss")
    vals = df[(df["loss"] == "bce") & (df["epsilon"] > 0)]["assd"]
    assert by_case.loc["bce", "assd_std"] == pytest.approx(vals.std(ddof=1))
    clean = tables.summarize_table(df, "loss", attacked_only=False, clean_only=True).set_index("loss")
    assert clean.loc["tversky", "assd_mean"] == pytest.approx(1.1)
    with pytest.raises(ValueError):
        tables.summarize_table(df, "fold")


def test_empty_predictions_counted_and_nonfinite_refused():
    df = _results()
    df.loc[0, ["epsilon", "hd95", "empty_pred"]] = [0.5, 250.0, True]
    s = tables.summarize_table(df, "model").set_index("model")
    assert s.loc["unet", "n_empty"] == 1 and s.loc["resunet", "n_empty"] == 0
    df.loc[3, "hd95"] = np.inf  # row 3: unet, eps 0.5
    with pytest.raises(ValueError, match="NaN or inf"):
        tables.summarize_table(df, "model")


def test_format_and_published():
    df = _results()
    s = tables.summarize_table(df, "loss")
    f = tables.format_summary(s, "loss")
    assert list(f.columns) == ["Loss Function", "DC", "HD95 (mm)", "ASD (mm)"]
    assert f.iloc[0, 1] == f"{s['dice_mean'][0]:.2f} ± {s['dice_std'][0]:.2f}"
    pub = tables.load_published()
    assert len(pub) == 22 and set(pub["table"]) == {"I", "II", "III", "IV"}
    # The package's own copy is what the tables use; it must equal the reference as printed.
    pd.testing.assert_frame_equal(pub, pd.read_csv(require(SHARED_REFERENCE, "reference tables"), comment="#"))
    assert "Apostolidis" in tables.published_source()
    comp = tables.compare_with_published(s, "III", "loss").set_index("Loss Function")
    assert comp.loc["Tversky", "DC published"] == "0.57 ± 0.16"
    assert comp.loc["Dice", "DC ours"] == "not run"
    assert tables.most_robust_loss(df) == "tversky"


def test_write_tables(tmp_path):
    written = tables.write_tables(_results(), tmp_path)
    for name in ("table_I.md", "table_I.tex", "table_I.csv", "table_III_vs_published.md", "table_I_clean.md", "tables.md"):
        assert (tmp_path / name).is_file(), name
    assert "table_II.md" not in written.paths  # no hold-out phase in these results
    assert written.overview == tmp_path / "tables.md"
    assert written.study_tables == [tmp_path / "table_I.md", tmp_path / "table_III.md"]
    assert "no holdout results" in (tmp_path / "tables.md").read_text(encoding="utf-8")
    tex = (tmp_path / "table_I.tex").read_text(encoding="utf-8")
    assert r"$\pm$" in tex and r"\begin{tabular}" in tex
    md = (tmp_path / "table_III.md").read_text(encoding="utf-8").splitlines()
    assert md[2].startswith("| Loss Function | DC |")


def test_cells_counts_and_empty_inputs():
    df = _results()
    cells = tables.cell_means(df)
    assert len(cells) == 2 * 2 * 2 * 3 and (cells["n_cases"] == 2).all() and (cells["n_empty"] == 0).all()
    df.loc[[0, 1], "empty_pred"] = True  # both patients of one cell predicted nothing
    assert tables.cell_means(df)["n_empty"].sum() == 2
    assert (tables.cell_means(df.drop(columns="empty_pred"))["n_empty"] == 0).all()
    # A row whose fold is unknown still counts (its own cell), it is not silently dropped.
    df.loc[2, "fold"] = np.nan
    assert tables.cell_means(df)["n_cases"].sum() == len(df)
    assert tables.cell_means(df.iloc[:0]).empty
    assert tables.summarize_table(df[df["epsilon"] == 0], "model").empty  # no attacked rows
    assert list(tables.summarize_table(_results(), "model").columns[:3]) == ["model", "name", "dice_mean"]


def test_most_robust_loss_per_phase():
    crossval = _results()
    holdout = crossval.assign(phase="holdout", dice=np.where(crossval["loss"] == "bce", 0.9, 0.1))
    both = pd.concat([crossval, holdout], ignore_index=True)
    assert tables.most_robust_loss(both, "crossval") == "tversky"
    assert tables.most_robust_loss(both, "holdout") == "bce"
    assert tables.most_robust_loss(both, "nothing") is None
