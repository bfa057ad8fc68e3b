"""Benchmark: seconds per training step of each defense (its defaults) against ordinary training, on one machine.

The tfrobseg U-Net (filters 8…128, ``--size`` 48 px, batch 4, float32, Adam, loss ``bce_dice``) trained on one
fixed random batch along these paths, all built and traced first, then timed over ``--rounds`` interleaved
rounds of ``--steps`` ``train_on_batch`` calls each (a new order every round, so that a change of load on a
shared machine falls on every path alike):

  baseline                — the network compiled as it is: Keras' own ``train_step``;
  adversarial … trades    — :class:`tfrobseg.defenses.DefendedModel` of each defense with its defaults;
  distillation (teacher)  — the teacher's step (the compiled loss at T);
  distillation (student)  — the student's step (the teacher's forward pass, then the soft-Dice loss at T);
  uniform_noise, gaussian_noise — Liu et al.'s two updates per batch.

XLA off, then on (``--xla off,on``), each from a cleared session. Per path: the median over rounds of the wall
and CPU seconds per step (CPU counts all the process's threads), and the ratios to the baseline of the same
run. TensorFlow's thread pools at ``--threads`` (1 by default, as in a unit's worker process). What a step
does, in network passes (forward + backward), is in docs/defenses.md; distillation trains two networks, so its
whole cost is the teacher's run plus the student's.

Measured 2026-11-24 on the 2-core development machine, shared with other jobs (load average 2-3.5), defaults
(48 px, batch 4, 5 rounds x 10 steps, 1 thread), TensorFlow 2.21, Keras 3.15:

    path                      XLA off s/step CPU s/step x base  x CPU   XLA on s/step CPU s/step x base  x CPU
    baseline                          0.0504     0.0462   1.00   1.00          0.0411     0.0401   1.00   1.00
    adversarial                       0.1096     0.1066   2.18   2.31          0.0862     0.0847   2.10   2.11
    fast_adversarial                  0.1124     0.1110   2.23   2.40          0.0947     0.0928   2.31   2.31
    pgd_adversarial                   0.2323     0.2285   4.61   4.94          0.1835     0.1804   4.47   4.49
    trades                            0.2971     0.2915   5.90   6.30          0.2337     0.2300   5.69   5.73
    distillation (teacher)            0.0495     0.0491   0.98   1.06          0.0468     0.0462   1.14   1.15
    distillation (student)            0.0665     0.0639   1.32   1.38          0.0562     0.0557   1.37   1.39
    uniform_noise                     0.0919     0.0903   1.82   1.95          0.0840     0.0834   2.04   2.08
    gaussian_noise                    0.0870     0.0854   1.73   1.85          0.0821     0.0779   2.00   1.94

Read: a step costs about what its passes of the network predict (docs/defenses.md): ~2x for one attack pass
and two training passes (FGSM, fast FGSM) or two updates (noise), ~4.5-5x for PGD's 7 attack steps, ~6x for
TRADES' 10, ~1x for the teacher and ~1.35x for the student (the teacher's forward pass). The spread of this
shared machine is large: an earlier run of 3 rounds x 5 steps gave (wall, XLA off / on) adversarial 2.37 / 2.09,
fast_adversarial 2.41 / 2.10, pgd_adversarial 4.85 / 4.03, trades 6.45 / 4.52, teacher 0.92 / 0.80, student
1.28 / 0.96, uniform_noise 1.87 / 2.63, gaussian_noise 1.89 / 1.78 (the two noise defenses cost the same).
Before the attack steps were unrolled, a tf.while_loop made PGD 11.6x and TRADES 16.4x with XLA on this CPU.

    python benchmarks/defenses.py
    python benchmarks/defenses.py --xla off --rounds 3 --steps 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

from tfrobseg import models
from tfrobseg.defenses import DEFENSE_NAMES, DefendedModel, resolve_defense
from tfrobseg.losses import get_loss

FILTERS = (8, 16, 32, 64, 128)
#: (label, defense name or None, role) of every timed path, in the table's order.
PATHS: tuple[tuple[str, str | None, str], ...] = (
    ("baseline", None, "model"),
    *((name, name, "model") for name in DEFENSE_NAMES if name not in ("distillation", "uniform_noise",
                                                                        "gaussian_noise")),
    ("distillation (teacher)", "distillation", "teacher"),
    ("distillation (student)", "distillation", "student"),
    ("uniform_noise", "uniform_noise", "model"),
    ("gaussian_noise", "gaussian_noise", "model"),
)


def build_paths(size: int, batch: int, loss: str, xla: bool, seed: int = 0) -> dict[str, keras.Model]:
    """Every path's compiled model, then each traced (and compiled by XLA) by two warm-up steps.

    The global seed is set once, before any model: setting it again would make TensorFlow trace the
    functions already traced once more (the seed is part of their cache key), inside the timed rounds."""
    keras.utils.set_random_seed(seed)
    compiled: dict[str, keras.Model] = {}
    teacher = None
    for label, name, role in PATHS:
        network = models.build_model("unet", (size, size, 1), filters=FILTERS)
        model = network if name is None else DefendedModel.wrap(network, resolve_defense(name), role=role,
                                                                 teacher=teacher if role == "student" else None,
                                                                 seed=seed)
        model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=get_loss(loss), jit_compile=xla)
        compiled[label] = model
        teacher = model if role == "teacher" else teacher
    x, y = data(size, batch)
    for label, model in compiled.items():
        t0 = time.perf_counter()
        for _ in range(2):
            model.train_on_batch(x, y)
        print(f"  traced {label:<24} {time.perf_counter() - t0:6.1f} s", flush=True)
    return compiled


def data(size: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """One fixed batch: z-scored noise images and disk masks (the step's cost does not depend on the values)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, size, size, 1)).astype(np.float32)
    yy, xx = np.mgrid[:size, :size]
    disk = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 5) ** 2).astype(np.float32)
    return x, np.broadcast_to(disk[None, ..., None], x.shape).copy()


