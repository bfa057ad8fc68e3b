"""tfrobseg.reporting.tables: Tables I–IV against hand-computed means / stds, layouts, published values."""

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SHARED, require

from tfrobseg import study
from tfrobseg.reporting import tables

REPO = Path(__file__).resolve().parents[2]
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
    summary = tables.summarize_table(df, "model", std_over="cells").set_index("model")
    # Hand computation, Table I rule: cell = (model, loss, fold, eps>0) mean over its 2 patients;
    # row = mean and sample std over the cells of the model (2 losses x 2 folds x 2 eps = 8).
    for mi, m in enumerate(["unet", "resunet"]):
        cells = []
        for li, f, e in itertools.product([0, 1], [0, 1], [0.5, 1.0]):
            cells.append(np.mean([0.9 - 0.3 * e - 0.1 * mi + 0.05 * li + 0.01 * f + 0.02 * p for p in (0, 1)]))
        assert summary.loc[m, "dice_mean"] == pytest.approx(np.mean(cells))
        assert summary.loc[m, "dice_std"] == pytest.approx(np.std(cells, ddof=1))
        assert summary.loc[m, "n_cells"] == 8 and summary.loc[m, "n_cases"] == 16 and summary.loc[m, "n"] == 8
        assert summary.loc[m, "hd95_mean"] == pytest.approx(np.mean([5 + 10 * e + mi + 0.5 for e in (0.5, 1.0)]))
    # Study order and display names come from the model registry.
    assert list(summary["name"]) == ["U-Net", "ResU-Net"]


def test_cases_std_and_clean_table():
    df = _results()
    by_case = tables.summarize_table(df, "loss", std_over="patients").set_index("loss")
    vals = df[(df["loss"] == "bce") & (df["epsilon"] > 0)]["assd"]
    assert by_case.loc["bce", "assd_std"] == pytest.approx(vals.std(ddof=1))
    clean = tables.summarize_table(df, "loss", attacked_only=False, clean_only=True).set_index("loss")
    assert clean.loc["tversky", "assd_mean"] == pytest.approx(1.1)
    with pytest.raises(ValueError):
        tables.summarize_table(df, "fold")
    with pytest.raises(ValueError, match="std_over must be one of"):
        tables.summarize_table(df, "loss", std_over="cases")
    with pytest.raises(ValueError, match="empty_predictions must be one of"):
        tables.summarize_table(df, "loss", empty_predictions="drop")


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
    assert list(f.columns) == ["Loss Function", "DC", "HD95 (mm)", "ASD (mm)", "n"]
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


def test_the_defense_of_the_run_is_named_in_every_table(tmp_path):
    tables.write_tables(_results(), tmp_path, defense="trades(steps=3)")
    note = "networks trained under the defense trades(steps=3)"
    for name in ("table_I.md", "table_III.md", "table_I.tex", "tables.md"):
        assert note in (tmp_path / name).read_text(encoding="utf-8"), name
    tables.write_tables(_results(), tmp_path / "plain")
    assert "defense" not in (tmp_path / "plain" / "tables.md").read_text(encoding="utf-8")


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
    holdout = crossval.assign(phase="holdout", fold=-1, dice=np.where(crossval["loss"] == "bce", 0.9, 0.1))
    both = pd.concat([crossval, holdout], ignore_index=True)
    assert tables.most_robust_loss(both, "crossval") == "tversky"
    assert tables.most_robust_loss(both, "holdout") == "bce"
    assert tables.most_robust_loss(both, "nothing") is None


