"""Attack a whole dataset slice by slice (or volume by volume) and ε by ε, streaming one fixed-size batch at a time.

The dataset is a :func:`tfrobseg.dataset.pipeline.make_dataset` dataset: dict elements with ``image`` and
``mask`` ``(B, H, W, C)``, ``patient_id`` and ``slice_index`` (unbatched dict datasets work too), or a
:func:`tfrobseg.dataset.volumes.volume_dataset` of whole volumes, ``image`` and ``mask`` ``(B, D, H, W, C)``
(rank 5: volumes are always batched, since an unbatched volume has the rank of a batch of slices).
It is re-batched to ``batch_size`` and the last partial batch is padded with empty slices (volumes),
so every call sees the same shape and XLA compiles once; the padding is dropped from the output. Only one
batch of results is held at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfrobseg.attack_names import NOISE_CONTROLS
from tfrobseg.attacks.apgd import apgd
from tfrobseg.attacks.budget import budget, check_epsilons
from tfrobseg.attacks.cospgd import cospgd, targeted_cospgd
from tfrobseg.attacks.dag import dag
from tfrobseg.attacks.fgsm import fgsm_sweep
from tfrobseg.attacks.gradient import LossLike, predict
from tfrobseg.attacks.iterative import ifgsm, targeted_ifgsm
from tfrobseg.attacks.noise import gaussian_noise, rician_noise, sign_noise
from tfrobseg.attacks.params import (
    check_attack_precision,
    check_match,
    check_params,
    keyword_options,
)
from tfrobseg.attacks.pgd import pgd
from tfrobseg.attacks.precision import float32_copy
from tfrobseg.attacks.segpgd import segpgd
from tfrobseg.attacks.targets import make_target

#: ``run(model, x, y, epsilons, batch_number, **options) -> (predictions, adversarial)``, both ``(E, B, H, W, C)``.
BatchRun = Callable[..., tuple[tf.Tensor, tf.Tensor]]


@dataclass(frozen=True)
class BatchAttack:
    """How :func:`attack_dataset` applies one attack to a padded batch, for every ε.

    Attributes:
        run: ``run(model, x, y, epsilons, batch_number, **options)`` returns the predictions and
            the adversarial images, both ``(E, B, H, W, C)``; ``batch_number`` seeds the random ones.
        options: the keyword arguments it takes (cf. ART's ``attack_params``).
    """

    run: BatchRun
    options: frozenset[str]


def _fgsm(model: keras.Model, x: tf.Tensor, y: tf.Tensor, epsilons: list[float], batch_number: int,
          **options: Any) -> tuple[tf.Tensor, tf.Tensor]:
    # The gradient sign does not depend on ε: one gradient per batch serves the whole grid.
    return fgsm_sweep(model, x, y, epsilons, return_images=True, **options)


def _predicted(model: keras.Model, x: tf.Tensor, stacked: tf.Tensor, jit_compile: bool) -> tuple[tf.Tensor, tf.Tensor]:
    """The predictions of the ``(E, B, H, W, C)`` images ``stacked`` in one forward call, with the images."""
    flat = tf.reshape(stacked, [-1] + x.shape[1:].as_list())
    preds = predict(model, flat, jit_compile=jit_compile)
    return tf.reshape(preds, [stacked.shape[0], x.shape[0]] + preds.shape[1:].as_list()), stacked


def _each_epsilon(attack: Callable[..., tf.Tensor]) -> BatchRun:
    """A :data:`BatchRun` from a one-ε ``attack(model, x, y, eps, batch_number, **options)``:
    every ε in turn, then one forward call for all adversarial copies."""

    def run(model: keras.Model, x: tf.Tensor, y: tf.Tensor, epsilons: list[float], batch_number: int,
            **options: Any) -> tuple[tf.Tensor, tf.Tensor]:
        stacked = tf.stack([attack(model, x, y, eps, batch_number, **options) for eps in epsilons])
        return _predicted(model, x, stacked, options.get("jit_compile", True))

    return run


def stacked(attack: Callable[..., tf.Tensor]) -> BatchRun:
    """A :data:`BatchRun` from ``attack(model, x, y, eps, batch_number, **options)`` that takes ε per image:
    the batch's copies for every ε > 0 are stacked into one batch of B·E images with their own ε, so
    each gradient call serves the whole grid (fewer, larger calls than one attack per ε); ε = 0 entries
    are the clean batch. Then one forward call for all adversarial copies."""

    def run(model: keras.Model, x: tf.Tensor, y: tf.Tensor, epsilons: list[float], batch_number: int,
            **options: Any) -> tuple[tf.Tensor, tf.Tensor]:
        x, y = tf.convert_to_tensor(x, tf.float32), tf.convert_to_tensor(y, tf.float32)
        batch, attacked = int(x.shape[0]), [e for e in epsilons if e > 0]
        images = {0.0: x}
        if attacked:
            repeat = [len(attacked)] + [1] * (x.shape.rank - 1)
            eps = np.repeat(np.asarray(attacked, np.float32), batch)
            adv = attack(model, tf.tile(x, repeat), tf.tile(y, repeat), eps, batch_number, **options)
            images.update({e: adv[k * batch:(k + 1) * batch] for k, e in enumerate(attacked)})
        stacked_images = tf.stack([images[e if e > 0 else 0.0] for e in epsilons])
        return _predicted(model, x, stacked_images, options.get("jit_compile", True))

    return run


def _on_batch(attack: Callable[..., tf.Tensor], *, targeted: bool = False) -> Callable[..., tf.Tensor]:
    """``attack(model, x, y, eps, **options)`` as the runner calls it, with the batch number: an attack that
    draws at random uses the stateless stream ``(seed, batch number)`` (a different one per batch,
    reproducible from the user's seed); a targeted one is aimed at ``make_target(y, target)`` (default
    ``"background"``)."""
    seeded = "seed" in keyword_options(attack)

    def run(model: keras.Model, x: tf.Tensor, y: tf.Tensor, eps: Any, batch_number: int, **options: Any) -> tf.Tensor:
        if targeted:
            y = make_target(y, options.pop("target", "background"))
        if seeded:
            options["seed"] = (options.get("seed", 0), batch_number)
        return attack(model, x, y, eps, **options)

    return run


def _noise(model, x, y, eps, batch_number, *, seed: int = 0, jit_compile: bool = True, **options):
    # No gradient here: jit_compile only concerns the prediction of the noisy images (_each_epsilon).
    return sign_noise(x, eps, seed=(seed, batch_number), **options)


#: The attack the ``"gaussian"`` and ``"rician"`` controls are matched to unless ``match`` says otherwise.
DEFAULT_MATCH = "pgd"


def _matched_noise(draw: Callable[..., tf.Tensor]) -> BatchRun:
    """A :data:`BatchRun` adding ``draw`` noise (:func:`gaussian_noise` or :func:`rician_noise`) whose RMS is,
    per image and ε, that of the perturbation the attack ``match`` makes of the same batch with the same
    options and seed; it costs that attack's gradients plus two forward calls."""

    def run(model: keras.Model, x: tf.Tensor, y: tf.Tensor, epsilons: list[float], batch_number: int, *,
            match: str = DEFAULT_MATCH, seed: int = 0, **options: Any) -> tuple[tf.Tensor, tf.Tensor]:
        reference = ATTACKS[match]
        seeded = {"seed": seed} if "seed" in reference.options else {}
        _, adversarial = reference.run(model, x, y, epsilons, batch_number, **options, **seeded)
        clip, relative_to = options.get("clip"), options.get("relative_to")
        rms = tf.sqrt(tf.reduce_mean(tf.square(adversarial - x), axis=list(range(2, adversarial.shape.rank))))
        noisy = []
        for e, eps in enumerate(epsilons):
            # The rounding of (x + δ) − x can put the measured RMS a hair above ε; the box's RMS is at most ε.
            radius = tf.reshape(budget(x, eps, relative_to), [-1])
            noisy.append(draw(x, eps, rms=tf.minimum(rms[e], radius), seed=(seed, batch_number), clip=clip,
                              relative_to=relative_to))
        return _predicted(model, x, tf.stack(noisy), options.get("jit_compile", True))

    return run


#: Every attack of :func:`attack_dataset`, by name: the one list of attack names (the command line
#: offers ``tuple(ATTACKS)``) and the runner's only dispatch.
ATTACKS: dict[str, BatchAttack] = {
    "fgsm": BatchAttack(_fgsm, keyword_options(fgsm_sweep) - {"return_images"}),
    "ifgsm": BatchAttack(stacked(_on_batch(ifgsm)), keyword_options(ifgsm)),
    "targeted_ifgsm": BatchAttack(stacked(_on_batch(targeted_ifgsm, targeted=True)),
                                  keyword_options(targeted_ifgsm) | {"target"}),
    "pgd": BatchAttack(stacked(_on_batch(pgd)), keyword_options(pgd)),
    # SegPGD and CosPGD fix their own per-pixel loss: no "loss" option.
    "segpgd": BatchAttack(stacked(_on_batch(segpgd)), keyword_options(segpgd) - {"loss"}),
    "cospgd": BatchAttack(stacked(_on_batch(cospgd)), keyword_options(cospgd) - {"loss"}),
    "targeted_cospgd": BatchAttack(stacked(_on_batch(targeted_cospgd, targeted=True)),
                                   keyword_options(targeted_cospgd) - {"loss"} | {"target"}),
    "apgd": BatchAttack(stacked(_on_batch(apgd)), keyword_options(apgd)),
    # DAG has no attack loss (it ascends a logit margin): the runner's loss is not passed to it.
    "dag": BatchAttack(stacked(_on_batch(dag)), keyword_options(dag) - {"loss"}),
    "noise": BatchAttack(_each_epsilon(_noise), keyword_options(sign_noise) | {"jit_compile"}),
}



def matchable_attacks() -> tuple[str, ...]:
    """The attacks a ``"gaussian"`` or ``"rician"`` control can be matched to (``match=``): all but the controls."""
    return tuple(name for name in ATTACKS if name not in NOISE_CONTROLS)


def _matched_options(match: str) -> frozenset[str]:
    """The options of a control matched to ``match``: that attack's options, its seed and ``match``."""
    return ATTACKS[match].options | {"match", "seed"}


# Noise matched to an attack's size: every matchable attack's options are accepted here, and
# attack_dataset narrows them to those of the chosen ``match`` before any work.
ATTACKS.update({
    name: BatchAttack(_matched_noise(draw), frozenset().union(*(_matched_options(m) for m in matchable_attacks())))
    for name, draw in (("gaussian", gaussian_noise), ("rician", rician_noise))
})


def _rebatch(dataset: tf.data.Dataset, batch_size: int) -> tuple[tf.data.Dataset, bool]:
    """The dataset in batches of ``batch_size`` and whether its elements are volumes (rank 5)."""
    spec = dataset.element_spec
    if not isinstance(spec, dict) or "image" not in spec or "mask" not in spec:
        keys = sorted(spec) if isinstance(spec, dict) else type(spec).__name__
        raise ValueError(f"dataset elements must be dicts with 'image' and 'mask' (tfrobseg.dataset.pipeline.make_dataset), got {keys}")
    rank = spec["image"].shape.rank
    if rank == 5 and batch_size > 1 and not spec["image"].shape[1:].is_fully_defined():
        raise ValueError(f"the dataset's volumes differ in size (image {spec['image'].shape}): attack them with "
                         "batch_size=1, or pad them to one size (tfrobseg.dataset.volumes.pad_to_multiple)")
    if rank in (4, 5):
        dataset = dataset.unbatch()
    elif rank != 3:
        raise ValueError(f"dataset 'image' must be (H, W, C), batched (B, H, W, C), or batched volumes "
                         f"(B, D, H, W, C), got shape {spec['image'].shape}")
    return dataset.batch(batch_size).prefetch(1), rank == 5


def _pad(tensor: tf.Tensor, batch_size: int) -> tf.Tensor:
    missing = batch_size - int(tensor.shape[0])
    if missing == 0:
        return tensor
    return tf.concat([tensor, tf.zeros([missing] + tensor.shape[1:].as_list(), tensor.dtype)], axis=0)


def _check_call(attack: str, loss: LossLike, batch_size: int, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Validate a whole :func:`attack_dataset` call before any work; returns the attack's options.

    ``loss`` joins the options of the attacks that take one (all but ``"noise"`` and ``"dag"``).
    """
    if attack not in ATTACKS:
        raise ValueError(f"attack must be one of {tuple(ATTACKS)}, got {attack!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    taken, name = ATTACKS[attack].options, repr(attack)
    if "match" in taken:
        match = check_match(kwargs.get("match", DEFAULT_MATCH))
        taken, name = _matched_options(match), f"{attack!r} (match={match!r})"
    unknown = sorted(set(kwargs) - taken)
    if unknown:
        raise ValueError(f"attack {name} takes no argument {', '.join(unknown)}; it takes {', '.join(sorted(taken))}")
    options = {"loss": loss, **kwargs} if "loss" in taken else dict(kwargs)
    check_params(**options)
    seed = options.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int: batch b of the dataset uses the random stream (seed, b), got {seed!r}")  # noqa: TRY004
    return options


def attack_dataset(
    model: keras.Model,
    dataset: tf.data.Dataset,
    epsilons: Sequence[float],
    *,
    attack: str = "fgsm",
    loss: LossLike = "bce",
    batch_size: int = 4,
    return_images: bool = False,
    attack_precision: str = "model",
    **attack_kwargs: Any,
) -> Iterator[dict[str, Any]]:
    """Yield one result per slice per ε: the prediction under attack, with patient id and slice index.

    Every argument is checked when this is called, before the dataset is read.

    Args:
        model: Keras model returning probabilities.
        dataset: :func:`tfrobseg.dataset.pipeline.make_dataset` dataset, or a
            :func:`tfrobseg.dataset.volumes.volume_dataset` of whole volumes (``batch_size=1`` unless they are of
            one size); the attack's ``y`` is ``element["mask"]``.
        epsilons: ε values (input units, or fractions with ``relative_to``); 0 gives the clean result.
        attack: a name in :data:`ATTACKS`: ``"fgsm"`` (one gradient per batch via :func:`fgsm_sweep`),
            ``"ifgsm"``, ``"targeted_ifgsm"`` (``target=`` ``"background"`` (default),
            ``"foreground"``, a pixel shift or a callable, see :func:`make_target`), ``"pgd"``,
            ``"segpgd"``, ``"cospgd"``, ``"targeted_cospgd"`` (``target=`` as for ti-FGSM), ``"apgd"``, ``"dag"``,
            ``"noise"`` (sign noise), or the controls ``"gaussian"`` and ``"rician"``: noise whose RMS is, per
            image and ε, that of the attack ``match=`` (default ``"pgd"``) on the same batch with the same options
            (:func:`~tfrobseg.attacks.noise.gaussian_noise`).
        loss: attack loss name or callable (may differ from the training loss).
        batch_size: fixed batch size of every model call; the last batch is padded to it.
        return_images: also yield the clean ``image`` and the ``adversarial`` image.
        attack_precision: ``"model"`` (default) attacks the model as built, in float16 under
            ``mixed_float16``; ``"float32"`` attacks a :func:`~tfrobseg.attacks.precision.float32_copy`
            of it (same weights) and predicts the attacked slices with that copy, which gives the
            gradient signs of a float32 model (see docs/attacks.md for the measured difference).
        **attack_kwargs: passed to the attack (``clip``, ``relative_to``, ``steps``, ``alpha``,
            ``step_factor``, ``restarts``, ``best_iterate``, ``momentum``, ``random_start``,
            ``seed`` (an int; batch b uses the stream ``(seed, b)``), ``jit_compile``,
            ``loss_scale``, ``forward_batch`` …); :data:`ATTACKS` says which each attack takes.

    Yields:
        ``{"patient_id": str, "slice_index": int, "epsilon": float, "prediction": (H, W, C) float32}``
        plus ``"image"`` and ``"adversarial"`` when ``return_images``; slices in dataset order, the
        ε values of a slice in the order given. For volumes (:func:`tfrobseg.dataset.volumes.volume_dataset`)
        one result per volume and ε, without ``slice_index``, ``prediction`` ``(D, H, W, C)``.

    Raises:
        ValueError: an unknown attack, an argument the attack does not take, or an invalid value.
    """
    options = _check_call(attack, loss, batch_size, attack_kwargs)
    eps_values = check_epsilons(epsilons)
    precision = check_attack_precision(attack_precision)
    batches, volumes = _rebatch(dataset, batch_size)
    if precision == "float32":
        # One copy per call: the attack and the predictions of the attacked slices run in float32.
        model = float32_copy(model)
    return _results(model, batches, eps_values, ATTACKS[attack].run, batch_size, return_images, options, volumes)


def _results(
    model: keras.Model,
    batches: tf.data.Dataset,
    eps_values: list[float],
    run: BatchRun,
    batch_size: int,
    return_images: bool,
    options: dict[str, Any],
    volumes: bool = False,
) -> Iterator[dict[str, Any]]:
    counter = 0
    for batch_number, element in enumerate(batches):
        n = int(element["image"].shape[0])
        x = _pad(tf.cast(element["image"], tf.float32), batch_size)
        y = _pad(tf.cast(element["mask"], tf.float32), batch_size)
        preds, adv = run(model, x, y, eps_values, batch_number, **options)
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
                    **({} if volumes else {"slice_index": int(slices[i])}),
                    "epsilon": eps,
                    "prediction": np.array(preds[e, i], np.float32),
                }
                if return_images:
                    result["image"] = np.array(clean[i])
                    result["adversarial"] = np.array(adv[e, i])
                yield result
