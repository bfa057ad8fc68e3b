"""tfrobseg.reporting.defense_table: p-values against scipy.stats.wilcoxon, the Bonferroni m per attack, the
bootstrap CI against an independent NumPy loop and a degenerate case, the masking flag, Liu et al.'s cell
strings, the written files and the figure's line styles, and the one-line refusals of bad rows."""

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.colors as mcolors
import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from tfrobseg.reporting import defense_table as dt
from tfrobseg.reporting import stats

PATIENTS = [f"P{i}" for i in range(10)]
BASE = {0.0: [0.80 + 0.01 * i for i in range(10)], 0.5: [0.30 + 0.02 * i for i in range(10)]}
MIXED = [0.01, -0.02, 0.03, -0.04, 0.05, -0.06, 0.07, -0.08, 0.09, -0.015]  # signs alternate: no effect
RANK7 = [0.01, 0.02, 0.03, 0.04, 0.05, 0.06, -0.07, 0.08, 0.09, 0.10]  # negative ranks sum to 7: exact p = 38 / 1024


def _rows(defense, view, eps, dice, *, attack="fgsm"):
    return [{"attack": attack, "defense": defense, "view": view, "epsilon": eps, "model": "unet", "loss": "dice",
             "fold": 0, "patient_id": p, "dice": d} for p, d in zip(PATIENTS, dice)]


def _plus(values, diffs):
    return [v + d for v, d in zip(values, diffs)]


def _frame():
    """fgsm at ε 0 and 0.5: the baseline; adversarial (no effect at 0, +0.10…+0.19 at 0.5); distillation
    deployed (identical at 0, +0.200…+0.245 at 0.5) and its check view T=100 (identical at 0, mixed at 0.5).
    pgd at ε 0.5: the baseline, adversarial (no effect) and gaussian_noise (p = 0.037 before correction)."""
    rows = []
    for eps, base in BASE.items():
        rows += _rows("baseline", "deployed", eps, base)
        rows += _rows("adversarial", "deployed", eps, _plus(base, MIXED if eps == 0 else
                                                           [0.10 + 0.01 * i for i in range(10)]))
        rows += _rows("distillation", "deployed", eps, base if eps == 0 else
                      _plus(base, [0.2 + 0.005 * i for i in range(10)]))
        rows += _rows("distillation", "T=100", eps, base if eps == 0 else _plus(base, MIXED))
    rows += _rows("baseline", "deployed", 0.5, BASE[0.5], attack="pgd")
    rows += _rows("adversarial", "deployed", 0.5, _plus(BASE[0.5], MIXED), attack="pgd")
    rows += _rows("gaussian_noise", "deployed", 0.5, _plus(BASE[0.5], RANK7), attack="pgd")
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def table():
    return dt.defense_table(_frame(), n_boot=300, seed=3)


def _pair(rows, attack, defense, view, eps):
    """Defense and baseline Dice per patient, merged by hand (independent of the module's pairing)."""
    mine = rows[(rows.attack == attack) & (rows.defense == defense) & (rows.view == view) & (rows.epsilon == eps)]
    base = rows[(rows.attack == attack) & (rows.defense == "baseline") & (rows.epsilon == eps)]
    merged = mine.merge(base, on="patient_id", suffixes=("", "_b"))
    return merged["dice"].to_numpy(), merged["dice_b"].to_numpy()


def _row(table, attack, defense, view, eps):
    hit = table[(table.attack == attack) & (table.defense == defense) & (table.view == view) & (table.epsilon == eps)]
    assert len(hit) == 1
    return hit.iloc[0]