# --------------------------------------------------------------------------- issue 12: paper-faithful numbers
def _grid(models=study.MODELS, losses=study.LOSSES, folds=range(study.N_FOLDS), eps=study.EPSILONS, phase="crossval"):
    """Per-patient rows of a whole grid: fold k has k + 1 patients (unbalanced folds), values distinct."""
    rng = np.random.default_rng(1)
    rows = []
    for m, l, f, e in itertools.product(models, losses, folds, eps):
        for p in range(f + 1 if f >= 0 else 2):
            rows.append({"phase": phase, "model": m, "loss": l, "fold": f, "epsilon": e, "patient_id": f"P{f}{p}",
                         "dice": rng.random(), "hd95": 20 * rng.random(), "assd": 5 * rng.random(),
                         "empty_pred": False})
    return pd.DataFrame(rows)


def test_default_std_is_over_the_per_patient_values():
    # Folds of 1 and 2 patients: the per-patient mean and the mean of cells differ, and so do the stds.
    df = _results().query("fold == 0 or patient_id != 'P11'")
    s = tables.summarize_table(df, "model").set_index("model")
    for m in ("unet", "resunet"):
        vals = df[(df["model"] == m) & (df["epsilon"] > 0)]
        for metric in ("dice", "hd95", "assd"):
            assert s.loc[m, f"{metric}_mean"] == pytest.approx(np.mean(vals[metric]))
            assert s.loc[m, f"{metric}_std"] == pytest.approx(np.std(vals[metric], ddof=1))
        assert s.loc[m, "n"] == len(vals) == 12
    cells = tables.summarize_table(df, "model", std_over="cells").set_index("model")
    assert cells.loc["unet", "n"] == 8 and cells.loc["unet", "dice_std"] != pytest.approx(s.loc["unet", "dice_std"])


def test_excluding_empty_predictions_matches_numpy_and_counts_them(tmp_path):
    df = _results()
    empty = (df["model"] == "unet") & (df["patient_id"] == "P00") & (df["epsilon"] == 0.5)  # 2 rows (2 losses)
    df.loc[empty, ["dice", "hd95", "assd", "empty_pred"]] = [0.0, 250.0, 120.0, True]
    attacked = df[df["epsilon"] > 0]
    unet = attacked[attacked["model"] == "unet"]
    kept = unet[~unet["empty_pred"]]
    pen = tables.summarize_table(df, "model").set_index("model")
    exc = tables.summarize_table(df, "model", empty_predictions="exclude").set_index("model")
    assert pen.loc["unet", "hd95_mean"] == pytest.approx(np.mean(unet["hd95"]))
    assert exc.loc["unet", "hd95_mean"] == pytest.approx(np.mean(kept["hd95"]))
    assert exc.loc["unet", "assd_std"] == pytest.approx(np.std(kept["assd"], ddof=1))
    assert exc.loc["unet", "dice_mean"] == pytest.approx(np.mean(unet["dice"]))  # Dice 0 of an empty one stays
    assert (exc.loc["unet", "n_excluded"], exc.loc["unet", "hd95_n"], exc.loc["unet", "dice_n"]) == (2, 14, 16)
    assert exc.loc["resunet", "hd95_mean"] == pytest.approx(pen.loc["resunet", "hd95_mean"])
    assert (exc.loc["resunet", "n_excluded"], pen.loc["unet", "n_excluded"], pen.loc["unet", "n_empty"]) == (0, 0, 2)
    # Over cells: a cell's value is the mean of its non-empty patients.
    cell_ref = kept.groupby(["loss", "fold", "epsilon"])["hd95"].mean()
    by_cell = tables.summarize_table(df, "model", std_over="cells", empty_predictions="exclude").set_index("model")
    assert by_cell.loc["unet", "hd95_mean"] == pytest.approx(np.mean(cell_ref))
    assert by_cell.loc["unet", "hd95_std"] == pytest.approx(np.std(cell_ref, ddof=1))
    # The written table says what was excluded and how many values are behind HD95 / ASD.
    md = tables.write_tables(df, tmp_path, empty_predictions="exclude").study_tables[0].read_text("utf-8")
    assert "| n | n HD95, ASD | empty predictions |" in md and "| 16 | 14 | 2 |" in md
    assert "empty predictions excluded from HD95 and ASD" in md


