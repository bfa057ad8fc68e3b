"""Benchmark: the cost estimate (:mod:`tfrobseg.experiment.cost`) against units run for real on this machine.

For each of two tiny configurations of the built-in synthetic cohort (its preset: 48 px, filters 8…128, one
thread per unit, XLA off on a CPU), crossval fold 0, ``--epochs`` epochs with an early-stopping patience above
the cap (so that every epoch runs, as the estimate assumes):

  A  U-Net, Dice loss, FGSM at ε 0.1, 0.5, 1 (the study's path);
  B  Recurrent U-Net, BCE-Dice loss, FGSM and PGD with 3 steps at the same ε (a slow trace, an iterative attack);

it calibrates the model (:func:`~tfrobseg.experiment.cost.calibrate`), estimates the unit
(:func:`~tfrobseg.experiment.cost.estimate_units`), then runs it (:func:`tfrobseg.experiment.grid.run_grid`,
one worker process, into a temporary folder) and prints per unit the estimated and the measured seconds (the
unit's ``config.json``: ``seconds`` train, attack_and_metrics and total) and measured / estimated for the
total, then the range of that ratio. Run it on an otherwise idle machine: the calibration and the units
should see the same load.

Measured 2026-11-24 on the 2-core development machine, shared with other jobs (load average 0.7-3.0), with
the defaults (4 epochs), two runs of the final code:

    config  calibrated: training GMAC/s, start-up; attacks GMAC/s, start-up   total s est/meas  meas/est
    A       9.5, 4.6 s; 7.9, 1.4 s                                             17.4/16.0         0.92
    B       10.9, 13.5 s; 8.0, 7.2 s                                           68.9/61.6         0.90
    A       6.2, 3.9 s; 11.5, 2.5 s                                            21.3/19.0         0.89
    B       11.4, 12.9 s; 12.6, 6.4 s                                          55.8/56.7         1.02

measured / estimated 0.89-1.02. Over five runs (with earlier versions of the code) the calibrated rates moved
by up to 1.7x (A's attacks 7.9-12.0 GMAC/s, B's training 6.8-11.6): a calibration times a few seconds of
work, and other processes on the 2 cores change them.
A calibration took 23-38 s per model (one worker process: importing TensorFlow, tracing the steps, the
measured epochs and attack calls).

    python benchmarks/cost_estimate.py                   # the built-in cohort in data/builtin, prepared if absent
    python benchmarks/cost_estimate.py --epochs 3 --configs A
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfrobseg.experiment.cli import build_parser
from tfrobseg.experiment.cost import calibrate, estimate_units, format_estimate
from tfrobseg.experiment.grid import run_grid
from tfrobseg.experiment.settings import resolve_data, resolve_settings
from tfrobseg.experiment.units import UnitRecord, make_grid

#: name -> (model, loss, options of experiments/crossval.py besides the shared ones)
CONFIGS: dict[str, tuple[str, str, list[str]]] = {
    "A": ("unet", "dice", ["--attack", "fgsm"]),
    "B": ("recurrent_unet", "bce_dice", ["--attack", "fgsm,pgd", "--steps", "3"]),
}


def main(argv: list[str] | None = None) -> list[float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="a prepared folder (default: the built-in cohort, data/builtin)")
    parser.add_argument("--epochs", type=int, default=4, help="the epoch cap of the units (default 4)")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma list of {', '.join(CONFIGS)}")
    args = parser.parse_args(argv)
    chosen = args.configs.split(",")
    if unknown := sorted(set(chosen) - set(CONFIGS)):
        parser.error(f"--configs: unknown {unknown}")
    data_dir, preset = resolve_data(args.data)
    ratios: list[float] = []
    for name in chosen:
        model, loss, options = CONFIGS[name]
        cli = build_parser("crossval").parse_args([
            "--model", model, "--loss", loss, "--folds", "0", "--max-epochs", str(args.epochs),
            "--early-stopping-patience", str(args.epochs + 1), "--epsilons", "0.1,0.5,1", *options])
        settings, _ = resolve_settings(cli, data_dir, preset, gpus=0, loss_names=[loss], model_names=[model])
        t0 = time.perf_counter()
        throughput = calibrate(settings, [model], loss=loss)
        calibration_s = time.perf_counter() - t0
        units = make_grid("crossval", [model], [loss], [0])
        costs = estimate_units(units, settings, throughput)
        rate = throughput[model]
        print(f"\n{name}: {model}, {loss}, {settings.attack} {settings.attack_options or ''}, {args.epochs} epochs, "
              f"{settings.image_size} px, filters {','.join(map(str, settings.filters))}, {settings.threads} thread(s)")
        print(f"calibrated in {calibration_s:.0f} s: training {rate.gmacs:.2f} GMAC/s, start-up {rate.startup_s:.1f} s; "
              f"attacks {rate.attack_rate:.2f} GMAC/s, start-up {rate.attack_startup_s:.1f} s; "
              f"scoring {rate.score_s_per_mvoxel:.3f} s per Mvoxel; reading {1000 * rate.read_s_per_slice:.1f} ms per slice")
        print(format_estimate(costs, gpus_per_unit=0))
        with tempfile.TemporaryDirectory(prefix="tfrobseg-cost-") as out:
            run_grid("crossval", settings, out, models=[model], losses=[loss], folds=[0], jobs=1, progress=False,
                     quiet=True)
            measured = [UnitRecord.read(u.directory(out)) for u in units]
        width = max(len(u.uid) for u in units)
        print(f"{'unit':<{width}} {'train s est/meas':>17} {'attack s est/meas':>18} {'total s est/meas':>17} "
              f"{'meas/est':>8}")
        for cost, record in zip(costs, measured):
            seconds = record.seconds
            ratio = seconds["total"] / cost.seconds
            ratios.append(ratio)
            print(f"{cost.unit.uid:<{width}} {cost.train_s:8.1f}/{seconds['train']:<8.1f} "
                  f"{cost.attack_s:9.1f}/{seconds['attack_and_metrics']:<8.1f} "
                  f"{cost.seconds:8.1f}/{seconds['total']:<8.1f} {ratio:8.2f}")
    print(f"\nmeasured / estimated over {len(ratios)} unit(s): {min(ratios):.2f}-{max(ratios):.2f}")
    return ratios


if __name__ == "__main__":
    main()