def test_p_values_are_scipys_wilcoxon_and_bonferroni_counts_the_tests_of_each_attack(table):
    rows = _frame()
    tested = table[table.defense != "baseline"]
    assert len(tested) == 8
    for r in tested.itertuples():
        a, b = _pair(rows, r.attack, r.defense, r.view, r.epsilon)
        p = 1.0 if np.all(a == b) else sps.wilcoxon(a, b).pvalue
        m = 6 if r.attack == "fgsm" else 2  # fgsm: (adversarial, distillation, distillation T=100) × 2 ε; pgd: 2
        assert r.p_value == pytest.approx(p, rel=1e-12)
        assert r.m == m
        assert r.p_bonferroni == pytest.approx(min(1.0, m * p), rel=1e-12)
        assert r.significant == (min(1.0, m * p) < 0.05)
        assert r.median_diff == pytest.approx(np.median(a - b))
        assert r.n == 10 and r.mean == pytest.approx(a.mean()) and r.std == pytest.approx(a.std(ddof=1))
    # All ten differences positive and distinct: exact two-sided p = 2 / 2^10; times m = 6.
    adv = _row(table, "fgsm", "adversarial", "deployed", 0.5)
    assert adv.p_value == pytest.approx(2 / 1024) and adv.p_bonferroni == pytest.approx(12 / 1024) and adv.significant
    same = _row(table, "fgsm", "distillation", "deployed", 0.0)  # identical Dice: no evidence, p = 1, not NaN
    assert (same.p_value, same.p_bonferroni, same.median_diff, same.significant) == (1.0, 1.0, 0.0, False)
    noise = _row(table, "pgd", "gaussian_noise", "deployed", 0.5)  # significant only before the correction
    assert noise.p_value == pytest.approx(38 / 1024) and noise.p_bonferroni == pytest.approx(76 / 1024)
    assert not noise.significant


def test_baseline_rows_carry_mean_and_std_and_no_statistics(table):
    base = table[table.defense == "baseline"]
    assert list(base.epsilon[base.attack == "fgsm"]) == [0.0, 0.5]
    row = _row(table, "fgsm", "baseline", "deployed", 0.5)
    assert row["mean"] == pytest.approx(np.mean(BASE[0.5])) and row["std"] == pytest.approx(np.std(BASE[0.5], ddof=1))
    assert base[["median_diff", "ci_low", "ci_high", "p_value", "p_bonferroni"]].isna().all().all()
    assert (base.m == 0).all() and not base.significant.any()
    # Order: attacks as ATTACK_ORDER (fgsm before pgd), baseline first, deployed before the check view.
    fgsm = table[table.attack == "fgsm"]
    assert list(fgsm.defense + "/" + fgsm.view)[::2] == ["baseline/deployed", "adversarial/deployed",
                                                         "distillation/deployed", "distillation/T=100"]
    assert list(table.attack.unique()) == ["fgsm", "pgd"]


def _numpy_bootstrap(d, n_boot, seed, level=0.95):
    """Loop version: each resample's median by sorting, percentiles by linear interpolation between order
    statistics (NumPy's default rule written out)."""
    n = len(d)
    index = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    medians = []
    for row in index:
        s = sorted(d[i] for i in row)
        medians.append(s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2)
    medians.sort()
    out = []
    for q in ((1 - level) / 2, (1 + level) / 2):
        pos = q * (n_boot - 1)
        lo = math.floor(pos)
        out.append(medians[lo] + (pos - lo) * (medians[min(lo + 1, n_boot - 1)] - medians[lo]))
    return tuple(out)


def test_bootstrap_ci_matches_an_independent_numpy_loop(table):
    a, b = _pair(_frame(), "fgsm", "adversarial", "deployed", 0.5)
    row = _row(table, "fgsm", "adversarial", "deployed", 0.5)
    low, high = _numpy_bootstrap(a - b, 300, 3)
    assert (row.ci_low, row.ci_high) == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12))
    assert low < row.median_diff < high
    # Odd n and another level, through the stats function directly.
    d = np.array([0.3, -0.1, 0.25, 0.05, 0.4, -0.2, 0.15])
    got = stats.bootstrap_median_ci(d, n_boot=401, seed=11, level=0.8)
    assert got == pytest.approx(_numpy_bootstrap(d, 401, 11, 0.8), abs=1e-12)


def test_bootstrap_ci_of_equal_differences_is_that_difference():
    rows = pd.DataFrame(_rows("baseline", "deployed", 0.5, [0.5] * 10)
                        + _rows("noise", "deployed", 0.5, [0.75] * 10))
    row = dt.defense_table(rows, n_boot=50).iloc[1]
    assert (row.median_diff, row.ci_low, row.ci_high) == (0.25, 0.25, 0.25)


