"""Attack a whole dataset slice by slice and ε by ε, streaming one fixed-size batch at a time.

The dataset is a :func:`tfrobseg.data.make_dataset` dataset: dict elements with ``image`` and
``mask`` ``(B, H, W, C)``, ``patient_id`` and ``slice_index`` (unbatched dict datasets work too).
It is re-batched to ``batch_size`` and the last partial batch is padded with empty slices, so every
call sees the same shape and XLA compiles once; the padding is dropped from the output. Only one
batch of results is held at a time.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfrobseg.attacks.budget import check_epsilons
from tfrobseg.attacks.fgsm import fgsm_sweep
from tfrobseg.attacks.gradient import LossLike, predict
from tfrobseg.attacks.iterative import ifgsm, make_target, targeted_ifgsm
from tfrobseg.attacks.noise import sign_noise
from tfrobseg.attacks.pgd import pgd

ATTACKS = ("fgsm", "ifgsm", "targeted_ifgsm", "pgd", "noise")


def _rebatch(dataset: tf.data.Dataset, batch_size: int) -> tf.data.Dataset:
    spec = dataset.element_spec
    if not isinstance(spec, dict) or "image" not in spec or "mask" not in spec:
        keys = sorted(spec) if isinstance(spec, dict) else type(spec).__name__
        raise ValueError(f"dataset elements must be dicts with 'image' and 'mask' (tfrobseg.data.make_dataset), got {keys}")
    rank = spec["image"].shape.rank
    if rank == 4:
        dataset = dataset.unbatch()
    elif rank != 3:
        raise ValueError(f"dataset 'image' must be (H, W, C) or batched (B, H, W, C), got shape {spec['image'].shape}")
    return dataset.batch(batch_size).prefetch(1)


def _pad(tensor: tf.Tensor, batch_size: int) -> tf.Tensor:
    missing = batch_size - int(tensor.shape[0])
    if missing == 0:
        return tensor
    return tf.concat([tensor, tf.zeros([missing] + tensor.shape[1:].as_list(), tensor.dtype)], axis=0)


def _attack_batch(
    model: keras.Model,
    x: tf.Tensor,
    y: tf.Tensor,
    epsilons: list[float],
    attack: str,
    loss: LossLike,
    batch_number: int,
    kwargs: dict[str, Any],
) -> tuple[tf.Tensor, tf.Tensor]:
    """Predictions and adversarial images ``(E, B, H, W, C)`` for one padded batch."""
    if attack == "fgsm":
        return fgsm_sweep(model, x, y, epsilons, loss=loss, return_images=True, **kwargs)
    jit = kwargs.get("jit_compile", True)
    images = []
    for eps in epsilons:
        if attack == "ifgsm":
            adv = ifgsm(model, x, y, eps, loss=loss, **kwargs)
        elif attack == "targeted_ifgsm":
            options = dict(kwargs)
            target = make_target(y, options.pop("target", "background"))
            adv = targeted_ifgsm(model, x, target, eps, loss=loss, **options)
        elif attack == "pgd":
            options = dict(kwargs)
            # A different stateless stream per batch, reproducible from the user's seed.
            options["seed"] = (int(options.pop("seed", 0)), batch_number)
            adv = pgd(model, x, y, eps, loss=loss, **options)
        else:
            options = {k: v for k, v in kwargs.items() if k in ("clip", "relative_to")}
            adv = sign_noise(x, eps, seed=(int(kwargs.get("seed", 0)), batch_number), **options)
        images.append(adv)
    stacked = tf.stack(images)
    flat = tf.reshape(stacked, [-1] + x.shape[1:].as_list())
    preds = predict(model, flat, jit_compile=jit)
    return tf.reshape(preds, [len(epsilons), x.shape[0]] + preds.shape[1:].as_list()), stacked


def attack_dataset(
    model: keras.Model,
    dataset: tf.data.Dataset,
    epsilons: Sequence[float],
    *,
    attack: str = "fgsm",
    loss: LossLike = "bce",
    batch_size: int = 4,
    return_images: bool = False,
    **attack_kwargs: Any,
) -> Iterator[dict[str, Any]]:
    """Yield one result per slice per ε: the prediction under attack, with patient id and slice index.

    Args:
        model: Keras model returning probabilities.
        dataset: :func:`tfrobseg.data.make_dataset` dataset; the attack's ``y`` is ``element["mask"]``.
        epsilons: ε values (input units, or fractions with ``relative_to``); 0 gives the clean result.
        attack: ``"fgsm"`` (one gradient per batch via :func:`fgsm_sweep`), ``"ifgsm"``,
            ``"targeted_ifgsm"`` (``target=`` ``"background"`` (default), ``"foreground"``, a pixel
            shift or a callable, see :func:`make_target`), ``"pgd"`` or ``"noise"`` (sign noise).
        loss: attack loss name or callable (may differ from the training loss).
        batch_size: fixed batch size of every model call; the last batch is padded to it.
        return_images: also yield the clean ``image`` and the ``adversarial`` image.
        **attack_kwargs: passed to the attack (``clip``, ``relative_to``, ``steps``, ``alpha``,
            ``seed``, ``jit_compile``, ``loss_scale``, ``forward_batch`` …).

    Yields:
        ``{"patient_id": str, "slice_index": int, "epsilon": float, "prediction": (H, W, C) float32}``
        plus ``"image"`` and ``"adversarial"`` when ``return_images``; slices in dataset order, the
        ε values of a slice in the order given.
    """
    if attack not in ATTACKS:
        raise ValueError(f"attack must be one of {ATTACKS}, got {attack!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    eps_values = check_epsilons(epsilons)
    counter = 0
    for batch_number, element in enumerate(_rebatch(dataset, batch_size)):
        n = int(element["image"].shape[0])
        x = _pad(tf.cast(element["image"], tf.float32), batch_size)
        y = _pad(tf.cast(element["mask"], tf.float32), batch_size)
        preds, adv = _attack_batch(model, x, y, eps_values, attack, loss, batch_number, attack_kwargs)
        preds = preds.numpy()[:, :n]
        if return_images:
            adv, clean = adv.numpy()[:, :n], x.numpy()[:n]
        ids = element["patient_id"].numpy() if "patient_id" in element else [b""] * n
        slices = element["slice_index"].numpy() if "slice_index" in element else np.arange(counter, counter + n)
        counter += n
        for i in range(n):
            pid = ids[i].decode() if isinstance(ids[i], bytes) else str(ids[i])
            for e, eps in enumerate(eps_values):
                result = {
                    "patient_id": pid,
                    "slice_index": int(slices[i]),
                    "epsilon": eps,
                    "prediction": np.array(preds[e, i], np.float32),
                }
                if return_images:
                    result["image"] = np.array(clean[i])
                    result["adversarial"] = np.array(adv[e, i])
                yield result
