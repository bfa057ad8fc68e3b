"""``--dry-run``: the units a grid command would compute and what they would cost, nothing trained, submitted or
created.

A unit is listed unless it is complete in the results folder (its marker, its files matching their
checksums: what a real call skips). Its cost is :func:`tfrobseg.experiment.cost.estimate_units`'s, with the
throughput given (``--throughput``) or measured on this machine (``--calibrate``): GPU-hours when the units run
on GPUs (``--executor slurm --gpus-per-unit N``, or this machine's GPUs), CPU-hours otherwise.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tfrobseg.experiment import store
from tfrobseg.experiment.executor import ExecutorConfig
from tfrobseg.experiment.units import Unit

__all__ = ["dry_run"]


def _pending(grid: Any, units: list[Unit]) -> tuple[list[Unit], int, bool]:
    """The ``units`` of ``grid`` (a :class:`~tfrobseg.experiment.grid.GridRun`; the units of its shard) a call would
    compute, how many are complete already, and whether its folder holds a run of other settings (a real call
    refuses it; none of its units count). Read from the folder; nothing written."""
    from tfrobseg.io import config_hash

    other = False
    if (grid.out_dir / store.RUN_FILE).is_file():
        try:
            other = store.RunFile.read(grid.out_dir).settings_hash != config_hash(grid.settings.fingerprint())
        except ValueError:
            other = True
    todo = units if other else [u for u in units if not store.is_complete(u, grid.out_dir)]
    return todo, len(units) - len(todo), other


def dry_run(grids: Sequence[Any], args: argparse.Namespace, executor: ExecutorConfig,
            say: Callable[[str], None] | None = None) -> int:
    """List and cost the pending units of ``grids`` (``GridRun``); returns the exit code (0)."""
    from tfrobseg.experiment.cost import (
        Throughput,
        calibrate,
        estimate_units,
        format_estimate,
    )
    from tfrobseg.experiment.grid import shard_units

    say = say or (lambda line: print(line, flush=True))
    # GPU-hours: a unit's hours x the GPUs it holds (locally: one per replica, mixed precision chosen with a GPU).
    gpus = executor.gpus_per_unit if executor.remote else grids[0].settings.replicas * (executor.unit_gpus() > 0)
    device = "GPU" if gpus > 0 else "CPU"
    if args.throughput is not None:
        throughput: Any = Throughput.given(args.throughput, device)
    else:
        models = list(dict.fromkeys(m for g in grids for m in g.models))
        say(f"Calibrating {', '.join(models)} on this machine at the run's settings ...")
        throughput = calibrate(grids[0].settings, models, loss=grids[0].losses[0])
        for name, t in throughput.items():
            say(f"  {name}: {t.gmacs:.1f} GMAC/s, start-up {t.startup_s:.1f} s per unit ({t.source})")
    by_folder: dict[Path, list[Any]] = {}
    for grid, units in zip(grids, shard_units(grids)):
        todo, complete, other = _pending(grid, units)
        refused = " (it holds a run of other settings, which a real call refuses: --overwrite or another --out)" \
            if other else ""
        say(f"{grid.out_dir} ({grid.phase}){refused}: {len(todo) + complete} unit(s), {complete} complete, "
            f"{len(todo)} would run")
        by_folder.setdefault(grid.out_dir, []).extend(estimate_units(todo, grid.settings, throughput))
    costs = [cost for folder in by_folder.values() for cost in folder]
    if not costs:
        say("Nothing to compute.")
        return 0
    if len(by_folder) == 1:
        say(format_estimate(costs, gpus_per_unit=gpus))
    else:  # the same unit ids in several folders (defenses.py): a table each, then the sum
        for folder, folder_costs in by_folder.items():
            if folder_costs:
                say(f"{folder}:\n{format_estimate(folder_costs, gpus_per_unit=gpus)}")
        say(f"All {len(by_folder)} folders: {format_estimate(costs, gpus_per_unit=gpus).splitlines()[-1]}")
    if executor.remote:
        longest = max(c.seconds for c in costs) / 60
        note = "enough" if executor.time_min >= 1.5 * longest else "LESS than 1.5 x the longest estimate: raise it"
        say(f"--time {executor.time_min} min per unit; the longest unit's estimate is {longest:.0f} min ({note}; a "
            "unit that reaches its limit is requeued and restarted from scratch).")
    return 0
