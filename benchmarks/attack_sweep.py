"""Benchmark: FGSM over the study's 10-ε grid, sweep vs per-ε loop vs the arithmetic floor.

Prints, for one model on 256×256 batches, measured in one run (median of ``--repeats``):

  (a) loop   — what generic toolkits do: for every ε recompute the input gradient, then predict;
  (b) sweep  — :func:`tfrobseg.attacks.fgsm_sweep`: one gradient, then all ε forward passes batched;
  (c) floor  — one gradient plus ten forward passes of the batch, timed alone (inputs prebuilt);

and the ratios (b)/(c) (target ≤ 1.15: the sweep costs what its arithmetic costs) and (a)/(b)
(≈ 2.5 on a CPU, where an input gradient costs about two forward passes). Everything is compiled
(warm-up) before timing.

    python benchmarks/attack_sweep.py                       # U-Net, default filters, batch 4
    python benchmarks/attack_sweep.py --model recurrent_unet --repeats 5
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

from tfrobseg.attacks import fgsm, fgsm_sweep, gradient_sign, predict

STUDY_GRID = tuple(round(0.1 * k, 1) for k in range(1, 11))


def build(name: str, size: int, filters: tuple[int, ...]) -> keras.Model:
    from tfrobseg.models import build_model

    return build_model(name, (size, size, 1), filters=filters)


def batch(size: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """z-scored noise images with a centred disk as the mask (content does not change the cost)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    mask = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2 <= (size / 6) ** 2).astype(np.float32)
    x = rng.normal(size=(n, size, size, 1)).astype(np.float32)
    return x, np.broadcast_to(mask[None, ..., None], x.shape).copy()


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="unet", help="tfrobseg.models name (default unet)")
    parser.add_argument("--filters", default="16,32,64,128,256", help="comma-separated filters per level")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--loss", default="bce")
    parser.add_argument("--forward-batch", type=int, default=None,
                        help="images per forward call in the sweep (default: fgsm_sweep's default)")
    parser.add_argument("--no-jit", action="store_true", help="graph mode instead of XLA")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.batch < 1:
        parser.error("--repeats and --batch must be >= 1")

    keras.utils.set_random_seed(args.seed)
    filters = tuple(int(f) for f in args.filters.split(","))
    model = build(args.model, args.size, filters)
    x, y = batch(args.size, args.batch, args.seed)
    jit = not args.no_jit
    eps = list(STUDY_GRID)

    def loop():
        for e in eps:
            predict(model, fgsm(model, x, y, e, loss=args.loss, jit_compile=jit), jit_compile=jit).numpy()

    def sweep():
        fgsm_sweep(model, x, y, eps, loss=args.loss, jit_compile=jit, forward_batch=args.forward_batch).numpy()

    sign, _ = gradient_sign(model, x, y, loss=args.loss, jit_compile=jit)
    inputs = [tf.constant(x + e * sign.numpy()) for e in eps]

    def floor():
        gradient_sign(model, x, y, loss=args.loss, jit_compile=jit)[0].numpy()
        for adv in inputs:
            predict(model, adv, jit_compile=jit).numpy()

    for fn in (loop, sweep, floor):  # compile everything before timing
        fn()
    # Interleave the repeats so that load from other processes hits all three alike.
    times: dict[str, list[float]] = {"loop": [], "sweep": [], "floor": []}
    for _ in range(args.repeats):
        for name, fn in (("loop", loop), ("sweep", sweep), ("floor", floor)):
            times[name].append(seconds(fn))
    t = {name: statistics.median(v) for name, v in times.items()}

    print(f"model={args.model} filters={filters} params={model.count_params():,} input={args.size}x{args.size} "
          f"batch={args.batch} forward_batch={args.forward_batch} eps={len(eps)} loss={args.loss} jit={jit} repeats={args.repeats} "
          f"tf={tf.__version__} device={'GPU' if tf.config.list_physical_devices('GPU') else 'CPU'}")
    print(f"(a) loop, gradient per eps : {t['loop']:8.3f} s")
    print(f"(b) fgsm_sweep             : {t['sweep']:8.3f} s")
    print(f"(c) floor, 1 grad + {len(eps)} fwd  : {t['floor']:8.3f} s")
    print(f"(b)/(c) = {t['sweep'] / t['floor']:.3f}   (target <= 1.15)")
    print(f"(a)/(b) = {t['loop'] / t['sweep']:.3f}   (about 2.5 expected on CPU)")
    return t


if __name__ == "__main__":
    main()
