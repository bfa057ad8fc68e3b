"""From a results folder to what a reader sees: statistics, formatting, Tables I–IV, Figures 1–3.

* :mod:`~tfrobseg.reporting.stats`: mean ± std per group, paired Wilcoxon tests with Bonferroni.
* :mod:`~tfrobseg.reporting.formatting`: "mean ± std" cells, Markdown and LaTeX tables.
* :mod:`~tfrobseg.reporting.tables`: the study's Tables I–IV beside the published values.
* :mod:`~tfrobseg.reporting.figures`: Figures 1–3 and robustness curves.
* :mod:`~tfrobseg.reporting.attack_comparison`: Dice (HD95, ASSD) vs ε per attack, a table and a figure.
* :mod:`~tfrobseg.reporting.defense_table`: defenses vs their baseline in Liu et al.'s layout, paired
  Wilcoxon + Bonferroni, bootstrap CI of the median difference, the gradient-masking flag, a figure.

Reporting reads unit records and metrics (:mod:`tfrobseg.experiment.units`, ``store``); it never
imports the experiment runner, and never SimpleITK.
"""
