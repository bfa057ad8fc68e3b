"""Benchmark: every attack of the registry on one small trained U-Net: gradients, wall time, Dice reached.

Trains a small U-Net (filters 8-16-32-64) for 200 steps on synthetic images (a bright ellipse on
smooth noise, the ellipse is the mask) so that it segments, then runs each attack of
:data:`tfrobseg.attacks.ATTACKS` (whatever it holds: the script iterates over the registry) through
:func:`tfrobseg.attacks.attack_dataset` on held-out images over a small ε grid, and prints in one run,
per attack:

  grads/ε/img — input gradients per ε per image (:func:`tfrobseg.attacks.gradient.gradient_count`
                over the timed runs, divided by runs × images × ε; FGSM shares one gradient across the grid);
  first s     — the first run, compilation included;
  wall s      — the median of ``--repeats`` further runs (compiled; the attacks take turns, so that load
                from other processes hits them alike), and ×FGSM, its ratio to FGSM's;
  cpu s       — the same runs' median CPU time of this process (all its threads), and its ratio to
                FGSM's: on a machine shared with other processes the wall time includes waiting for a core;
  Dice        — the mean per-image Dice reached at each ε (threshold 0.5, empty vs empty = 1).

Every attack runs with its own defaults (``--steps`` sets the iterations of those that take ``steps``,
as in ``experiments/attack.py``), the attack loss BCE, seed 0. A last row ``ensemble`` takes per image
and ε the lowest Dice of the members of :data:`tfrobseg.attacks.ensemble.DEFAULT_MEMBERS` that were
run; its cost is theirs summed.

    python benchmarks/attacks.py                                  # 48 px, eps 0.05,0.1,0.3, attack defaults
    python benchmarks/attacks.py --attacks fgsm,pgd,segpgd --epsilons 0.1 --size 64
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

from tfrobseg.attacks import ATTACKS, attack_dataset, predict
from tfrobseg.attacks.budget import batch_dice
from tfrobseg.attacks.ensemble import DEFAULT_MEMBERS, ENSEMBLE
from tfrobseg.attacks.gradient import gradient_count
from tfrobseg.models import build_model

FILTERS = (8, 16, 32, 64)


def synthetic(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` z-scored images ``(n, size, size, 1)``: a brighter ellipse (the mask) on smooth noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    images, masks = [], []
    for _ in range(n):
        cy, cx = rng.uniform(0.3, 0.7, 2)
        ry, rx = rng.uniform(0.1, 0.25, 2)
        mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        noise = rng.normal(size=(size + 4, size + 4))
        smooth = sum(noise[i:i + size, j:j + size] for i in range(5) for j in range(5)) / 5  # 5x5 box, std 1
        image = 0.8 * mask + 0.5 * smooth + 0.3 * rng.normal(size=(size, size))
        images.append((image - image.mean()) / image.std())
        masks.append(mask)
    return (np.stack(images)[..., None].astype(np.float32), np.stack(masks)[..., None].astype(np.float32))


def train(args: argparse.Namespace, x: np.ndarray, y: np.ndarray) -> keras.Model:
    keras.utils.set_random_seed(args.seed)
    model = build_model("unet", (args.size, args.size, 1), filters=FILTERS)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="binary_crossentropy")
    batches = len(x) // args.batch
    for step in range(args.train_steps):
        b = step % batches
        model.train_on_batch(x[b * args.batch:(b + 1) * args.batch], y[b * args.batch:(b + 1) * args.batch])
    return model


def attack_runner(model: keras.Model, name: str, x: np.ndarray, y: np.ndarray,
                  args: argparse.Namespace) -> tuple[Callable[[], np.ndarray], dict]:
    """A function running attack ``name`` once on ``x`` (returns the ``(E, images)`` Dice), and its options."""
    options = {"steps": args.steps} if args.steps and "steps" in ATTACKS[name].options else {}
    if "jit_compile" in ATTACKS[name].options:
        options["jit_compile"] = not args.no_jit
    dataset = tf.data.Dataset.from_tensor_slices({"image": x, "mask": y}).batch(args.batch)

    def once() -> np.ndarray:
        # attack_dataset yields slice by slice, the ε of a slice in order.
        preds = [r["prediction"] for r in attack_dataset(model, dataset, args.epsilons, attack=name, loss="bce",
                                                          batch_size=args.batch, **options)]
        preds = np.stack(preds).reshape(len(x), len(args.epsilons), *x.shape[1:]).swapaxes(0, 1)
        return np.stack([batch_dice(tf.constant(p), tf.constant(y)).numpy() for p in preds])

    return once, options


def measure(runners: dict[str, Callable[[], np.ndarray]], args: argparse.Namespace, n_images: int) -> dict[str, dict]:
    """Per attack: the first run (compilation included), then ``args.repeats`` rounds over all attacks in turn
    (so that load from other processes hits them alike): median wall time, gradients per ε per image, Dice."""
    results: dict[str, dict] = {}
    for name, once in runners.items():
        start = time.perf_counter()
        once()
        results[name] = {"first": time.perf_counter() - start, "walls": [], "cpus": [], "grads": 0}
    for _ in range(args.repeats):
        for name, once in runners.items():
            grads, start, cpu = gradient_count(), time.perf_counter(), time.process_time()
            results[name]["dice"] = once()
            results[name]["walls"].append(time.perf_counter() - start)
            results[name]["cpus"].append(time.process_time() - cpu)
            results[name]["grads"] += gradient_count() - grads
    for r in results.values():
        r["wall"], r["cpu"] = statistics.median(r.pop("walls")), statistics.median(r.pop("cpus"))
        r["grads"] /= args.repeats * n_images * len(args.epsilons)
    return results


def main(argv: list[str] | None = None) -> dict[str, dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=48, help="image side in pixels (a multiple of 8)")
    parser.add_argument("--train-steps", type=int, default=200, help="training steps (batches of --batch)")
    parser.add_argument("--epsilons", default="0.05,0.1,0.3", help="comma-separated ε in z-score units, > 0")
    parser.add_argument("--attacks", default="all", help="comma-separated names of ATTACKS (default: all)")
    parser.add_argument("--steps", type=int, default=None,
                        help="iterations of the attacks that take steps (default: each attack's own)")
    parser.add_argument("--images", type=int, default=8, help="held-out images attacked (a multiple of --batch)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per attack (the median is printed)")
    parser.add_argument("--no-jit", action="store_true", help="graph mode instead of XLA")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    names = list(ATTACKS) if args.attacks == "all" else [a.strip() for a in args.attacks.split(",")]
    unknown = [a for a in names if a not in ATTACKS]
    if unknown:
        parser.error(f"--attacks: unknown {', '.join(unknown)}; ATTACKS has {', '.join(ATTACKS)}")
    if "fgsm" not in names:
        names.insert(0, "fgsm")  # the reference of the ×FGSM column
    args.epsilons = [float(e) for e in args.epsilons.split(",")]
    if min(args.epsilons) <= 0:
        parser.error("--epsilons must be > 0 (the clean Dice is printed anyway)")
    if args.size % 8 or args.batch < 1 or args.images % args.batch or args.repeats < 1:
        parser.error("--size must be a multiple of 8, --images a multiple of --batch, --repeats >= 1")

    t0 = time.perf_counter()
    x, y = synthetic(8 * args.batch + args.images, args.size, args.seed)
    x_train, y_train, x_eval, y_eval = x[:-args.images], y[:-args.images], x[-args.images:], y[-args.images:]
    model = train(args, x_train, y_train)
    t_train = time.perf_counter() - t0
    clean = predict(model, tf.constant(x_eval), jit_compile=not args.no_jit).numpy()
    clean_dice = float(batch_dice(tf.constant(clean), tf.constant(y_eval)).numpy().mean())
    runners = {name: attack_runner(model, name, x_eval, y_eval, args) for name in names}
    results = measure({name: once for name, (once, _) in runners.items()}, args, len(x_eval))
    for name, (_, options) in runners.items():
        results[name]["options"] = options
    members = [m for m in DEFAULT_MEMBERS if m in results]
    if len(members) > 1:
        results[ENSEMBLE] = {key: sum(results[m][key] for m in members) for key in ("first", "wall", "cpu", "grads")}
        results[ENSEMBLE]["dice"] = np.min([results[m]["dice"] for m in members], axis=0)
        results[ENSEMBLE]["options"] = {"members": members}

    print(f"unet filters={FILTERS} params={model.count_params():,} input={args.size}x{args.size} "
          f"trained {args.train_steps} steps on {len(x_train)} synthetic images ({t_train:.0f} s); attacked "
          f"{args.images} held-out images in batches of {args.batch}; attack loss bce; jit={not args.no_jit} "
          f"repeats={args.repeats} tf={tf.__version__} "
          f"device={'GPU' if tf.config.list_physical_devices('GPU') else 'CPU'} threads={os.cpu_count()}")
    print(f"clean Dice (mean over images): {clean_dice:.3f}")
    eps_cols = "  ".join(f"{'ε=' + format(e, 'g'):>7}" for e in args.epsilons)
    print(f"{'attack':<16} {'grads/ε/img':>11} {'first s':>8} {'wall s':>7} {'×FGSM':>6} {'cpu s':>6} {'×FGSM':>6}  "
          f"Dice: {eps_cols}  options")
    base = results["fgsm"]
    for name, r in results.items():
        dice = "  ".join(f"{d:7.3f}" for d in r["dice"].mean(axis=1))
        options = ", ".join(f"{k}={v}" for k, v in r["options"].items() if k != "jit_compile") or "defaults"
        print(f"{name:<16} {r['grads']:11.2f} {r['first']:8.2f} {r['wall']:7.2f} {r['wall'] / base['wall']:6.1f} "
              f"{r['cpu']:6.2f} {r['cpu'] / base['cpu']:6.1f}        {dice}  {options}")
    print(f"total {time.perf_counter() - t0:.0f} s")
    return results


if __name__ == "__main__":
    main()
