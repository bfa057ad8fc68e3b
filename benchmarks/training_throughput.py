"""Benchmark: training throughput of a unit's fit loop against a plain ``model.fit``, on a 2-core CPU.

One unit of the built-in preset (Recurrent U-Net, filters 8…128, the preset's image size, batch 4, Adam, XLA off,
TensorFlow's thread pools at 1 thread as in a unit's worker process) trained for ``--epochs`` epochs
on the same slices along these paths, each from a cleared session and the same seed:

  plain        — ``model.fit`` on ``Dataset.from_tensor_slices((x, y)).shuffle(n).batch(4)`` with the
                 validation slices the same way: the floor our loop is held against;
  plain+build  — the same, with ``model.optimizer.build(model.trainable_variables)`` before ``fit``;
  ours         — :func:`tfrobseg.training.train_model` (plateau LR, early stopping, ``history.csv``,
                 non-finite stop) on the unit's datasets as :func:`tfrobseg.experiment.runner.unit_datasets`
                 builds them (slices read and resized once, into memory);
  ours-old     — the same on the datasets streamed from the TFRecords, every slice parsed and resized
                 from 256 px again in every epoch (``make_dataset(cache=False)``, the runner before issue 14).

First, the data alone: what making each path's datasets costs, and one epoch of its training and
validation batches without a model. Then per path, over ``--repeats`` interleaved runs: the first
epoch (tracing the train and test steps, and the epoch itself), the steady epoch and its CPU seconds
(medians of the later epochs, validation included; CPU counts all the process's threads), training
slices per second in the steady state and the ratios to plain (wall, CPU). On a machine shared with
other jobs, the wall times follow their load: the CPU seconds are the steadier measure. Keras builds
the optimizer's variables inside the first trace of the train step when no distribution strategy is
set, and then traces the step a second time; plain+build measures what building them first saves.

Measured 2026-11-23 after issue 14 on the 2-core development machine (load average 0.8-1.3), the
built-in cohort's crossval fold 0 (183 training, 50 validation slices at the preset's 48 px),
``--data data/builtin --epochs 6 --repeats 1``:

    data only       make    epoch CPU/epoch   (training + validation batches, no model)
    plain         1.32 s    21 ms     23 ms
    ours          1.22 s    75 ms     81 ms
    ours-old      0.21 s   419 ms    433 ms

    path         first epoch steady epoch CPU/epoch slices/s x plain x plain CPU
    plain             39.1 s       5.28 s    5.21 s     34.7    1.00        1.00
    plain+build       22.9 s       5.67 s    5.33 s     32.2    0.93        0.98
    ours              23.6 s       5.67 s    5.40 s     32.2    0.93        0.96
    ours-old          22.8 s       5.35 s    5.47 s     34.2    0.99        0.95

Read: in the steady state our loop runs at 0.93 x a plain ``fit`` (0.96 x in CPU seconds), within the
spread of repeated runs (0.83-1.04 x and 0.95-1.07 x in an earlier measurement at 64 px, two repeats).
``train_model`` builds the optimizer before ``fit``, so its first epoch traces the train step once
(23.6 s against the plain fit's 39.1 s). Caching takes the input pipeline from 433 to 81 ms of CPU per
epoch for ~1 s more once.

    python benchmarks/training_throughput.py                      # built-in cohort prepared in a temp folder
    python benchmarks/training_throughput.py --data data/builtin --epochs 20
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

import tfrobseg.training.fit as fit_module
from tfrobseg import models
from tfrobseg.dataset.manifest import Manifest
from tfrobseg.dataset.pipeline import load_slices, make_dataset, to_xy
from tfrobseg.experiment import runner
from tfrobseg.experiment.cli import build_parser
from tfrobseg.experiment.settings import Settings, resolve_settings
from tfrobseg.experiment.units import Unit, UnitPatients, unit_patients
from tfrobseg.losses import get_loss
from tfrobseg.training import set_seed, train_model


class EpochTimes(keras.callbacks.Callback):
    """Wall and CPU seconds (all the process's threads, tf.data's included) from each epoch's start to its
    end, validation included: the span ``history.csv`` records."""

    def __init__(self) -> None:
        super().__init__()
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self._t0 = self._c0 = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._t0, self._c0 = time.perf_counter(), time.process_time()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.wall.append(time.perf_counter() - self._t0)
        self.cpu.append(time.process_time() - self._c0)


@contextlib.contextmanager
def timed_protocol(times: EpochTimes) -> Iterator[None]:
    """:func:`train_model` with ``times`` after its protocol callbacks (the only change to its loop)."""
    original = fit_module.protocol_callbacks
    fit_module.protocol_callbacks = lambda config, monitor: [*original(config, monitor), times]
    try:
        yield
    finally:
        fit_module.protocol_callbacks = original


def build(settings: Settings) -> keras.Model:
    size = settings.image_size
    return models.build_model("recurrent_unet", (size, size, 1), filters=settings.filters)


def plain_data(settings: Settings, patients: UnitPatients) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """The unit's training and validation slices as NumPy arrays, in the plainest ``tf.data`` pipelines."""
    def xy(ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        slices = load_slices(settings.data_dir, ids, image_size=settings.image_size)
        return slices["image"], slices["mask"].astype(np.float32)

    (x, y), val = xy(patients.train), xy(patients.val)
    cfg = settings.train
    train = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=cfg.seed).batch(cfg.batch_size)
    return train, tf.data.Dataset.from_tensor_slices(val).batch(cfg.batch_size)