def _table_files(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.glob("table_I*"))}


def test_results_outside_the_study_grid_go_to_the_additional_table(tmp_path):
    base = _grid(losses=("bce", "tversky"))
    extra = pd.concat([
        base[(base["loss"] == "bce") & (base["model"] == "unet")].assign(loss="focal"),
        base[(base["loss"] == "bce") & (base["model"] == "unet")].assign(model="unet_plus_plus", dice=0.99),
        base[(base["loss"] == "bce") & (base["model"] == "unet") & (base["fold"] == 2)].assign(fold=3),
        base[(base["loss"] == "bce") & (base["epsilon"] == 1.0)].assign(epsilon=1.5, dice=0.0),
    ], ignore_index=True)
    alone = tables.write_tables(base, tmp_path / "alone")
    mixed = tables.write_tables(pd.concat([base, extra], ignore_index=True), tmp_path / "mixed")
    assert _table_files(tmp_path / "alone") == _table_files(tmp_path / "mixed")  # Tables I–IV: byte-identical
    assert alone.additional is None and "table_additional.md" not in alone.paths
    assert mixed.printed == mixed.study_tables + [tmp_path / "mixed" / "table_additional.md"]
    add = pd.read_csv(tmp_path / "mixed" / "table_additional.csv")
    assert set(add["outside the study"]) == {"loss focal", "model unet_plus_plus", "fold 3", "ε"}
    values = pd.read_csv(tmp_path / "mixed" / "table_additional_values.csv").set_index(["outside", "attacked"])
    focal = extra[(extra["loss"] == "focal") & (extra["epsilon"] > 0)]
    assert values.loc[("loss focal", True), "dice_mean"] == pytest.approx(np.mean(focal["dice"]))
    assert values.loc[("loss focal", True), "n"] == len(focal)
    assert values.loc[("ε", True), "n"].sum() == (extra["epsilon"] == 1.5).sum()  # one row per model
    assert "Additional: results outside the study's grid" in mixed.overview.read_text(encoding="utf-8")
    # The most robust loss of the figures is a study loss, even when another one scores higher.
    assert tables.most_robust_loss(pd.concat([base, extra.assign(dice=1.0)])) in study.LOSSES


def test_a_missing_unit_is_named_and_its_rows_marked(tmp_path):
    full = _grid()
    gap = full[~((full["model"] == "unet") & (full["loss"] == "bce") & (full["fold"] == 1))]
    written = tables.write_tables(gap, tmp_path)
    t1 = pd.read_csv(tmp_path / "table_I.csv").set_index("Model")
    t3 = pd.read_csv(tmp_path / "table_III.csv").set_index("Loss Function")
    assert t1.loc["U-Net", "study units"] == "17/18 †" and t1.loc["ResU-Net", "study units"] == "18/18"
    assert t3.loc["BCE", "study units"] == "14/15 †" and t3.loc["Dice", "study units"] == "15/15"
    md1 = written.study_tables[0].read_text(encoding="utf-8")
    assert "† incomplete study grid, U-Net: 17 of 18 study units; units not run: crossval/unet/bce/fold1" in md1
    overview = written.overview.read_text(encoding="utf-8")
    assert "Study grid, crossval: 89 of 90 units complete:" in overview
    assert "- units not run: crossval/unet/bce/fold1" in overview
    # The complete grid has no mark; a whole model not run is one line, not one per unit.
    tables.write_tables(full, tmp_path / "full")
    assert "†" not in (tmp_path / "full" / "table_III.md").read_text(encoding="utf-8")
    one_model = tables.write_tables(full[full["model"] == "recurrent_unet"], tmp_path / "one")
    md3 = one_model.study_tables[1].read_text(encoding="utf-8")
    assert md3.count("models not run: unet, attention_unet, resunet, unet_vit (3 units each)") == 1
    assert "crossval/unet/" not in one_model.overview.read_text(encoding="utf-8")