def test_masking_flag_when_only_the_deployed_view_wins(table):
    flags = dt.masking_flags(table)
    assert len(flags) == 1
    flag = flags.iloc[0]
    assert (flag.attack, flag.defense, flag.view, flag.epsilon, bool(flag.flagged)) == (
        "fgsm", "distillation", "T=100", 0.5, True)
    assert flag.deployed_p_bonferroni < 0.05 and flag.view_p_bonferroni >= 0.05


def test_no_masking_flag_when_the_check_view_wins_too():
    rows = _frame()
    view = (rows.defense == "distillation") & (rows.view == "T=100")
    deployed = rows[(rows.defense == "distillation") & (rows.view == "deployed")]
    rows.loc[view, "dice"] = deployed["dice"].to_numpy()  # the check view scores as the deployed network
    flags = dt.masking_flags(dt.defense_table(rows, n_boot=20))
    assert list(flags.flagged) == [False]


def test_masking_direction_follows_the_metric():
    # HD95: lower is better, so a negative median difference is a win.
    table = pd.DataFrame({"attack": "fgsm", "defense": "distillation", "view": ["deployed", "T=100"],
                          "epsilon": 0.5, "metric": "hd95", "median_diff": [-2.0, 1.0],
                          "p_bonferroni": [0.01, 0.01]})
    assert dt.masking_flags(table).flagged.tolist() == [True]
    table["metric"] = "dice"  # the same numbers for Dice: the deployed network is significantly worse
    assert dt.masking_flags(table).flagged.tolist() == [False]
    assert dt.masking_flags(table.iloc[:1]).empty  # no check view, no row


def test_liu_layout_cells(table):
    layout = dt.liu_layout(table, "fgsm").set_index("defense")
    assert list(layout.index) == ["baseline", "adversarial", "distillation", "distillation [view T=100]"]
    assert list(layout.columns) == ["Dice ε=0", "Dice ε=0.5", "p ε=0", "p ε=0.5",
                                    "Δ median [95 % CI] ε=0.5", "masking"]
    b5 = np.array(BASE[0.5])
    assert layout.at["baseline", "Dice ε=0.5"] == f"{b5.mean():.3f} ± {b5.std(ddof=1):.3f}"
    assert layout.at["baseline", "p ε=0.5"] == "—"
    a, _ = _pair(_frame(), "fgsm", "adversarial", "deployed", 0.5)
    assert layout.at["adversarial", "Dice ε=0.5"] == f"{a.mean():.3f} ± {a.std(ddof=1):.3f}*"
    assert not layout.at["adversarial", "Dice ε=0"].endswith("*")
    assert layout.at["adversarial", "p ε=0.5"] == "0.01172"  # 6 · 2 / 1024 = 0.01171875
    assert layout.at["distillation", "p ε=0"] == "1"
    adv = _row(table, "fgsm", "adversarial", "deployed", 0.5)
    assert layout.at["adversarial", "Δ median [95 % CI] ε=0.5"] == (
        f"{adv.median_diff:+.3f} [{adv.ci_low:+.3f}, {adv.ci_high:+.3f}]")
    assert layout.at["baseline", "Δ median [95 % CI] ε=0.5"] == "—"
    assert list(layout["masking"]) == ["—", "—", "flagged", "flagged"]
    # Liu et al.'s p format: four significant digits, scientific below 0.001.
    tiny = table.copy()
    tiny.loc[(tiny.defense == "adversarial") & (tiny.attack == "fgsm") & (tiny.epsilon == 0.5),
             "p_bonferroni"] = 6.628e-4
    assert dt.liu_layout(tiny, "fgsm").set_index("defense").at["adversarial", "p ε=0.5"] == "6.628e-4"