def plain(settings: Settings, patients: UnitPatients, loss: str, build_optimizer: bool, times: EpochTimes) -> None:
    """A plain ``model.fit`` on :func:`plain_data`."""
    train, val = plain_data(settings, patients)
    model = build(settings)
    model.compile(optimizer=keras.optimizers.Adam(settings.train.learning_rate), loss=get_loss(loss),
                  jit_compile=False)
    if build_optimizer:
        model.optimizer.build(model.trainable_variables)
    model.fit(train, validation_data=val, epochs=settings.train.max_epochs, callbacks=[times], verbose=0)


def unit_data(settings: Settings, patients: UnitPatients, cached: bool) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    """The unit's training and validation datasets: the runner's, or streamed as before issue 14."""
    if cached:
        data = runner.unit_datasets(settings, patients)
        return data.train, data.val

    def stream(ids: list[str], shuffle: bool) -> tf.data.Dataset:
        return make_dataset(settings.data_dir, ids, batch_size=settings.train.batch_size, shuffle=shuffle,
                            seed=settings.train.seed, image_size=settings.image_size).map(to_xy)

    return stream(patients.train, True), stream(patients.val, False)


def ours(settings: Settings, patients: UnitPatients, loss: str, cached: bool, out_dir: Path,
         times: EpochTimes) -> None:
    """:func:`train_model` on the unit's datasets."""
    train, val = unit_data(settings, patients, cached)
    with timed_protocol(times):
        train_model(lambda: build(settings), get_loss(loss), train, val, config=settings.train, out_dir=out_dir,
                    progress=False)


def data_only(settings: Settings, patients: UnitPatients, epochs: int = 5) -> None:
    """Print what making each path's datasets costs, and one epoch of them without a model (median)."""
    makers = {"plain": lambda: plain_data(settings, patients), "ours": lambda: unit_data(settings, patients, True),
              "ours-old": lambda: unit_data(settings, patients, False)}
    print(f"{'data only':<12} {'make':>7} {'epoch':>8} {'CPU/epoch':>9}   (training + validation batches, no model)")
    for name, make in makers.items():
        t0 = time.perf_counter()
        datasets = make()
        made = time.perf_counter() - t0
        wall, cpu = [], []
        for _ in range(epochs + 1):  # the first epoch starts tf.data's threads
            t0, c0 = time.perf_counter(), time.process_time()
            for ds in datasets:
                for _ in ds:
                    pass
            wall.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        print(f"{name:<12} {made:5.2f} s {1000 * statistics.median(wall[1:]):5.0f} ms "
              f"{1000 * statistics.median(cpu[1:]):6.0f} ms")


