"""What a run is made with: :class:`Settings` (fingerprinted as a whole) and how the options resolve.

An option the user gives always wins; otherwise the built-in preset's value when the built-in
synthetic cohort is used, else the study's protocol (:mod:`tfrobseg.study`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tfrobseg import study
from tfrobseg.dataset.manifest import MANIFEST_NAME, Manifest
from tfrobseg.defenses.config import (
    DefenseConfig,
    parse_defense_options,
    parse_key_values,
    resolve_defense,
)
from tfrobseg.errors import OptionError
from tfrobseg.io import file_hash
from tfrobseg.training.config import (
    TrainConfig,
    default_precision,
    resolve_strategy,
    tf_config_workers,
)

__all__ = ["BUILTIN_DATA", "BUILTIN_PRESET", "Settings", "default_out_dir", "default_threads",
           "resolve_attack_options", "resolve_data", "resolve_defense_options", "resolve_settings"]

BUILTIN_DATA = Path("data/builtin")
#: Random patches drawn per training volume and epoch for a 3D network (half of them on the foreground).
PATCHES_PER_VOLUME = 4
#: The key under which tfrobseg before issue 13 identified the data (the manifest file's SHA-256).
LEGACY_DATA_KEY = "manifest_sha256"

# Defaults the built-in synthetic cohort sets when the user does not choose: sized so that the
# main command (one model, 6 losses x 3 folds = 18 units, 11 eps) finishes within 20 minutes on a
# 2-core CPU with networks that segment before they are attacked (docs/protocol.md#main-command has
# the measurements). What is scaled and why:
# * the study's epoch is ~475 steps (95 patients x ~20 slices / 4), the preset's ~50 (183-211 slices):
#   batch-norm moving statistics with Keras' momentum 0.99 average over ~100 steps, 0.2 of the
#   study's epoch but 2 of ours, so at inference the networks used statistics of weights long gone
#   (U-Net, 64 px, 3 epochs: held-out Dice 0.26 at inference vs 0.64 with batch statistics); 0.9
#   (~10 steps) is the study's 0.2 epoch again;
# * an output prior of 0.05 (the gland covers ~5 % of a slice) instead of a start at 0.5 everywhere;
# * a learning rate of 1e-3: at 1e-4 the networks do not leave the initial state in a few hundred steps;
# * 48 px images (2.7 mm pixels) and filters 8..128 for time; the plateau schedule (patience 2,
#   halving) and early stopping (patience 10) keep the study's values.
BUILTIN_PRESET: dict[str, Any] = {
    "max_epochs": 12,
    "learning_rate": 1e-3,
    "filters": (8, 16, 32, 64, 128),
    "image_size": 48,
    "early_stopping_patience": 10,
    "batch_norm_momentum": 0.9,
    "output_prior": 0.05,
    "jobs": 2,
}


@dataclass
class Settings:
    """Everything that changes a unit's numbers (fingerprinted into ``run.json``).

    ``train`` is the whole training configuration; the rest says which data, which attacks and
    which network size, and how a unit's process computes. ``attack`` is the attack name, or the comma
    list of the attacks every unit evaluates (the first one makes Tables I–IV); ``attack_options`` the
    attack options chosen on the command line (``{"steps": 20}``) and ``ensemble_members`` the members of
    the ``ensemble`` when it is chosen (:func:`~tfrobseg.experiment.attacks.resolve_attacks` turns the three
    into :class:`~tfrobseg.experiment.attacks.AttackSpec`); empty, they are left out of the fingerprint,
    so a folder made before they existed (the study's FGSM) takes a re-run with the default options.
    How a unit's process computes: ``threads`` (TensorFlow's intra- and
    inter-op pools; on a CPU their size changes the rounding of convolutions, measured: 0.04 max
    weight difference after 8 steps of a Recurrent U-Net with 1 vs 2 threads), ``deterministic``
    (``tf.config.experimental.enable_op_determinism``) and ``replicas`` (the distribution
    strategy's replica count, which changes the per-replica batch). ``defense``: how every network of the
    run is trained (:mod:`tfrobseg.defenses`), ``None`` for ordinary training (then left out of the
    fingerprint, so folders made before defenses existed keep theirs). ``loss_options``: keyword arguments
    of the named losses (``{"tversky": {"alpha": 0.7, "beta": 0.3}}``), wherever the run uses that loss (training
    and attack); empty, left out of the fingerprint. ``model_options``: the named models' own options
    (``{"unet_efficientnet": {"variant": "b7", "weights": "imagenet"}}``, :func:`tfrobseg.models.model_options`);
    empty, left out of the fingerprint. ``patch_shape`` (D, H, W) and ``patches_per_volume``: how
    the run's 3D networks train (random patches, :func:`tfrobseg.dataset.volumes.patch_dataset`); ``None`` when
    the run has none (then both are left out of the fingerprint).
    """

    data_dir: str
    data_fingerprint: str  # Manifest.content_hash(): the prepared data's content, not the manifest file
    split_file: str | None
    split_sha256: str | None
    epsilons: tuple[float, ...]
    attack: str
    attack_loss: str
    filters: tuple[int, ...]
    image_size: int
    train: TrainConfig
    threshold: float = study.THRESHOLD
    preset: str | None = None
    attack_precision: str = "model"
    threads: int = 1
    deterministic: bool = False
    replicas: int = 1
    attack_options: dict[str, Any] = field(default_factory=dict)
    ensemble_members: tuple[str, ...] = ()
    defense: DefenseConfig | None = None
    loss_options: dict[str, dict[str, float]] = field(default_factory=dict)
    model_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    patch_shape: tuple[int, int, int] | None = None
    patches_per_volume: int = PATCHES_PER_VOLUME

    def to_json(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["train"] = self.train.to_dict()
        d["defense"] = self.defense.to_json() if self.defense is not None else None
        return json.loads(json.dumps(d))  # tuples -> lists, as read back

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Settings:
        d = dict(d)
        if LEGACY_DATA_KEY in d:
            # Written before the data fingerprint: the hash of the manifest file (timestamps included).
            d["data_fingerprint"] = f"{LEGACY_DATA_KEY}:{d.pop(LEGACY_DATA_KEY)}"
        d["train"] = TrainConfig.from_dict(d["train"])
        d["epsilons"] = tuple(float(e) for e in d["epsilons"])
        d["filters"] = tuple(int(f) for f in d["filters"])
        d["ensemble_members"] = tuple(d.get("ensemble_members", ()))
        d["defense"] = DefenseConfig.from_json(d["defense"]) if d.get("defense") else None
        d["loss_options"] = {name: dict(options) for name, options in d.get("loss_options", {}).items()}
        d["model_options"] = {name: dict(options) for name, options in d.get("model_options", {}).items()}
        d["patch_shape"] = tuple(int(n) for n in d["patch_shape"]) if d.get("patch_shape") else None
        return cls(**d)

    def fingerprint(self) -> dict[str, Any]:
        """The settings that must agree for two runs to share a results folder."""
        d = self.to_json()
        d["data_dir"] = os.path.abspath(d["data_dir"])  # the data fingerprint identifies the content
        d.pop("split_file")  # its hash identifies the split
        for name in ("attack_options", "ensemble_members", "defense", "loss_options", "model_options"):  # absent: same
            if not d[name]:
                d.pop(name)
        if d["patch_shape"] is None:  # no 3D network in the run: the 3D data path's settings mean nothing
            d.pop("patch_shape")
            d.pop("patches_per_volume")
        return d

    def evaluated_attacks(self) -> tuple[str, ...]:
        """The attacks whose rows each unit writes, in ``metrics.csv``'s order: the chosen ones, then the
        ensemble's members not chosen themselves (no TensorFlow; :func:`~tfrobseg.experiment.attacks.evaluation_order`)."""
        return tuple(dict.fromkeys([*(a for a in self.attack.split(",") if a), *self.ensemble_members]))

    def attack_specs(self) -> list[Any]:
        """The chosen attacks as validated :class:`~tfrobseg.experiment.attacks.AttackSpec` (imports TensorFlow)."""
        from tfrobseg.experiment.attacks import resolve_attacks

        return resolve_attacks(self.attack, self.attack_options, self.ensemble_members or None)

    def attack_loss_for(self, training_loss: str) -> str:
        """The loss the attack differentiates: the unit's training loss unless one was chosen."""
        return training_loss if self.attack_loss == "same" else self.attack_loss

    def loss(self, name: str) -> Any:
        """The loss ``name`` with the run's options for it (``--loss-option``), for training and attacks alike."""
        from tfrobseg.losses import get_loss

        return get_loss(name, **self.loss_options.get(name, {}))


def resolve_data(data: str | None) -> tuple[Path, str | None]:
    """``(data folder, preset)``: ``--data`` as given (preset ``None``), or the built-in cohort.

    Without ``--data`` the built-in synthetic cohort in :data:`BUILTIN_DATA` (relative to the
    working directory) is used with the ``"builtin"`` preset, and prepared first when absent or
    unreadable (e.g. prepared by an older tfrobseg).
    """
    if data is not None:
        data_dir = Path(data)
        if not (data_dir / MANIFEST_NAME).exists():
            raise OptionError(f"--data {data_dir}: no {MANIFEST_NAME} (prepare it with data_prep/prostatex.py)")
        return data_dir, None
    data_dir = BUILTIN_DATA
    if (data_dir / MANIFEST_NAME).exists():
        try:
            Manifest.read(data_dir)
        except ValueError as exc:  # e.g. prepared by an older tfrobseg (another data format)
            print(f"{exc}: preparing the built-in synthetic cohort again ...", flush=True)
        else:
            print(f"Using the built-in synthetic cohort in {data_dir}.", flush=True)
            return data_dir, "builtin"
    else:
        print(f"No --data given and no prepared cohort at {data_dir}: preparing the built-in synthetic "
              "cohort (tfrobseg.dataset.synthetic.prepare_builtin) ...", flush=True)
    from tfrobseg.dataset.synthetic import prepare_builtin

    t0 = time.perf_counter()
    prepare_builtin(str(data_dir), workers=min(2, os.cpu_count() or 1))
    print(f"Built-in cohort ready in {data_dir} ({time.perf_counter() - t0:.0f} s).", flush=True)
    return data_dir, "builtin"


def _none(value: Any) -> Any:
    """``--option none`` (the option off, whatever the preset says) as ``None``."""
    return None if value == "none" else value


def default_threads(preset: str | None) -> int:
    """Threads per unit when ``--threads`` is not given: this machine's cores over the *default*
    number of units at once (the preset's 2, else 1), never over ``--jobs``, so that changing
    ``--jobs`` (e.g. on a resume) does not change a unit's numbers."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // (BUILTIN_PRESET["jobs"] if preset else 1))


def default_out_dir(out: str | None, data_dir: Path, preset: str | None) -> Path:
    """``--out``, else ``results/builtin`` for the built-in cohort or ``results/<data folder name>``."""
    if out:
        return Path(out)
    return Path("results") / ("builtin" if preset else data_dir.name)


def resolve_attack_options(args: Any) -> tuple[str, dict[str, Any], tuple[str, ...]]:
    """``(attack, attack_options, ensemble_members)`` of :class:`Settings` from the parsed options, validated
    (:func:`~tfrobseg.experiment.attacks.resolve_attacks`; OptionError naming the flag): the chosen names as a
    comma list, the attack options given, and the ensemble's members when it is chosen (its default members
    written out, so that a later change of the default does not change what a folder's runs mean)."""
    from tfrobseg.experiment.attacks import ENSEMBLE, given_options, resolve_attacks

    options = given_options(args)
    try:
        specs = resolve_attacks(args.attack, options, getattr(args, "ensemble_members", None))
    except ValueError as exc:
        raise OptionError(str(exc)) from None
    members = next((tuple(m.name for m in s.members) for s in specs if s.name == ENSEMBLE), ())
    return ",".join(s.name for s in specs), options, members


def resolve_defense_options(args: Any) -> DefenseConfig | None:
    """The run's defense from ``--defense`` / ``--defense-option`` (validated; OptionError naming the option),
    ``None`` without ``--defense``."""
    name = getattr(args, "defense", None)
    items = getattr(args, "defense_option", None)
    if name is None:
        if items:
            raise OptionError("--defense-option needs --defense")
        return None
    try:
        return resolve_defense(name, parse_defense_options(items))
    except ValueError as exc:
        raise OptionError(str(exc)) from None


def resolve_patch_shape(text: str | None, volumetric: bool, image_size: int) -> tuple[int, int, int] | None:
    """The training patch of the run's 3D networks: ``--patch-shape D,H,W``, by default 16 slices of the whole
    in-plane field (a third to a half of a prostate volume's 3 mm slices, so that a patch holds gland and
    its surroundings); ``None`` without a 3D network (OptionError for ``--patch-shape`` then)."""
    if not volumetric:
        if text is not None:
            raise OptionError("--patch-shape is for 3D networks (e.g. --model unet_3d); the run has none")
        return None
    if text is None:
        return (16, image_size, image_size)
    try:
        shape = tuple(int(v) for v in str(text).split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise OptionError(f"--patch-shape {text!r}: expected three positive integers D,H,W, e.g. 16,64,64")
    return shape  # type: ignore[return-value]


def _option_value(text: str) -> Any:
    """A ``--model-option`` value: an int, a float, ``none`` (None), ``true`` / ``false``, else the text."""
    lowered = text.strip().lower()
    if lowered in ("none", "true", "false"):
        return {"none": None, "true": True, "false": False}[lowered]
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.strip()


def resolve_model_options(items: Any, names: Any) -> dict[str, dict[str, Any]]:
    """``--model-option MODEL.KEY=VALUE`` values as options per model (OptionError naming the item: a model not
    in the run, an option it does not take; the values themselves are checked when the models are built before
    any work, :func:`tfrobseg.experiment.preflight.check_models`)."""
    from tfrobseg.models import model_options

    options: dict[str, dict[str, Any]] = {}
    for item in items or ():
        name, dot, rest = str(item).partition(".")
        key, eq, value = rest.partition("=")
        if not dot or not eq or not key.strip():
            raise OptionError(f"--model-option {item!r}: expected MODEL.KEY=VALUE, e.g. unet_efficientnet.variant=b7")
        if name not in names:
            raise OptionError(f"--model-option {item}: {name!r} is not a model of this run ({', '.join(names)})")
        taken = model_options(name)
        if key.strip() not in taken:
            raise OptionError(f"--model-option {item}: {name} takes {', '.join(taken) or 'no option'}")
        options.setdefault(name, {})[key.strip()] = _option_value(value)
    return options


def resolve_loss_options(items: Any, names: Any) -> dict[str, dict[str, float]]:
    """``--loss-option LOSS.KEY=VALUE`` values as options per loss, each loss built once with them to check them
    (OptionError naming the item: a loss not chosen, an option it does not take, a bad value)."""
    from tfrobseg.losses import get_loss

    per: dict[str, list[str]] = {}
    for item in items or ():
        name, dot, rest = str(item).partition(".")
        if not dot or "=" not in rest:
            raise OptionError(f"--loss-option {item!r}: expected LOSS.KEY=VALUE, e.g. tversky.alpha=0.7")
        if name not in names:
            raise OptionError(f"--loss-option {item}: {name!r} is not a loss of this run ({', '.join(names)})")
        per.setdefault(name, []).append(rest)
    options = {}
    for name, values in per.items():
        try:
            options[name] = parse_key_values(values, f"--loss-option {name}.")
            get_loss(name, **options[name])
        except (TypeError, ValueError) as exc:
            raise OptionError(f"--loss-option {name}: {' '.join(str(exc).split())}") from None
    return options


def resolve_settings(args: Any, data_dir: Path, preset: str | None, *, gpus: int,
                     loss_names: Any = (), model_names: Any = (), volumetric: bool = False) -> tuple[Settings, int]:
    """The run's :class:`Settings` and job count from the parsed options (``argparse.Namespace``).

    ``loss_names`` / ``model_names``: the run's losses and models, the only ones ``--loss-option`` /
    ``--model-option`` may name; ``volumetric``: whether the run
    trains a 3D network (then ``--patch-shape`` is resolved). ``gpus``: GPUs visible on this machine. XLA defaults to on, except for the preset on a machine
    without a GPU (compiling a train step costs more than it saves there). ``--strategy auto`` is
    resolved here (:func:`~tfrobseg.training.config.resolve_strategy`), so that the strategy and its
    replica count are part of the fingerprint.
    """
    has_gpu = gpus > 0
    def pick(value: Any, key: str, study_value: Any) -> Any:
        if value is not None:
            return value
        return BUILTIN_PRESET[key] if preset else study_value

    if args.batch_size < 1 or (args.max_epochs is not None and args.max_epochs < 1) \
            or (args.image_size is not None and args.image_size < 16) or (args.threads is not None and args.threads < 1):
        raise OptionError("--batch-size, --max-epochs and --threads must be >= 1, --image-size >= 16")
    attack, options, members = resolve_attack_options(args)
    split_file = getattr(args, "split", None)
    if split_file and not Path(split_file).is_file():
        raise OptionError(f"--split {split_file}: no such file (a JSON file with train/val/test patient lists)")
    manifest = Manifest.read(data_dir)
    image_size = int(pick(args.image_size, "image_size", manifest.image_size))
    xla = args.xla if args.xla is not None else not (preset and not has_gpu)
    try:
        strategy, replicas = resolve_strategy(args.strategy, gpus, tf_config_workers())
        train = TrainConfig(
            learning_rate=pick(args.learning_rate, "learning_rate", study.LEARNING_RATE),
            batch_size=args.batch_size,
            max_epochs=pick(args.max_epochs, "max_epochs", study.MAX_EPOCHS),
            early_stopping_patience=pick(args.early_stopping_patience, "early_stopping_patience",
                                         study.EARLY_STOPPING_PATIENCE),
            batch_norm_momentum=_none(pick(args.batch_norm_momentum, "batch_norm_momentum", None)),
            output_prior=_none(pick(args.output_prior, "output_prior", None)),
            precision=args.precision or default_precision(has_gpu),
            xla=bool(xla),
            strategy=strategy,
            seed=args.seed,
        )
    except ValueError as exc:  # TrainConfig's own checks, reported as a bad option
        raise OptionError(str(exc)) from None
    settings = Settings(
        data_dir=str(data_dir),
        data_fingerprint=manifest.content_hash(),
        split_file=split_file,
        split_sha256=file_hash(split_file) if split_file else None,
        epsilons=tuple(sorted({0.0, *args.epsilons})),
        attack=attack,
        attack_loss=args.attack_loss,
        filters=tuple(pick(args.filters, "filters", study.FILTERS)),
        image_size=image_size,
        train=train,
        preset=preset,
        attack_precision=args.attack_precision,
        threads=args.threads or default_threads(preset),
        deterministic=bool(args.deterministic),
        replicas=replicas,
        attack_options=options,
        ensemble_members=members,
        defense=resolve_defense_options(args),
        loss_options=resolve_loss_options(getattr(args, "loss_option", None), loss_names),
        model_options=resolve_model_options(getattr(args, "model_option", None), model_names),
        patch_shape=resolve_patch_shape(getattr(args, "patch_shape", None), volumetric, image_size),
    )
    return settings, int(pick(args.jobs, "jobs", 1))
