"""Tests for tfrobseg.reporting.stats and formatting against pandas/NumPy, SciPy and hand-checked Bonferroni values."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from tfrobseg.reporting import formatting, stats


@pytest.fixture
def per_case():
    rng = np.random.default_rng(0)
    rows = []
    for model, shift in (("U-Net", 0.0), ("ResU-Net", -0.15), ("UNet-ViT", 0.02)):
        for patient in range(8):
            for epsilon in (0.1, 0.5):
                rows.append({
                    "model": model, "patient_id": f"P{patient}", "epsilon": epsilon,
                    "dice": float(np.clip(0.6 + shift - 0.2 * epsilon + 0.05 * rng.standard_normal(), 0, 1)),
                    "hd95": float(10 + 5 * rng.random()), "assd": float(1 + rng.random()),
                })
    return pd.DataFrame(rows)


def test_summarize_matches_numpy(per_case):
    summary = stats.summarize(per_case, "model")
    assert list(summary.columns) == ["model", "n", "dice_mean", "dice_std", "hd95_mean", "hd95_std",
                                     "assd_mean", "assd_std"]
    unet = per_case[per_case["model"] == "U-Net"]
    row = summary.set_index("model").loc["U-Net"]
    assert row["n"] == 16
    assert row["dice_mean"] == pytest.approx(np.mean(unet["dice"]))
    assert row["hd95_std"] == pytest.approx(np.std(unet["hd95"], ddof=1))
    population = stats.summarize(per_case, ["model", "epsilon"], ["dice"], ddof=0)
    assert len(population) == 6
    part = unet[unet["epsilon"] == 0.5]["dice"]
    got = population.set_index(["model", "epsilon"]).loc[("U-Net", 0.5), "dice_std"]
    assert got == pytest.approx(np.std(part, ddof=0))


def test_summarize_rejects_nan_and_missing_columns(per_case):
    broken = per_case.copy()
    broken.loc[0, "dice"] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        stats.summarize(broken, "model")
    with pytest.raises(ValueError, match="missing"):
        stats.summarize(per_case, "loss")


def test_format_table_published_layout():
    summary = pd.DataFrame({"model": ["U-Net", "BCE-Dice"], "n": [3, 3],
                            "dice_mean": [0.4912, 0.5], "dice_std": [0.1749, 0.26],
                            "hd95_mean": [13.333, 14.04], "hd95_std": [7.79, 16.4],
                            "assd_mean": [1.72, 6.38], "assd_std": [2.84, 18.64]})
    table = formatting.format_table(summary, "model")
    assert list(table.columns) == ["model", "DC", "HD95 (mm)", "ASD (mm)"]
    assert table.loc[0, "DC"] == "0.49 ± 0.17"
    assert table.loc[1, "DC"] == "0.50 ± 0.26"
    published = formatting.format_table(summary, "model", strip_zeros=True)
    assert published.loc[1, "DC"] == "0.5 ± 0.26"
    assert published.loc[1, "HD95 (mm)"] == "14.04 ± 16.4"


def test_format_table_summarizes_raw_cases(per_case):
    table = formatting.format_table(per_case, "model", ["dice"], labels={"dice": "Dice"})
    unet = per_case[per_case["model"] == "U-Net"]["dice"]
    expected = f"{unet.mean():.2f} ± {unet.std(ddof=1):.2f}"
    assert table.set_index("model").loc["U-Net", "Dice"] == expected


def test_bonferroni_by_hand():
    np.testing.assert_allclose(stats.bonferroni([0.01, 0.02, 0.5]), [0.03, 0.06, 1.0])
    np.testing.assert_allclose(stats.bonferroni([0.004], n_comparisons=10), [0.04])
    with pytest.raises(ValueError):
        stats.bonferroni([0.1, 0.2], n_comparisons=1)


def test_paired_wilcoxon_matches_scipy_and_bonferroni(per_case):
    result = stats.paired_wilcoxon(per_case, "model", "dice", ["patient_id", "epsilon"])
    assert list(result.columns) == ["group_a", "group_b", "n", "mean_a", "mean_b", "statistic", "p",
                                    "p_bonferroni", "significant"]
    assert list(zip(result["group_a"], result["group_b"])) == [
        ("U-Net", "ResU-Net"), ("U-Net", "UNet-ViT"), ("ResU-Net", "UNet-ViT")]
    for row in result.itertuples():
        a = per_case[per_case["model"] == row.group_a].sort_values(["patient_id", "epsilon"])["dice"]
        b = per_case[per_case["model"] == row.group_b].sort_values(["patient_id", "epsilon"])["dice"]
        expected = sps.wilcoxon(a.to_numpy(), b.to_numpy())
        assert row.n == 16
        assert row.statistic == pytest.approx(expected.statistic)
        assert row.p == pytest.approx(expected.pvalue)
        assert row.p_bonferroni == pytest.approx(min(1.0, 3 * expected.pvalue))
        assert row.significant == (min(1.0, 3 * expected.pvalue) <= 0.05)
    # ResU-Net is 0.15 lower on all 16 pairs: the exact two-sided p is 2 / 2**16.
    resunet = result[(result["group_a"] == "U-Net") & (result["group_b"] == "ResU-Net")].iloc[0]
    assert resunet.p == pytest.approx(2 / 2**16)
    assert resunet.p_bonferroni == pytest.approx(6 / 2**16) and resunet.significant


def test_paired_wilcoxon_reference_pairs_and_edge_cases(per_case):
    vs_unet = stats.paired_wilcoxon(per_case, "model", "dice", ["patient_id", "epsilon"], reference="U-Net")
    assert list(vs_unet["group_b"]) == ["ResU-Net", "UNet-ViT"]
    np.testing.assert_allclose(vs_unet["p_bonferroni"], np.minimum(1, 2 * vs_unet["p"]))
    # Unpaired rows are dropped: remove one patient from one model.
    partial = per_case[~((per_case["model"] == "UNet-ViT") & (per_case["patient_id"] == "P0"))]
    out = stats.paired_wilcoxon(partial, "model", "dice", ["patient_id", "epsilon"], groups=["U-Net", "UNet-ViT"])
    assert out.loc[0, "n"] == 14
    same = pd.DataFrame({"g": ["a"] * 4 + ["b"] * 4, "pid": list(range(4)) * 2, "v": [0.5, 0.6, 0.7, 0.8] * 2})
    tie = stats.paired_wilcoxon(same, "g", "v", "pid")
    assert (tie.loc[0, "statistic"], tie.loc[0, "p"], tie.loc[0, "significant"]) == (0.0, 1.0, False)
    with pytest.raises(ValueError, match="several rows"):
        stats.paired_wilcoxon(per_case, "model", "dice", "patient_id")
    with pytest.raises(ValueError, match="not found"):
        stats.paired_wilcoxon(per_case, "model", "dice", ["patient_id", "epsilon"], groups=["U-Net", "X"])
    with pytest.raises(ValueError, match="correction"):
        stats.paired_wilcoxon(per_case, "model", "dice", ["patient_id", "epsilon"], correction="holm")


def test_markdown_and_latex_notes():
    df = pd.DataFrame({"Model": ["U-Net"], "DC": ["0.49 ± 0.17"], "n": [480]})
    md = formatting.to_markdown(df, "Table I", ["± = sample std of the n values", "† incomplete"]).splitlines()
    assert md[-3:] == ["", "- ± = sample std of the n values", "- † incomplete"]
    tex = formatting.to_latex(df, "Table I", "tab:i", ["± over patients", "unit crossval/unet"]).splitlines()
    assert tex[-4:] == [r"\par\footnotesize", r"$\pm$ over patients \\", "unit crossval/unet", r"\end{table}"]
    assert formatting.to_markdown(df).endswith("| U-Net | 0.49 ± 0.17 | 480 |\n")