PATHS = ("plain", "plain+build", "ours", "ours-old")


def main(argv: list[str] | None = None) -> dict[str, list[EpochTimes]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None,
                        help="a prepared folder (default: the built-in cohort, prepared in a temporary folder)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs per run (default 10; the preset runs 40)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of every path, interleaved (default 2)")
    parser.add_argument("--fold", type=int, default=0, help="the crossval fold whose unit is trained")
    parser.add_argument("--loss", default="bce")
    parser.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated subset of {', '.join(PATHS)}")
    args = parser.parse_args(argv)
    if args.epochs < 2 or args.repeats < 1:
        parser.error("--epochs must be >= 2 (the first epoch is reported apart) and --repeats >= 1")
    paths = args.paths.split(",")
    unknown = sorted(set(paths) - set(PATHS))
    if unknown:
        parser.error(f"--paths: unknown {unknown}")

    # As a unit's worker process (tfrobseg.experiment.grid): one thread per pool, set before any op runs.
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data
        if data_dir is None:
            from tfrobseg.dataset.synthetic import prepare_builtin

            t0 = time.perf_counter()
            data_dir = prepare_builtin(Path(tmp) / "builtin")
            print(f"prepared the built-in cohort in {time.perf_counter() - t0:.0f} s")
        options = build_parser("crossval").parse_args(["--max-epochs", str(args.epochs), "--no-xla", "--threads", "1"])
        settings, _ = resolve_settings(options, Path(data_dir), "builtin", gpus=0)
        unit = Unit("crossval", "recurrent_unet", args.loss, args.fold)
        manifest = Manifest.read(data_dir)
        patients = unit_patients(unit, manifest, None)
        n_train = sum(manifest.patients[p].n_slices for p in patients.train)
        n_val = sum(manifest.patients[p].n_slices for p in patients.val)
        print(f"unit {unit.uid}: {n_train} training, {n_val} validation slices; {settings.image_size} px, "
              f"filters {settings.filters}, batch {settings.train.batch_size}, {args.epochs} epochs x "
              f"{args.repeats} runs per path, xla {settings.train.xla}, 1 thread, tf {tf.__version__}, "
              f"load average {os.getloadavg()[0]:.1f}")
        data_only(settings, patients)

        runs: dict[str, list[EpochTimes]] = {path: [] for path in paths}
        for r in range(args.repeats):
            for path in paths[r % len(paths):] + paths[:r % len(paths)]:  # a new order each round
                keras.backend.clear_session()
                set_seed(settings.train.seed)
                times = EpochTimes()
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=".*(ran out of data|shuffle=True)", category=UserWarning)
                    if path.startswith("plain"):
                        plain(settings, patients, args.loss, path == "plain+build", times)
                    else:
                        ours(settings, patients, args.loss, path == "ours", Path(tmp) / f"{path}{r}", times)
                runs[path].append(times)

    first = {p: statistics.median(t.wall[0] for t in ts) for p, ts in runs.items()}
    wall = {p: statistics.median(w for t in ts for w in t.wall[1:]) for p, ts in runs.items()}
    cpu = {p: statistics.median(c for t in ts for c in t.cpu[1:]) for p, ts in runs.items()}
    print(f"{'path':<12} {'first epoch':>11} {'steady epoch':>12} {'CPU/epoch':>9} {'slices/s':>8} "
          f"{'x plain':>7} {'x plain CPU':>11}")
    for p in runs:
        ratio = f"{wall['plain'] / wall[p]:7.2f} {cpu['plain'] / cpu[p]:11.2f}" if "plain" in runs else ""
        print(f"{p:<12} {first[p]:9.1f} s {wall[p]:10.2f} s {cpu[p]:7.2f} s {n_train / wall[p]:8.1f} {ratio}")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    return runs


if __name__ == "__main__":
    main()