def _results_folder(root, df):
    for (phase, model, loss, fold), rows in df.groupby(["phase", "model", "loss", "fold"]):
        unit = root / phase / model / loss / ("holdout" if fold < 0 else f"fold{fold}")
        unit.mkdir(parents=True)
        rows.to_csv(unit / "metrics.csv", index=False)
        (unit / "DONE.json").write_text("{}")
    return root


def _tables_script():
    import runpy

    return runpy.run_path(str(REPO / "experiments" / "tables.py"))["main"]


def test_tables_script_prints_which_std_and_the_n_of_each_row(tmp_path, capsys):
    df = pd.concat([_results(), _results().assign(phase="holdout", fold=-1).drop_duplicates(
        ["model", "loss", "epsilon", "patient_id"])], ignore_index=True)
    df.loc[0, ["epsilon", "empty_pred"]] = [0.5, True]  # unet / bce / fold 0 / P00
    root = _results_folder(tmp_path / "res", df)
    assert _tables_script()(["--results", str(root)]) == 0
    printed = capsys.readouterr().out
    blocks = printed.split("**Table ")[1:]
    assert len(blocks) == 4 * 3  # Tables I–IV: attacked, vs published, clean
    for block in blocks:
        assert "± = sample std (ddof 1) of the row's n per-patient values (one per patient × " in block, block
        assert "| n |" in block or "| n ours |" in block, block
    table_i = blocks[0].splitlines()
    header = [c.strip() for c in table_i[2].split("|")]
    unet = [c.strip() for c in next(line for line in table_i if line.startswith("| U-Net")).split("|")]
    attacked_unet = df[(df["phase"] == "crossval") & (df["model"] == "unet") & (df["epsilon"] > 0)]
    assert unet[header.index("n")] == str(len(attacked_unet))
    assert unet[header.index("DC")].startswith(f"{attacked_unet['dice'].mean():.2f} ± "
                                                  f"{attacked_unet['dice'].std(ddof=1):.2f}")
    assert "(one per patient × loss × fold × ε)" in blocks[0] and "(one per patient × loss × ε)" in blocks[3]
    # Options: the cells' std, and empty predictions left out of HD95 / ASD with their count.
    assert _tables_script()(["--results", str(root), "--std-over", "cells", "--empty-predictions", "exclude"]) == 0
    printed = capsys.readouterr().out
    assert "± = sample std (ddof 1) of the row's n cells (one per loss × fold × ε" in printed
    assert "| Model | DC | HD95 (mm) | ASD (mm) | n | n HD95, ASD | empty predictions | study units |" in printed


def test_tables_average_the_runs_first_attack_only(tmp_path):
    fgsm = _results().assign(attack="fgsm", attack_params="{}")
    pgd = fgsm.assign(attack="pgd", attack_params='{"steps": 3}', dice=0.0)
    both = pd.concat([fgsm, pgd], ignore_index=True)  # each unit's metrics.csv: its first attack's rows first
    rows, note = tables.first_attack_rows(both)
    assert rows.equals(fgsm) and note == ("attack: fgsm, the run's first; its other attacks (pgd {\"steps\": 3}) are "
                                         "not averaged in (their rows are in the units' metrics.csv)")
    assert tables.first_attack_rows(fgsm) == (fgsm, None)
    assert tables.first_attack_rows(fgsm.drop(columns=["attack_params"]))[1] is None  # before attack_params
    written = tables.write_tables(both, tmp_path)
    values = pd.read_csv(written.paths["table_I_values.csv"]).set_index("model")
    alone = tables.summarize_table(fgsm, "model").set_index("model")
    assert values.loc["unet", "dice_mean"] == pytest.approx(alone.loc["unet", "dice_mean"])  # pgd's 0 not in it
    assert note in written.paths["table_I.md"].read_text(encoding="utf-8")
    assert tables.most_robust_loss(both) == tables.most_robust_loss(fgsm)
