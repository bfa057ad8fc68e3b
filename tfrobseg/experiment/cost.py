"""What a grid's units cost before they run: multiply-accumulates counted from the networks' graphs, turned
into seconds by a measured (or given) throughput.

The cost of a unit (:mod:`tfrobseg.experiment.runner`: train, then attack and score) is

    seconds = startup + s_read · slices + E · Σ_runs (t_r · M · S_t + v_r · M_v · S_v) / R_train
              + attack startup + V · Σ_attacks a(attack, ε) · M_e · S_e / R_attack
              + V · A · |ε| · Σ_eval patients voxels · s_score

* ``M``, ``M_v``, ``M_e``: multiply-accumulates (MACs) of one forward pass of one training, validation and
  evaluated sample (:func:`tfrobseg.models.traced_macs`). A 2D network's samples are slices at ``settings.image_size``; a 3D
  network's (:func:`~tfrobseg.experiment.runner.volumetric`) training samples are patches at
  ``settings.patch_shape``, its validation and evaluated samples whole volumes padded to one shape as
  :func:`~tfrobseg.experiment.runner.common_padding` pads them (counted at that shape).
* ``S_t``: training samples per epoch (the training patients' slices from the manifest; a 3D network
  ``settings.patches_per_volume`` patches per training volume); ``S_v``: validation slices (volumes);
  ``S_e``: evaluated slices, rounded up to whole batches (the attack runner pads the last batch), or volumes.
* ``E``: ``settings.train.max_epochs``, the cap: an upper bound, since early stopping may end a run sooner.
* Pass equivalents, in forward passes: a forward pass is 1; an input gradient (what an attack takes) is 2,
  the forward pass and the input-gradient products of the backward pass; a training pass is 3, the forward
  pass and the input- and weight-gradient products (measured on the 2-core CPU, 48 px, batch 4, filters
  8…128: an input gradient took 2.3 / 2.5 forward passes and a training step 4.4 / 4.5, optimizer and
  batch statistics included, for the U-Net / Recurrent U-Net; training and attacks are calibrated apart, so
  such overheads are in their rates). ``t_r`` and ``v_r`` are a training and a validation sample's passes in
  run r: 3 and 1 undefended; under a defense :func:`training_passes` (distillation has two runs, teacher and
  student).
* ``a(attack, ε)``: an evaluated sample's passes for the run's ε list (:func:`attack_passes`); the ensemble
  costs its members, each computed once.
* ``V``: the networks attacked per unit (1; 2 for distillation, whose student is attacked again at its
  training temperature, :func:`tfrobseg.defenses.masking_views`); ``A``: the attacks scored (not the
  ensemble, reduced from its members' rows); ``|ε|``: the ε values, 0 included.
* ``R_train`` and ``R_attack``: effective MACs per second of training and of attacking on the unit's
  hardware; ``s_score``: CPU seconds per voxel of scoring one patient at one ε (Dice, HD95, ASSD, PSNR,
  SSIM); ``startup``: building the network, tracing and compiling its steps and saving it; ``attack startup``:
  tracing and compiling the attacks; ``s_read``: seconds per slice of verifying, reading and resampling the
  records, ``slices`` the unit's patients' slices (read once: the runner caches them). All from
  :class:`Throughput`: measured by :func:`calibrate`, or a given figure (then ``R_attack = R_train`` and no
  start-up, reading or scoring time).

Element-wise work (normalization, activations, pooling, resampling, losses) is not counted in the MACs;
:func:`calibrate` measures ``R`` on the whole training and attack steps, so their element-wise share is in its
figures. What is left out: the worker process's start (importing TensorFlow), and a unit's shorter start when
its process kept the traced model of an earlier unit of the same model and loss
(:func:`tfrobseg.experiment.grid.run_grid`'s workers): then the estimate is an upper bound there too.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import socket
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfrobseg.dataset.manifest import Manifest
from tfrobseg.defenses.config import DefenseConfig
from tfrobseg.defenses.masking import checked_temperatures
from tfrobseg.experiment.settings import Settings
from tfrobseg.experiment.units import Unit, load_split, unit_patients

__all__ = ["Throughput", "UnitCost", "attack_passes", "calibrate", "estimate_units", "format_estimate",
           "training_passes"]

#: Forward-pass equivalents of one sample's input gradient and of one sample's training pass (module docstring).
GRADIENT_PASSES = 2
TRAINING_PASSES = 3
#: Calibration: work per measured epoch or attack call (GMAC) when none is given, and the bounds on its steps.
_BUDGET_GMAC = {"CPU": 20.0, "GPU": 2000.0}
_MIN_STEPS, _MAX_STEPS = 2, 64
#: Calibration of the iterative attacks: at most this many steps and one restart (the traced steps are the same).
_CALIBRATION_STEPS = 2
#: Depth of the synthetic volume whose scoring :func:`calibrate` times.
_SCORED_DEPTH = 16


# --------------------------------------------------------------------------------------------------- passes
def training_passes(defense: DefenseConfig | None) -> list[tuple[float, float]]:
    """Per training run of a unit, ``(t, v)``: the forward-pass equivalents of one training sample's step and
    of one validation sample, from what :meth:`tfrobseg.defenses.DefendedModel.train_step` computes.

    * none: ``(3, 1)``, one training pass;
    * ``adversarial`` / ``fast_adversarial``: one input gradient (2) and the clean and adversarial training
      passes (6): ``(8, 1)``; β = 0 skips the clean pass ``(5, 1)``, β = 1 the attack and the adversarial pass;
    * ``pgd_adversarial``: ``steps`` gradients, then the two passes: ``(2·steps + 6, 1)`` (β as above);
    * ``trades``: the clean prediction (1), ``steps`` gradients and the clean and adversarial training passes:
      ``(2·steps + 7, 1)``; β = 0 skips the attack and the adversarial pass;
    * ``uniform_noise`` / ``gaussian_noise``: two updates per batch, ``(6, 1)``;
    * ``distillation``: two runs, the teacher ``(3, 1)`` and the student, whose steps also run the teacher
      forward, ``(4, 2)``.
    """
    plain = (float(TRAINING_PASSES), 1.0)
    if defense is None:
        return [plain]
    name = defense.name
    if name in ("adversarial", "fast_adversarial", "pgd_adversarial"):
        beta = float(defense["beta"])
        if beta == 1.0:
            return [plain]
        gradients = int(defense["steps"]) if name == "pgd_adversarial" else 1
        updates = 1 if beta == 0.0 else 2
        return [(GRADIENT_PASSES * gradients + TRAINING_PASSES * updates, 1.0)]
    if name == "trades":
        if float(defense["beta"]) == 0.0:
            return [plain]
        return [(1 + GRADIENT_PASSES * int(defense["steps"]) + 2 * TRAINING_PASSES, 1.0)]
    if name in ("uniform_noise", "gaussian_noise"):
        return [(2.0 * TRAINING_PASSES, 1.0)]
    if name == "distillation":
        return [plain, (TRAINING_PASSES + 1.0, 2.0)]
    raise ValueError(f"cost: no training cost known for the defense {name!r}; add it to training_passes")


def _default(function: Callable[..., Any], option: str) -> Any:
    return inspect.signature(function).parameters[option].default


def _gradient_attacks() -> dict[str, Callable[..., Any]]:
    """The attack functions with ``steps``, by :data:`~tfrobseg.attacks.runner.ATTACKS` name (their defaults)."""
    from tfrobseg import attacks

    return {"ifgsm": attacks.ifgsm, "targeted_ifgsm": attacks.targeted_ifgsm, "pgd": attacks.pgd,
            "segpgd": attacks.segpgd, "cospgd": attacks.cospgd, "targeted_cospgd": attacks.targeted_cospgd,
            "apgd": attacks.apgd, "dag": attacks.dag}


def attack_passes(name: str, options: Mapping[str, Any], epsilons: Sequence[float]) -> float:
    """Forward-pass equivalents per evaluated sample of one attack (not the ensemble) at every ε of
    ``epsilons`` (0 included), as :func:`tfrobseg.attacks.attack_dataset` computes it. With P the ε > 0, E all
    of them, k steps and R restarts (the options given, else the attack's defaults):

    * ``fgsm``: 2 + P (one gradient serves every ε, its forward pass is the clean prediction);
    * ``ifgsm``, ``targeted_ifgsm``, ``pgd``, ``segpgd``, ``cospgd``, ``targeted_cospgd``:
      P · R · (2k + s) + E, s = 1 when ``best_iterate`` or R > 1 (the forward pass that scores the result),
      and E the forward pass of every ε's image;
    * ``apgd``: P · (2k + 1) + E; ``dag``: P · 2k + E, at most (it stops once every pixel is fooled);
    * ``noise``: E; ``gaussian`` / ``rician``: the attack they are matched to (``match``, default PGD) + E.
    """
    from tfrobseg.attacks.runner import ATTACKS, DEFAULT_MATCH

    n_eps, n_pos = len(epsilons), sum(1 for e in epsilons if e > 0)
    if name == "fgsm":
        return float(GRADIENT_PASSES + n_pos)
    if name == "noise":
        return float(n_eps)
    if name in ("gaussian", "rician"):
        match = options.get("match", DEFAULT_MATCH)
        matched = {k: v for k, v in options.items() if k in ATTACKS[match].options}
        return attack_passes(match, matched, epsilons) + n_eps
    functions = _gradient_attacks()
    if name not in functions:
        raise ValueError(f"cost: no cost known for the attack {name!r}; add it to attack_passes")
    function = functions[name]
    steps = int(options.get("steps", _default(function, "steps")))
    if name == "apgd":
        return float(n_pos * (GRADIENT_PASSES * steps + 1) + n_eps)
    if name == "dag":
        return float(n_pos * GRADIENT_PASSES * steps + n_eps)
    parameters = inspect.signature(function).parameters
    restarts = int(options.get("restarts", parameters["restarts"].default if "restarts" in parameters else 1))
    scored = 1 if options.get("best_iterate", False) or restarts > 1 else 0
    return float(n_pos * restarts * (GRADIENT_PASSES * steps + scored) + n_eps)


def _attacks_of(settings: Settings) -> list[Any]:
    """The attacks a unit computes: the chosen ones and the ensemble's members, each once, not the ensemble."""
    from tfrobseg.experiment.attacks import evaluation_order

    return [spec for spec in evaluation_order(settings.attack_specs()) if not spec.is_ensemble]


# --------------------------------------------------------------------------------------------------- throughput
@dataclass(frozen=True)
class Throughput:
    """How fast a unit's work runs on some hardware: what turns MACs into seconds (module docstring).

    Attributes:
        gmacs: effective GMAC/s of training (forward-pass equivalents, :func:`training_passes`).
        startup_s: seconds per unit before and around training: building the network, tracing (and compiling)
            its training and validation steps, saving it.
        source: ``"given"`` or ``"calibrated on <host>"``.
        device: ``"GPU"`` or ``"CPU"``.
        attack_gmacs: effective GMAC/s of attacking (:func:`attack_passes`); ``None``: ``gmacs``.
        attack_startup_s: seconds per unit tracing (and compiling) the attacks.
        score_s_per_mvoxel: seconds of scoring one patient at one ε per million voxels.
        read_s_per_slice: seconds per slice of a unit's data step (verifying and reading its records into memory).
    """

    gmacs: float
    startup_s: float
    source: str
    device: str
    attack_gmacs: float | None = None
    attack_startup_s: float = 0.0
    score_s_per_mvoxel: float = 0.0
    read_s_per_slice: float = 0.0

    def __post_init__(self) -> None:
        for label, value in (("gmacs", self.gmacs), ("attack_gmacs", self.attack_gmacs)):
            if value is not None and not (_number(value) and value > 0):
                raise ValueError(f"Throughput {label} must be a finite number > 0 (GMAC/s), got {value!r}")
        for label in ("startup_s", "attack_startup_s", "score_s_per_mvoxel", "read_s_per_slice"):
            value = getattr(self, label)
            if not (_number(value) and value >= 0):
                raise ValueError(f"Throughput {label} must be a finite number >= 0 (seconds), got {value!r}")
        if self.device not in ("GPU", "CPU"):
            raise ValueError(f"Throughput device must be 'GPU' or 'CPU', got {self.device!r}")

    @classmethod
    def given(cls, gmacs: float, device: str) -> Throughput:
        """A figure the user gives (``--throughput GMAC/s``): for training and attacks alike, no start-up,
        reading or scoring time."""
        return cls(gmacs, 0.0, "given", device)

    @property
    def attack_rate(self) -> float:
        """GMAC/s of attacking (``attack_gmacs``, else ``gmacs``)."""
        return self.gmacs if self.attack_gmacs is None else self.attack_gmacs

    @property
    def calibrated(self) -> bool:
        return self.source != "given"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# --------------------------------------------------------------------------------------------------- estimate
@dataclass(frozen=True)
class UnitCost:
    """One unit's estimated cost (module docstring).

    Samples are slices (a 3D network's: training patches, validation and evaluated volumes); ``eval_samples``
    counts the padding of the last attacked batch. ``epochs``: the cap, per training run (``runs``: 2 for
    distillation). ``forward_gmac``: one forward pass of a training sample. ``train_s``: start-up, reading and
    training; ``attack_s``: the attacks' start-up, the attacks and the scoring; both wall seconds of the unit's
    process, as its ``config.json`` records ``seconds`` train and attack_and_metrics.
    """

    unit: Unit
    samples_per_epoch: int
    val_samples: int
    eval_samples: int
    epochs: int
    runs: int
    forward_gmac: float
    train_gmac: float
    attack_gmac: float
    train_s: float
    attack_s: float
    throughput: Throughput

    @property
    def total_gmac(self) -> float:
        return self.train_gmac + self.attack_gmac

    @property
    def seconds(self) -> float:
        return self.train_s + self.attack_s

    @property
    def hours(self) -> float:
        return self.seconds / 3600.0


def estimate_units(units: Sequence[Unit], settings: Settings,
                   throughput: Throughput | Mapping[str, Throughput]) -> list[UnitCost]:
    """Each unit's :class:`UnitCost` under ``settings``, in ``units``' order (reads the manifest of
    ``settings.data_dir``, and ``settings.split_file`` as the runner does; builds each model once to count it).

    ``throughput``: one for every model, or one per model name (:func:`calibrate`'s result).
    """
    from tfrobseg.experiment.runner import padded_depth, pooling_multiple, volumetric

    rates = {u.model: _rate_of(throughput, u.model) for u in units}
    manifest = Manifest.read(settings.data_dir)
    split = load_split(settings.split_file) if settings.split_file else None
    runs = training_passes(settings.defense)
    specs = _attacks_of(settings)
    eps = settings.epsilons
    views = 1 + len(checked_temperatures(settings.defense))
    per_eval_sample = sum(attack_passes(s.name, s.options, eps) for s in specs)
    counter = _Counter(settings)
    batch = settings.train.batch_size
    costs = []
    for unit in units:
        patients = unit_patients(unit, manifest, split)
        slices = {p: manifest.entry(p, settings.data_dir).n_slices for p in {*patients.train, *patients.val,
                                                                              *patients.eval}}
        size = settings.image_size
        if volumetric(unit.model):
            multiple = pooling_multiple(settings)
            plane = -(-size // multiple) * multiple
            patch = settings.patch_shape or (16, size, size)
            s_t, m_t = settings.patches_per_volume * len(patients.train), counter.macs(unit.model, (*patch, 1))
            s_v = len(patients.val)
            depth_v = padded_depth([slices[p] for p in patients.val], multiple) if s_v else 0
            m_v = counter.macs(unit.model, (depth_v, plane, plane, 1)) if s_v else 0
            s_e = len(patients.eval)
            m_e = counter.macs(unit.model, (padded_depth([slices[p] for p in patients.eval], multiple), plane, plane, 1))
        else:
            m_t = m_v = m_e = counter.macs(unit.model, (size, size, 1))
            s_t, s_v = sum(slices[p] for p in patients.train), sum(slices[p] for p in patients.val)
            s_e = -(-sum(slices[p] for p in patients.eval) // batch) * batch
        rate = rates[unit.model]
        epochs = settings.train.max_epochs
        train_macs = epochs * sum(t * m_t * s_t + v * m_v * s_v for t, v in runs)
        attack_macs = views * per_eval_sample * m_e * s_e
        voxels = sum(slices[p] for p in patients.eval) * size * size
        score_s = views * len(specs) * len(eps) * voxels / 1e6 * rate.score_s_per_mvoxel
        read_s = sum(slices.values()) * rate.read_s_per_slice
        costs.append(UnitCost(
            unit=unit, samples_per_epoch=s_t, val_samples=s_v, eval_samples=s_e, epochs=epochs, runs=len(runs),
            forward_gmac=m_t / 1e9, train_gmac=train_macs / 1e9, attack_gmac=attack_macs / 1e9,
            train_s=rate.startup_s + read_s + train_macs / 1e9 / rate.gmacs,
            attack_s=rate.attack_startup_s + attack_macs / 1e9 / rate.attack_rate + score_s,
            throughput=rate))
    return costs


def _rate_of(throughput: Throughput | Mapping[str, Throughput], model: str) -> Throughput:
    if isinstance(throughput, Throughput):
        return throughput
    if model not in throughput:
        raise ValueError(f"cost: no throughput for the model {model!r} (given for: {', '.join(throughput) or 'none'})")
    return throughput[model]


class _Counter:
    """:func:`tfrobseg.models.traced_macs` of each model at each shape, each model built once (a 3D one with free sizes)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.built: dict[str, Any] = {}
        self.counted: dict[tuple[str, tuple[int, ...]], int] = {}

    def macs(self, model: str, shape: tuple[int, ...]) -> int:
        if (model, shape) not in self.counted:
            from tfrobseg import models

            if model not in self.built:
                built_shape = (None,) * (len(shape) - 1) + (1,) if len(shape) == 4 else shape
                self.built[model] = models.build_model(model, input_shape=built_shape, filters=self.settings.filters,
                                                       **_build_options(self.settings, model))
            self.counted[(model, shape)] = models.traced_macs(self.built[model], shape)
        return self.counted[(model, shape)]


def _build_options(settings: Settings, model: str) -> dict[str, Any]:
    """The model's options for a network that is only counted or timed: pretrained weights are not loaded."""
    return {k: v for k, v in settings.model_options.get(model, {}).items() if k != "weights"}


def format_estimate(costs: Sequence[UnitCost], *, gpus_per_unit: int) -> str:
    """One line per unit (id, training samples per epoch, epoch cap, GMAC per forward pass, its GPU- or CPU-hours)
    and the total: GPU-hours (a unit's hours × ``gpus_per_unit``) when ``gpus_per_unit`` > 0, else CPU-hours
    (a unit's process with all its threads), with what the figure assumes."""
    if isinstance(gpus_per_unit, bool) or not isinstance(gpus_per_unit, int) or gpus_per_unit < 0:
        raise ValueError(f"gpus_per_unit must be an int >= 0, got {gpus_per_unit!r}")
    if not costs:
        return "0 unit(s): nothing to estimate"
    kind = "GPU" if gpus_per_unit > 0 else "CPU"
    per_hour = gpus_per_unit if gpus_per_unit > 0 else 1  # GPU-hours: a unit's wall hours x its GPUs
    width = max(len("unit"), *(len(c.unit.uid) for c in costs))
    lines = [f"{'unit':<{width}}  {'samples/epoch':>13}  {'epoch cap':>9}  {'GMAC/forward':>12}  {kind + '-hours':>9}"]
    lines += [f"{c.unit.uid:<{width}}  {c.samples_per_epoch:>13,}  "
              f"{(f'{c.runs}x' if c.runs > 1 else '') + str(c.epochs):>9}  {c.forward_gmac:>12.4g}  "
              f"{c.hours * per_hour:>9.3f}" for c in costs]
    total = sum(c.hours for c in costs) * per_hour
    caps = "/".join(map(str, sorted({c.epochs for c in costs})))
    twice = " (distillation: in each of its two runs)" if any(c.runs > 1 for c in costs) else ""
    per = f"{gpus_per_unit} GPU(s) per unit" if gpus_per_unit > 0 else "a unit's process with all its threads"
    figure = f"{total:.1f}" if total >= 10 else f"{total:.3g}"
    lines.append(f"{len(costs)} unit(s): {figure} {kind}-hours in total ({per}; upper bound: "
                 f"every unit runs its {caps} epochs{twice}, early stopping may end it sooner; "
                 f"{_throughput_note(costs)})")
    return "\n".join(lines)


def _throughput_note(costs: Sequence[UnitCost]) -> str:
    rates = list({id(c.throughput): c.throughput for c in costs}.values())
    if all(not r.calibrated for r in rates):
        figures = "/".join(f"{r.gmacs:g}" for r in rates)
        return f"throughput {figures} GMAC/s given, start-up, reading and scoring not included"
    sources = sorted({r.source for r in rates})
    train = "/".join(f"{r.gmacs:.1f}" for r in rates)
    attack = "/".join(f"{r.attack_rate:.1f}" for r in rates)
    startup = "/".join(f"{r.startup_s + r.attack_startup_s:.0f}" for r in rates)
    return (f"throughput {', '.join(sources)}: {train} GMAC/s training, {attack} attacking, start-up {startup} s "
            "per unit, reading and scoring included")


# --------------------------------------------------------------------------------------------------- calibration
def calibrate(settings: Settings, models: Sequence[str], *, loss: str = "bce", epochs: int = 3,
              budget_gmac: float | None = None) -> dict[str, Throughput]:
    """Measure each model's :class:`Throughput` on this machine at the run's settings, in one worker process
    started as a unit's is (:attr:`Settings.threads`, determinism; nothing written outside a temporary folder).

    Per model, at the run's input size, filters, batch size, precision, XLA, model options and defense, with
    the loss ``loss``:

    * training: :func:`tfrobseg.defenses.train_defended` (the units' path: Keras ``fit`` with the protocol's
      callbacks, ``best.keras`` saved) on random arrays for ``epochs`` epochs of a few steps (about
      ``budget_gmac`` GMAC each, at least 2 and at most 64 batches) and one validation batch. The later
      epochs give ``gmacs``; the whole call less ``epochs`` such epochs is ``startup_s``;
    * attacks: each attack the unit computes (:func:`tfrobseg.attacks.attack_dataset`, the iterative ones with
      at most 2 steps and one restart) at ε 0 and the run's smallest ε > 0, on one batch of random samples
      (first call: traced) and then on a few more (about ``budget_gmac`` GMAC): their rate is ``attack_gmacs``,
      the first call's extra time ``attack_startup_s``; a distilled network also through its training temperature;
    * scoring: :func:`tfrobseg.experiment.scoring.volume_metrics` of a synthetic 16-slice volume at the input size;
    * reading: the data step of the model's first unit (:func:`~tfrobseg.experiment.runner.load_data`), per
      slice (not measured, 0, when ``settings.data_dir`` holds no prepared cohort).

    ``budget_gmac``: default 20 on a CPU, 2000 on a GPU; a 3D network's samples are patches
    (``settings.patch_shape``). Returns ``{model: Throughput}``.
    """
    from tfrobseg import models as model_registry
    from tfrobseg.losses import LOSS_NAMES
    from tfrobseg.parallel import configure_threads, process_map

    unknown = [m for m in models if m not in model_registry.model_names()]
    if unknown:
        raise ValueError(f"calibrate: unknown model(s) {', '.join(unknown)}; "
                         f"valid: {', '.join(model_registry.model_names())}")
    if loss not in LOSS_NAMES:
        raise ValueError(f"calibrate: unknown loss {loss!r}; valid: {', '.join(LOSS_NAMES)}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 2:
        raise ValueError(f"calibrate: epochs must be an int >= 2 (the first one is traced), got {epochs!r}")
    if budget_gmac is not None and not (math.isfinite(budget_gmac) and budget_gmac > 0):
        raise ValueError(f"calibrate: budget_gmac must be a number > 0, got {budget_gmac!r}")
    jobs = [(settings, model, loss, epochs, budget_gmac) for model in dict.fromkeys(models)]
    # The calibration's process computes as a unit's worker does (tfrobseg.experiment.grid.run_grid).
    results = process_map(_calibrate_model, jobs, workers=1, ordered=True, initializer=configure_threads,
                          initargs=(settings.threads, settings.deterministic))
    return {job[1]: throughput for job, throughput in results}


def _calibrate_model(job: tuple[Settings, str, str, int, float | None]) -> Throughput:
    import tensorflow as tf

    from tfrobseg.experiment.runner import volumetric
    from tfrobseg.models import traced_macs

    settings, model, loss, epochs, budget_gmac = job
    device = "GPU" if tf.config.list_logical_devices("GPU") else "CPU"
    budget = (budget_gmac or _BUDGET_GMAC[device]) * 1e9
    size = settings.image_size
    shape = (*(settings.patch_shape or (16, size, size)), 1) if volumetric(model) else (size, size, 1)
    macs = traced_macs(_build(settings, model, shape), shape)
    read = _time_reading(settings, model, loss)  # first, as in a unit
    gmacs, startup, trained = _time_training(settings, model, loss, shape, macs, epochs, budget)
    attack_gmacs, attack_startup = _time_attacks(settings, loss, trained, shape, macs, budget)
    return Throughput(gmacs=gmacs, startup_s=startup, source=f"calibrated on {socket.gethostname()}", device=device,
                      attack_gmacs=attack_gmacs, attack_startup_s=attack_startup,
                      score_s_per_mvoxel=_time_scoring(size), read_s_per_slice=read)


def _build(settings: Settings, model: str, shape: tuple[int, ...]) -> Any:
    from tfrobseg import models

    return models.build_model(model, input_shape=shape, filters=settings.filters, **_build_options(settings, model))


def _random_samples(n: int, shape: tuple[int, ...], seed: int) -> tuple[Any, Any]:
    """``n`` random images (z-scores) and masks with a blob of foreground, float32."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *shape)).astype("float32")
    grid = np.indices(shape[:-1]).astype("float32")
    centre = np.array(shape[:-1], "float32")[:, None] / 2
    radius = np.sum(((grid.reshape(len(shape) - 1, -1) - centre) / (np.array(shape[:-1])[:, None] / 5)) ** 2, axis=0)
    y = np.broadcast_to((radius < 1).reshape(1, *shape).astype("float32"), x.shape).copy()
    return x, y


def _time_training(settings: Settings, model: str, loss: str, shape: tuple[int, ...], macs: int, epochs: int,
                   budget: float) -> tuple[float, float, Any]:
    """``(GMAC/s, start-up seconds, the trained network)`` of :func:`tfrobseg.defenses.train_defended`."""
    import numpy as np
    import tensorflow as tf

    from tfrobseg.defenses import train_defended
    from tfrobseg.losses import SECOND_READER_LOSSES

    batch = settings.train.batch_size
    runs = training_passes(settings.defense)
    steps = min(_MAX_STEPS, max(_MIN_STEPS, round(budget / (sum(t for t, _ in runs) * macs * batch))))
    x, y = _random_samples((steps + 1) * batch, shape, settings.train.seed)
    if loss in SECOND_READER_LOSSES:  # the expert's and the second reader's masks
        y = np.concatenate([y, y], axis=-1)
    n_train = steps * batch
    train = tf.data.Dataset.from_tensor_slices((x[:n_train], y[:n_train])).batch(batch)
    val = tf.data.Dataset.from_tensor_slices((x[n_train:], y[n_train:])).batch(batch)
    config = dataclasses.replace(settings.train, max_epochs=epochs, early_stopping_patience=epochs)
    with tempfile.TemporaryDirectory(prefix="tfrobseg-calibrate-") as folder:
        t0 = time.perf_counter()
        result = train_defended(lambda: _build(settings, model, shape), settings.loss(loss), train, val,
                                defense=settings.defense, config=config, out_dir=folder, progress=False)
        call = time.perf_counter() - t0
    histories = [result.history] if result.teacher is None else [result.teacher.history, result.history]
    if any(len(h) != epochs for h in histories):
        raise RuntimeError(f"calibrate {model}: training stopped after {[len(h) for h in histories]} of {epochs} epochs")
    epoch_macs = [macs * (t * n_train + v * batch) for t, v in runs]
    steady = sum(float(h["seconds"].iloc[1:].sum()) for h in histories)
    rate = sum(epoch_macs) * (epochs - 1) / steady
    return rate / 1e9, max(0.0, call - epochs * sum(epoch_macs) / rate), result.model


def _time_attacks(settings: Settings, loss: str, model: Any, shape: tuple[int, ...], macs: int,
                  budget: float) -> tuple[float, float]:
    """``(GMAC/s, tracing seconds)`` of every attack the unit computes, through every view it attacks."""
    import tensorflow as tf

    from tfrobseg.attacks import attack_dataset
    from tfrobseg.attacks.precision import float32_copy
    from tfrobseg.attacks.runner import ATTACKS
    from tfrobseg.defenses import masking_views

    positive = sorted(e for e in settings.epsilons if e > 0)
    eps = [0.0, *positive[:1]]
    whole = len(shape) == 4  # 3D: one volume per call, as the runner attacks them
    batch = 1 if whole else settings.train.batch_size
    specs = [(s.name, _calibration_options(s.name, s.options)) for s in _attacks_of(settings)]
    per_batch = sum(attack_passes(name, options, eps) for name, options in specs) * macs * batch
    batches = min(_MAX_STEPS, max(_MIN_STEPS, round(budget / per_batch)))
    x, y = _random_samples(batches * batch, shape, settings.train.seed + 1)

    def dataset(n: int) -> Any:
        return tf.data.Dataset.from_tensor_slices({"image": x[:n], "mask": y[:n]}).batch(batch)

    views = [model, *(view for _, view in masking_views(model, settings.defense))]
    if settings.attack_precision == "float32":
        # attack_dataset would copy the network at every call (and trace the copy): copied once here, as a unit
        # copies it once per attack.
        views = [float32_copy(view) for view in views]
    attack_loss = settings.loss(settings.attack_loss_for(loss))
    first = steady = work = 0.0
    for view in views:
        for name, options in specs:
            seeded = {"seed": settings.train.seed} if "seed" in ATTACKS[name].options else {}
            call = functools.partial(attack_dataset, view, epsilons=eps, attack=name, loss=attack_loss,
                                     batch_size=batch, return_images=True, jit_compile=settings.train.xla,
                                     **seeded, **options)
            first += _consumed(call(dataset(batch)))
            steady += _consumed(call(dataset(batches * batch)))
            work += attack_passes(name, options, eps) * macs * batches * batch
    rate = work / steady
    return rate / 1e9, max(0.0, first - steady / batches)


def _consumed(results: Any) -> float:
    """Seconds to draw every result of an attack stream (the attack runs as it is drawn)."""
    t0 = time.perf_counter()
    for _ in results:
        pass
    return time.perf_counter() - t0


def _calibration_options(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The attack's options with at most :data:`_CALIBRATION_STEPS` steps and one restart (for a noise control,
    those of the attack it is matched to): the traced functions are the same, the calibration shorter."""
    from tfrobseg.attacks.runner import DEFAULT_MATCH

    iterative = options.get("match", DEFAULT_MATCH) if name in ("gaussian", "rician") else name
    functions = _gradient_attacks()
    capped = {k: v for k, v in options.items() if k != "restarts"}
    if iterative in functions:
        steps = int(options.get("steps", _default(functions[iterative], "steps")))
        capped["steps"] = min(steps, _CALIBRATION_STEPS)
    return capped


def _time_reading(settings: Settings, model: str, loss: str) -> float:
    """Seconds per slice of a unit's data step (:func:`~tfrobseg.experiment.runner.load_data`: its records
    verified, read and resampled into memory), timed on the first unit of ``model`` (crossval fold 0, or the
    hold-out unit without folds or with a split file); 0 when ``settings.data_dir`` holds no prepared cohort."""
    from tfrobseg.dataset.manifest import MANIFEST_NAME
    from tfrobseg.experiment.runner import load_data

    if not (Path(settings.data_dir) / MANIFEST_NAME).is_file():
        return 0.0
    manifest = Manifest.read(settings.data_dir)
    folds = manifest.n_folds > 0 and not settings.split_file
    unit = Unit("crossval", model, loss, 0) if folds else Unit("holdout", model, loss, None)
    t0 = time.perf_counter()
    patients = load_data(unit, settings).patients
    seconds = time.perf_counter() - t0
    return seconds / sum(manifest.entry(p, settings.data_dir).n_slices for p in {*patients.train, *patients.val,
                                                                                  *patients.eval})


def _time_scoring(size: int) -> float:
    """Seconds per million voxels of :func:`~tfrobseg.experiment.scoring.volume_metrics` (with the image-quality
    measures, as the runner scores) on a 16-slice volume with an ellipsoid gland and a shifted prediction."""
    import numpy as np

    from tfrobseg.experiment.scoring import PatientVolume, volume_metrics

    z, y, x = np.indices((_SCORED_DEPTH, size, size), dtype="float32")
    centre = np.array([_SCORED_DEPTH, size, size], "float32") / 2

    def ellipsoid(shift: float) -> Any:
        return (((z - centre[0]) / (_SCORED_DEPTH / 3)) ** 2 + ((y - centre[1] - shift) / (size / 5)) ** 2
                + ((x - centre[2]) / (size / 4)) ** 2) < 1

    image = np.random.default_rng(0).normal(size=z.shape).astype("float32")
    volume = PatientVolume("calibration", np.arange(_SCORED_DEPTH), image, ellipsoid(0.0), (3.0, 0.5, 0.5))
    prediction, attacked = ellipsoid(size / 50), image + 0.1
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        volume_metrics(prediction, volume, attacked)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) / (image.size / 1e6)