def time_paths(compiled: dict[str, keras.Model], size: int, batch: int, rounds: int,
               steps: int) -> dict[str, tuple[float, float]]:
    """Median wall and CPU seconds per step of every path over interleaved rounds."""
    x, y = data(size, batch)
    labels = list(compiled)
    wall: dict[str, list[float]] = {label: [] for label in labels}
    cpu: dict[str, list[float]] = {label: [] for label in labels}
    for r in range(rounds):
        for label in labels[r % len(labels):] + labels[:r % len(labels)]:
            model = compiled[label]
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(steps):
                model.train_on_batch(x, y)
            wall[label].append((time.perf_counter() - t0) / steps)
            cpu[label].append((time.process_time() - c0) / steps)
    return {label: (statistics.median(wall[label]), statistics.median(cpu[label])) for label in labels}


def main(argv: list[str] | None = None) -> dict[bool, dict[str, tuple[float, float]]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=48, help="image size in pixels (default 48, the preset's)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--loss", default="bce_dice")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (default 5)")
    parser.add_argument("--steps", type=int, default=10, help="training steps per path per round (default 10)")
    parser.add_argument("--xla", default="off,on", help="comma-separated XLA settings to measure (off, on)")
    parser.add_argument("--threads", type=int, default=1, help="TensorFlow intra/inter-op threads (0: its default)")
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.xla.split(",")]
    if args.rounds < 1 or args.steps < 1 or not modes or set(modes) - {"off", "on"}:
        parser.error("--rounds and --steps must be >= 1 and --xla a list of off / on")
    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    keras.mixed_precision.set_global_policy("float32")
    devices = ", ".join(d.name for d in tf.config.list_logical_devices()) or "cpu"
    print(f"unet filters {FILTERS}, {args.size} px, batch {args.batch}, loss {args.loss}, float32, "
          f"{args.rounds} rounds x {args.steps} steps, threads {args.threads or 'default'}, devices {devices}, "
          f"tf {tf.__version__}, keras {keras.__version__}, load average {os.getloadavg()[0]:.1f}", flush=True)

    results: dict[bool, dict[str, tuple[float, float]]] = {}
    for mode in modes:
        xla = mode == "on"
        keras.backend.clear_session()
        print(f"XLA {mode}: building and tracing", flush=True)
        results[xla] = time_paths(build_paths(args.size, args.batch, args.loss, xla), args.size, args.batch,
                                  args.rounds, args.steps)

    header = f"{'path':<24}"
    for xla in results:
        tag = "XLA on" if xla else "XLA off"
        header += f" {tag + ' s/step':>15} {'CPU s/step':>10} {'x base':>6} {'x CPU':>6}"
    print(header)
    for label, _, _ in PATHS:
        line = f"{label:<24}"
        for per_path in results.values():
            (wall, cpu), (base_wall, base_cpu) = per_path[label], per_path["baseline"]
            line += f" {wall:15.4f} {cpu:10.4f} {wall / base_wall:6.2f} {cpu / base_cpu:6.2f}"
        print(line)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    return results


if __name__ == "__main__":
    main()
