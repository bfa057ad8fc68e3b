"""The study's experiments: settings, units and their records, the results folder, the runner, the grid.

* :mod:`~tfrobseg.experiment.settings`: :class:`Settings` (embeds the training configuration) and
  how command-line options and the built-in preset resolve into it.
* :mod:`~tfrobseg.experiment.units`: grid units, their patients and their record (``config.json``).
* :mod:`~tfrobseg.experiment.store`: the results folder (fingerprint, markers, collecting metrics).
* :mod:`~tfrobseg.experiment.scoring`: per-patient 3D metrics from the attack stream.
* :mod:`~tfrobseg.experiment.attacks`: :class:`AttackSpec`, the attacks a run evaluates and their options.
* :mod:`~tfrobseg.experiment.runner`: one unit, data → train → attack and score → record.
* :mod:`~tfrobseg.experiment.attack_units`: ``experiments/attack.py``, other attacks on finished units.
* :mod:`~tfrobseg.experiment.grid` and :mod:`~tfrobseg.experiment.cli`: a phase's grid and its command line.
* :mod:`~tfrobseg.experiment.executor`: where a grid's units run (here, or a SLURM job array via submitit).
* :mod:`~tfrobseg.experiment.cost` and :mod:`~tfrobseg.experiment.dry_run`: what units cost before they run
  (MACs, a calibrated throughput, hours) and ``--dry-run``, which lists and prices them.
* :mod:`~tfrobseg.experiment.verify`: checking a results folder (also one filled by many jobs) and merging its rows.

This package imports nothing by itself, so the reporting code can read unit records without
loading the runner.
"""
