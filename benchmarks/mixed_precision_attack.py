"""Benchmark: FGSM on a ``mixed_float16`` model, attacked as is (float16) vs through a float32 copy.

Trains a small U-Net under ``mixed_float16`` on the built-in synthetic cohort (it must segment a
bit: the input gradients of a trained model are what the study attacks), then runs
:func:`tfrobseg.attacks.attack_dataset` with FGSM (Apostolidis et al. eq. 1) over the study's ε grid
on the held-out patients twice, with the same weights:

  f16 — ``attack_precision="model"``: gradient and predictions in float16 (loss scale 2^15);
  f32 — ``attack_precision="float32"``: gradient and predictions by :func:`tfrobseg.attacks.float32_copy`;
  mix — the f32 gradient sign applied, the attacked image predicted by the float16 model (this
        separates the effect of the sign from that of the forward pass).

Prints, measured in one run: the agreement of the f16 and f32 signs over all evaluation pixels
(and per patient), the share of zero signs, and per ε the mean 3D Dice per patient (slices stacked
in order, threshold 0.5, tfrobseg.metrics.dice) of each run with the mean and max |Δ Dice| over
patients against f16.

    python benchmarks/mixed_precision_attack.py                      # 256², filters 8-16-32-64
    python benchmarks/mixed_precision_attack.py --size 128 --loss dice
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from collections import defaultdict

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

from tfrobseg.attacks import attack_dataset, float32_copy, predict
from tfrobseg.dataset.manifest import Manifest
from tfrobseg.dataset.pipeline import make_dataset, to_xy
from tfrobseg.dataset.synthetic import prepare_builtin
from tfrobseg.losses import get_loss
from tfrobseg.metrics import dice
from tfrobseg.models import build_model

STUDY_GRID = tuple(round(0.1 * k, 1) for k in range(11))  # ε = 0 is the clean prediction


def train_mixed(args: argparse.Namespace, data: str, train_ids: list[str]) -> keras.Model:
    """A U-Net built and fitted under ``mixed_float16``; the global policy is restored afterwards."""
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(args.seed)
        model = build_model(args.model, (args.size, args.size, 1), filters=args.filters)
        model.compile(optimizer=keras.optimizers.Adam(args.lr), loss=get_loss(args.loss), jit_compile=True)
        train = make_dataset(data, train_ids, batch_size=args.batch, shuffle=True, seed=args.seed,
                             image_size=args.size).map(to_xy)
        with warnings.catch_warnings():
            # make_dataset is shuffled and of unknown length: Keras warns about both every run.
            warnings.simplefilter("ignore", UserWarning)
            model.fit(train, epochs=args.epochs, verbose=0)
    finally:
        keras.mixed_precision.set_global_policy(policy)
    return model


def run(model: keras.Model, dataset: tf.data.Dataset, args: argparse.Namespace, precision: str) -> dict:
    """Thresholded predictions ``{(patient, slice): (E, H, W)}``, signs, images and masks of one attack run."""
    preds, signs, images = defaultdict(dict), {}, {}
    for r in attack_dataset(model, dataset, STUDY_GRID, loss=get_loss(args.loss), batch_size=args.batch,
                            return_images=True, attack_precision=precision):
        key = (r["patient_id"], r["slice_index"])
        preds[key][r["epsilon"]] = r["prediction"][..., 0] > 0.5
        images[key] = r["image"]
        if r["epsilon"] == STUDY_GRID[1]:
            # No clip: adversarial − image is ε · sign exactly in sign.
            signs[key] = np.sign(r["adversarial"] - r["image"])
    stacked = {key: np.stack([p[e] for e in STUDY_GRID]) for key, p in preds.items()}
    return {"pred": stacked, "sign": signs, "image": images}


def mixed_forward(model16: keras.Model, f32: dict, batch: int) -> dict:
    """Predictions of the float16 model on the images attacked with the float32 sign."""
    keys = sorted(f32["sign"])
    out = {}
    for start in range(0, len(keys), batch):
        chunk = keys[start:start + batch]
        x = np.stack([f32["image"][k] for k in chunk])
        s = np.stack([f32["sign"][k] for k in chunk])
        adv = np.concatenate([x + np.float32(e) * s for e in STUDY_GRID])
        p = predict(model16, adv).numpy()[..., 0] > 0.5
        p = p.reshape(len(STUDY_GRID), len(chunk), *p.shape[1:])
        out.update({k: p[:, i] for i, k in enumerate(chunk)})
    return {"pred": out}


def dice_3d(result: dict, masks: dict) -> dict[str, np.ndarray]:
    """Per patient, Dice of each ε on the slice-ordered volume: ``{patient: (E,)}``."""
    by_patient = defaultdict(list)
    for key in sorted(result["pred"]):
        by_patient[key[0]].append(key)
    scores = {}
    for pid, keys in by_patient.items():
        pred = np.stack([result["pred"][k] for k in keys], axis=1)  # (E, Z, H, W)
        gt = np.stack([masks[k] for k in keys])
        scores[pid] = np.array([dice(pred[e], gt) for e in range(len(STUDY_GRID))])
    return scores


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="/tmp/tfrobseg_mixed_precision_cohort", help="built-in cohort folder")
    parser.add_argument("--patients", type=int, default=12, help="cohort size; the last --eval are attacked")
    parser.add_argument("--eval", type=int, default=4)
    parser.add_argument("--model", default="unet")
    parser.add_argument("--filters", default="8,16,32,64")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--loss", default="bce", help="training and attack loss (the study attacks with the training loss)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.filters = tuple(int(f) for f in args.filters.split(","))
    if not 0 < args.eval < args.patients:
        parser.error("--eval must be between 1 and --patients - 1")

    t0 = time.perf_counter()
    data = str(prepare_builtin(args.data, n_patients=args.patients, seed=args.seed))
    ids = Manifest.read(data).ok_patients
    train_ids, eval_ids = ids[:-args.eval], ids[-args.eval:]
    model16 = train_mixed(args, data, train_ids)
    t_train = time.perf_counter() - t0
    eval_ds = make_dataset(data, eval_ids, batch_size=args.batch, image_size=args.size)
    masks = {(str(pid.decode()), int(i)): m[..., 0] > 0.5 for element in eval_ds
             for pid, i, m in zip(element["patient_id"].numpy(), element["slice_index"].numpy(), element["mask"].numpy(),
                                  strict=True)}
    f16 = run(model16, eval_ds, args, "model")
    f32 = run(model16, eval_ds, args, "float32")
    mix = mixed_forward(model16, f32, args.batch)
    t_attack = time.perf_counter() - t0 - t_train

    copy = float32_copy(model16)
    compute = sorted({layer.compute_dtype for layer in model16.layers})
    print(f"model={args.model} filters={args.filters} params={model16.count_params():,} input={args.size}x{args.size} "
          f"trained {args.epochs} epochs under mixed_float16 (layer compute dtypes {compute}; copy: "
          f"{sorted({layer.compute_dtype for layer in copy.layers})}) lr={args.lr} loss={args.loss} "
          f"train patients={len(train_ids)} eval patients={len(eval_ids)} slices={len(masks)} "
          f"tf={tf.__version__} keras={keras.__version__} device={'GPU' if tf.config.list_physical_devices('GPU') else 'CPU'}")
    keys = sorted(f16["sign"])
    s16, s32 = np.stack([f16["sign"][k] for k in keys]), np.stack([f32["sign"][k] for k in keys])
    per_patient = {pid: float(np.mean([np.mean(f16["sign"][k] == f32["sign"][k]) for k in keys if k[0] == pid]))
                   for pid in eval_ids}
    print(f"sign agreement f16 vs f32: {np.mean(s16 == s32):.2%} of {s16.size:,} pixels "
          f"(per patient {min(per_patient.values()):.2%} … {max(per_patient.values()):.2%}); "
          f"zero signs f16 {np.mean(s16 == 0):.3%}, f32 {np.mean(s32 == 0):.3%}")

    d16, d32, dmix = (dice_3d(r, masks) for r in (f16, f32, mix))
    pids = sorted(d16)
    a16, a32, amix = (np.stack([d[p] for p in pids]) for d in (d16, d32, dmix))  # (patients, E)
    print("3D Dice per patient (mean over patients); |Δ| against f16, mean and max over patients")
    print(f"{'eps':>4} | {'f16':>6} {'f32':>6} {'mix':>6} | {'f32 mean|Δ|':>11} {'max|Δ|':>7} | "
          f"{'mix mean|Δ|':>11} {'max|Δ|':>7}")
    rows = []
    for e, eps in enumerate(STUDY_GRID):
        diff32, diffmix = np.abs(a32[:, e] - a16[:, e]), np.abs(amix[:, e] - a16[:, e])
        rows.append((eps, a16[:, e].mean(), a32[:, e].mean(), amix[:, e].mean(), diff32.mean(), diff32.max(),
                     diffmix.mean(), diffmix.max()))
        print(f"{eps:4.1f} | {rows[-1][1]:6.4f} {rows[-1][2]:6.4f} {rows[-1][3]:6.4f} | {rows[-1][4]:11.4f} "
              f"{rows[-1][5]:7.4f} | {rows[-1][6]:11.4f} {rows[-1][7]:7.4f}")
    attacked = np.abs(a32[:, 1:] - a16[:, 1:])
    print(f"over ε 0.1…1.0: f32 vs f16 mean |Δ Dice| {attacked.mean():.4f}, max {attacked.max():.4f}; "
          f"train {t_train:.0f} s, attacks {t_attack:.0f} s")
    return {"sign_agreement": float(np.mean(s16 == s32)), "rows": rows}


if __name__ == "__main__":
    main()