def test_written_files_and_figure(tmp_path):
    paths = dt.write_defense_report(_frame(), tmp_path, n_boot=100)
    names = sorted(p.name for p in paths)
    assert names == sorted(f"defenses_{x}" for a in ("fgsm", "pgd") for x in (
        f"{a}.csv", f"{a}.md", f"dice_vs_eps_{a}.png", f"dice_vs_eps_{a}.pdf"))
    assert all(p.parent == tmp_path and p.stat().st_size > 0 for p in paths)
    assert (tmp_path / "defenses_dice_vs_eps_fgsm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (tmp_path / "defenses_fgsm.md").read_text(encoding="utf-8")
    assert "Wilcoxon signed-rank" in md and "Bonferroni over m = 6 tests" in md and "0.01172" in md
    assert "Bonferroni over m = 2 tests" in (tmp_path / "defenses_pgd.md").read_text(encoding="utf-8")
    csv = pd.read_csv(tmp_path / "defenses_fgsm.csv")
    assert len(csv) == 8 and list(csv.columns)[:4] == ["attack", "defense", "view", "epsilon"]
    assert not list(tmp_path.glob(".tmp-*"))


def test_figure_lines_baseline_black_check_view_dashed_in_its_defenses_colour(table):
    fig = dt.plot_defenses(table, "fgsm")
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert set(lines) == {"baseline", "adversarial", "distillation", "distillation [view T=100]"}
    assert mcolors.to_rgb(lines["baseline"].get_color()) == (0.0, 0.0, 0.0)
    view, deployed = lines["distillation [view T=100]"], lines["distillation"]
    assert view.get_linestyle() == "--" and deployed.get_linestyle() == "-"
    assert mcolors.to_rgb(view.get_color()) == mcolors.to_rgb(deployed.get_color())
    assert mcolors.to_rgb(lines["adversarial"].get_color()) != mcolors.to_rgb(deployed.get_color())
    assert list(deployed.get_ydata()) == pytest.approx(
        list(table[(table.attack == "fgsm") & (table.defense == "distillation") & (table.view == "deployed")]["mean"]))
    fig.canvas.draw()
    matplotlib.pyplot.close(fig)


@pytest.mark.parametrize("change, message", [
    (lambda r: r.drop(columns="fold"), r"defense_table: missing column\(s\) \['fold'\]"),
    (lambda r: r[r.defense != "baseline"], r"no rows of the baseline 'baseline' in column 'defense'"),
    (lambda r: r[~((r.attack == "pgd") & (r.defense == "baseline"))], r"attack 'pgd' has no rows of the baseline"),
    (lambda r: r.drop(index=r.index[(r.defense == "adversarial") & (r.patient_id == "P3")][0]),
     (r"'adversarial' \(view 'deployed'\) under 'fgsm' at ε=0 does not pair with the baseline's cases: 0 case\(s\) "
      r"without a baseline row, 1 baseline case\(s\) missing, e.g. \{'model': 'unet', 'loss': 'dice', 'fold': 0, "
      r"'patient_id': 'P3'\}")),
    (lambda r: r.assign(fold=np.where(r.defense == "distillation", 1, 0)),
     (r"'distillation' .* does not pair .* 10 case\(s\) without a baseline row, 10 baseline case\(s\) missing")),
    (lambda r: r[~((r.defense == "baseline") & (r.epsilon == 0))],
     r"'adversarial' \(view 'deployed'\) under 'fgsm' at ε=0 has no baseline rows at that ε"),
    (lambda r: pd.concat([r, r.iloc[[5]]]), r"1 row\(s\) repeat an attack × defense × view × ε × case"),
    (lambda r: r.assign(dice=np.where(r.index == 3, np.nan, r.dice)), r"column 'dice' has 1 non-finite value"),
])
def test_bad_rows_are_refused_in_one_line(change, message):
    with pytest.raises(ValueError, match=message) as info:
        dt.defense_table(change(_frame()), n_boot=10)
    assert "\n" not in str(info.value)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="metric 'asd' is not one of dice, hd95, assd"):
        dt.defense_table(_frame(), metric="asd")
    with pytest.raises(ValueError, match="alpha must be in"):
        dt.defense_table(_frame(), alpha=1.5)
    with pytest.raises(ValueError, match="n_boot must be a positive integer"):
        dt.defense_table(_frame(), n_boot=0)
    with pytest.raises(ValueError, match=r"liu_layout: no rows of attack 'dag'; attacks: \['fgsm', 'pgd'\]"):
        dt.liu_layout(dt.defense_table(_frame(), n_boot=10), "dag")


def test_all_zero_differences_give_p_one_for_every_zero_method():
    a = [0.5, 0.6, 0.7]
    for zero_method in ("wilcox", "pratt", "zsplit"):
        assert stats.wilcoxon_signed_rank(a, a, zero_method=zero_method) == (0.0, 1.0)
