"""One unit of the study, in four steps: data → train → attack and score → record.

* data: the unit's patients (:func:`~tfrobseg.experiment.units.unit_patients`), their records verified
  (:func:`tfrobseg.dataset.integrity.verify_records`), as ``tf.data`` datasets at the run's input size;
* train: :func:`tfrobseg.defenses.train_defended` (:func:`tfrobseg.training.train_model`, under the run's
  defense when it has one) with the run's :class:`~tfrobseg.training.TrainConfig` (early stopping on the
  validation split), writing ``best.keras`` and ``history.csv`` (and a distilled network's teacher in ``teacher/``);
* attack and score: every slice of the evaluation patients at every ε with every chosen attack
  (:func:`tfrobseg.attacks.attack_dataset`; the ensemble from its members' rows; a distilled network also
  through its training temperature, :mod:`tfrobseg.defenses.masking`), each patient scored in 3D
  (:mod:`tfrobseg.experiment.scoring`, :class:`Evaluation`, shared with ``experiments/attack.py``);
* record: ``metrics.csv`` (one row per attack × patient × ε), ``config.json``
  (:class:`~tfrobseg.experiment.units.UnitRecord`) and, last, the completion marker.

No mid-training resume: a unit is short next to a run, and restarting an interrupted unit from
scratch keeps the seeded result identical to an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tfrobseg.dataset.manifest import Manifest
from tfrobseg.errors import RecordError
from tfrobseg.experiment import store
from tfrobseg.experiment.attacks import AttackSpec, evaluation_order
from tfrobseg.experiment.settings import Settings
from tfrobseg.experiment.units import (
    Unit,
    UnitPatients,
    UnitRecord,
    load_split,
    unit_patients,
)
from tfrobseg.io import atomic_write_csv, environment_versions

__all__ = ["Evaluation", "ensemble_rows", "eval_dataset", "run_unit", "score_attacks", "tidy_columns"]


@dataclass
class UnitData:
    """A unit's datasets: ``(x, y)`` batches to train and validate on, slice dicts to attack."""

    patients: UnitPatients
    train: Any
    val: Any | None
    eval: Any


def load_data(unit: Unit, settings: Settings) -> UnitData:
    """Step 1: the unit's patients, their records verified (a truncated or changed file stops the unit
    before training, naming the patient and the file), and their datasets."""
    from tfrobseg.dataset.integrity import verify_records
    from tfrobseg.losses import SECOND_READER_LOSSES

    split = load_split(settings.split_file) if settings.split_file else None
    manifest = Manifest.read(settings.data_dir)
    patients = unit_patients(unit, manifest, split)
    if not patients.train or not patients.eval:
        raise ValueError(f"unit {unit.uid}: empty training ({len(patients.train)}) or evaluation "
                         f"({len(patients.eval)}) set")
    verify_records(settings.data_dir, sorted({*patients.train, *patients.val, *patients.eval}), manifest=manifest)
    second_reader = unit.loss in SECOND_READER_LOSSES
    with _reading(unit, settings, patients):  # the slices are read here, once (unit_datasets caches them)
        if volumetric(unit.model):
            if second_reader:
                raise ValueError(f"unit {unit.uid}: the 3D data path has no second-reader targets for {unit.loss}")
            return volume_datasets(settings, patients)
        return unit_datasets(settings, patients, second_reader=second_reader)


def volumetric(model: str) -> bool:
    """Whether ``model`` is a 3D network (it takes volumes ``(D, H, W, 1)``: :func:`volume_datasets`)."""
    from tfrobseg import models

    return model in models.model_names(spatial_rank=3)


def pooling_multiple(settings: Settings) -> int:
    """What every size a run's networks take must be a multiple of: 2^(levels - 1)."""
    return 2 ** (len(settings.filters) - 1)


def volume_datasets(settings: Settings, patients: UnitPatients) -> UnitData:
    """A 3D network's datasets: random training patches (:attr:`Settings.patch_shape`, seeded; half of them on the
    gland), whole validation volumes and whole evaluation volumes, padded with zeros after their
    last slice, row and column to one shape (:func:`common_padding`). The volumes are the slices of
    the 2D path stacked (:func:`tfrobseg.dataset.volumes.load_volumes`): same resampling, same spacing."""
    from tfrobseg.dataset.volumes import load_volumes, patch_dataset, volume_dataset

    train = patch_dataset(load_volumes(settings.data_dir, patients.train, image_size=settings.image_size),
                          settings.patch_shape, batch_size=settings.train.batch_size, seed=settings.train.seed,
                          samples_per_volume=settings.patches_per_volume)
    val = None
    if patients.val:
        volumes = load_volumes(settings.data_dir, patients.val, image_size=settings.image_size)
        val = volume_dataset(volumes, multiple=common_padding(volumes, settings)).map(lambda e: (e["image"], e["mask"]))
    return UnitData(patients, train, val, eval_dataset(settings, patients.eval, volumes=True))


def common_padding(volumes: Sequence[Any], settings: Settings) -> tuple[int, int, int]:
    """The ``multiple`` of :func:`~tfrobseg.dataset.volumes.volume_dataset` that pads every one of ``volumes`` to
    one shape: the deepest one's depth rounded up to :func:`pooling_multiple`, so that the network and the
    attack are traced once for all of them (each depth would trace them again), in-plane the multiple itself."""
    multiple = pooling_multiple(settings)
    return padded_depth([v.shape[0] for v in volumes], multiple), multiple, multiple


def padded_depth(depths: Sequence[int], multiple: int) -> int:
    """The depth volumes of ``depths`` slices are padded to together: the deepest rounded up to ``multiple``."""
    return max(-(-depth // multiple) * multiple for depth in depths)


def record_files(settings: Settings, patient_ids: list[str]) -> dict[str, tuple[Path, int]]:
    """Each patient's record file and slice count, as the manifest of the run's data lists them."""
    manifest = Manifest.read(settings.data_dir)
    entries = {pid: manifest.entry(pid, settings.data_dir) for pid in patient_ids}
    return {pid: (Path(settings.data_dir) / e.record, e.n_slices) for pid, e in entries.items() if e.labelled}


def unit_datasets(settings: Settings, patients: UnitPatients, *, second_reader: bool = False) -> UnitData:
    """Training batches shuffled (seeded), validation and evaluation in patient and slice order.

    ``second_reader``: the training and validation targets hold both readers' masks (expert, second reader:
    :func:`~tfrobseg.dataset.pipeline.to_xy`), as the annotation-guided losses
    (:data:`tfrobseg.losses.SECOND_READER_LOSSES`) take them; the attacked slices keep their dicts.

    The slices are read, parsed and resized once, into memory (``make_dataset(cache=True)``): the same
    batches, in the same orders, as streamed from the records every epoch. Keras's ``fit`` nevertheless
    trains on other permutations than before issue 14 from the second epoch on: it makes an extra
    iterator at the end of each epoch of a dataset whose length is known, as a cached dataset's is.
    Not cached under the multi-worker strategy: its auto-sharding rewrites the dataset's serialized
    graph, and a cached dataset's graph carries the arrays (3.0 MB for 2.9 MB of slices, 16 kB
    streamed; a graph is limited to 2 GB).
    """
    from tfrobseg.dataset.pipeline import make_dataset, to_xy

    cache = settings.train.strategy != "multiworker"
    xy = functools.partial(to_xy, second_reader=second_reader)

    def dataset(ids: list[str], shuffle: bool) -> Any:
        return make_dataset(settings.data_dir, ids, batch_size=settings.train.batch_size, shuffle=shuffle,
                            seed=settings.train.seed, image_size=settings.image_size, cache=cache)

    val = dataset(patients.val, False).map(xy) if patients.val else None
    return UnitData(patients, dataset(patients.train, True).map(xy), val, eval_dataset(settings, patients.eval))


def train(unit: Unit, settings: Settings, data: UnitData, unit_dir: Path, progress: bool, position: int) -> Any:
    """Step 2: build and fit the unit's network; returns the :class:`~tfrobseg.training.TrainResult`."""
    from tfrobseg import models
    from tfrobseg.defenses import train_defended

    # A 3D network trains on patches and is evaluated on whole (padded) volumes of other depths.
    shape = (None, None, None, 1) if volumetric(unit.model) else (settings.image_size, settings.image_size, 1)
    loss_options = tuple(sorted(settings.loss_options.get(unit.loss, {}).items()))
    return train_defended(
        lambda: models.build_model(unit.model, input_shape=shape, filters=settings.filters,
                                   **settings.model_options.get(unit.model, {})),
        settings.loss(unit.loss), data.train, data.val, defense=settings.defense, config=settings.train, out_dir=unit_dir,
        progress=progress, desc=f"train {unit.uid}", position=position,
        # Units of one model and loss (the folds) share the graph: traced once per worker process.
        reuse_key=(unit.model, shape, settings.filters, unit.loss, loss_options,
                   tuple(sorted(settings.model_options.get(unit.model, {}).items()))),
    )


def eval_dataset(settings: Settings, patients: list[str], *, volumes: bool = False) -> Any:
    """The slices of the evaluation ``patients``, in patient and slice order, at the run's input size: what
    a unit attacks (here and in ``experiments/attack.py``). Cached in memory as :func:`unit_datasets` says.
    ``volumes``: for a 3D network, their whole volumes instead, padded to one shape (:func:`common_padding`)."""
    from tfrobseg.dataset.pipeline import make_dataset

    if volumes:
        from tfrobseg.dataset.volumes import load_volumes, volume_dataset

        loaded = load_volumes(settings.data_dir, patients, image_size=settings.image_size)
        return volume_dataset(loaded, multiple=common_padding(loaded, settings))

    return make_dataset(settings.data_dir, patients, batch_size=settings.train.batch_size, shuffle=False,
                        seed=settings.train.seed, image_size=settings.image_size,
                        cache=settings.train.strategy != "multiworker")


def tidy_columns(unit: Unit, spec: AttackSpec, attack_loss: str) -> dict[str, Any]:
    """The constant columns of a unit's rows for one attack (the tidy format: docs/protocol.md)."""
    return {"phase": unit.phase, "model": unit.model, "loss": unit.loss, "fold": -1 if unit.fold is None else unit.fold,
            "attack": spec.name, "attack_loss": attack_loss, "attack_params": spec.attack_params, "worst_attack": ""}


@dataclass
class Evaluation:
    """A unit's trained model and its evaluation slices: what each of its attacks is scored against, by the
    unit runner and by ``experiments/attack.py`` alike (:meth:`score`, :func:`ensemble_rows`)."""

    unit: Unit
    settings: Settings
    model: Any
    dataset: Any  # eval_dataset
    volumes: dict[str, Any]  # tfrobseg.experiment.scoring.PatientVolume by patient
    progress: bool = True
    position: int = 0

    @classmethod
    def of(cls, unit: Unit, settings: Settings, model: Any, dataset: Any, patients: list[str], *, progress: bool = True,
           position: int = 0) -> Evaluation:
        """Read the patients' clean volumes once (a patient with a missing slice is a RecordError naming it)."""
        from tfrobseg.experiment.scoring import load_volumes

        volumes = load_volumes(dataset, expected=record_files(settings, patients))
        return cls(unit, settings, model, dataset, volumes, progress, position)

    def score(self, spec: AttackSpec, *, epsilons: Sequence[float], attack_loss: str, batch_size: int) -> pd.DataFrame:
        """Attack every slice at every ε with one attack (not the ensemble) and score each patient in 3D."""
        from tfrobseg.attacks import attack_dataset
        from tfrobseg.experiment.scoring import evaluate_attack_stream, iter_with_count

        if spec.is_ensemble:
            raise ValueError("the ensemble is scored from its members' rows: ensemble_rows")
        from tfrobseg.attacks.runner import ATTACKS

        settings = self.settings
        whole = volumetric(self.unit.model)  # one attack per whole volume, volumes of different depths: one a batch
        total = (len(self.volumes) if whole else sum(v.n_slices for v in self.volumes.values())) * len(epsilons)
        # The random attacks (random starts, restarts, noise) draw from the run's seed, as training does.
        seeded = {"seed": settings.train.seed} if "seed" in ATTACKS[spec.name].options else {}
        stream = attack_dataset(self.model, self.dataset, list(epsilons), attack=spec.name, loss=settings.loss(attack_loss),
                                batch_size=1 if whole else batch_size, return_images=True, jit_compile=settings.train.xla,
                                attack_precision=settings.attack_precision, **seeded, **spec.options)
        counted = iter_with_count(stream, total, f"{spec.name} {self.unit.uid}", self.progress, self.position,
                                  unit="volume" if whole else "slice")
        return evaluate_attack_stream(counted, self.volumes, threshold=settings.threshold,
                                      extra=tidy_columns(self.unit, spec, attack_loss))


def ensemble_rows(spec: AttackSpec, members: Mapping[AttackSpec, pd.DataFrame]) -> pd.DataFrame:
    """The ensemble's rows from its members' (:func:`tfrobseg.attacks.ensemble.worst_case`): per case the
    member row with the lowest Dice, ``attack_params`` the members' list."""
    from tfrobseg.attacks.ensemble import worst_case

    rows = pd.concat([members[m] for m in spec.members], ignore_index=True)
    worst = worst_case(rows, [m.name for m in spec.members])
    if worst["attack_params"].iloc[0] != spec.attack_params:  # the rows are those of other member options
        raise ValueError(f"ensemble rows made from members {worst['attack_params'].iloc[0]}, not {spec.attack_params}")
    return worst


def score_attacks(evaluation: Evaluation, chosen: Sequence[AttackSpec], *, epsilons: Sequence[float],
                  attack_loss: str, batch_size: int) -> pd.DataFrame:
    """The rows of every chosen attack, in :func:`~tfrobseg.experiment.attacks.evaluation_order` (the
    chosen ones first, then the ensemble members not chosen): each attack computed once, the ensemble
    reduced from its members' rows."""
    done: dict[AttackSpec, pd.DataFrame] = {}

    def rows(spec: AttackSpec) -> pd.DataFrame:
        if spec not in done:
            done[spec] = (ensemble_rows(spec, {m: rows(m) for m in spec.members}) if spec.is_ensemble
                          else evaluation.score(spec, epsilons=epsilons, attack_loss=attack_loss,
                                                batch_size=batch_size))
        return done[spec]

    return pd.concat([rows(spec) for spec in evaluation_order(chosen)], ignore_index=True)


def attack_and_score(unit: Unit, settings: Settings, model: Any, eval_ds: Any, patients: list[str], progress: bool,
                     position: int) -> pd.DataFrame:
    """Step 3: attack every evaluation slice at every ε with every chosen attack, and score each patient in 3D."""
    evaluation = Evaluation.of(unit, settings, model, eval_ds, patients, progress=progress, position=position)
    scored = {"epsilons": settings.epsilons, "attack_loss": settings.attack_loss_for(unit.loss),
              "batch_size": settings.train.batch_size}
    rows = [score_attacks(evaluation, settings.attack_specs(), **scored)]
    if settings.defense is not None:
        from tfrobseg.defenses import masking_views
        from tfrobseg.defenses.masking import with_view

        # The gradient-masking check: the same attacks through the network at its training temperature.
        for view, view_model in masking_views(model, settings.defense):
            checked = score_attacks(dataclasses.replace(evaluation, model=view_model), settings.attack_specs(),
                                    **scored)
            checked["attack_params"] = checked["attack_params"].map(lambda p, t=view["temperature"]: with_view(p, t))
            rows.append(checked)
    return pd.concat(rows, ignore_index=True)


def record(unit: Unit, settings: Settings, out_dir: Path, data: UnitData, result: Any, metrics: pd.DataFrame,
           seconds: dict[str, float]) -> None:
    """Step 4: ``metrics.csv``, ``config.json`` and, last, the completion marker."""
    import keras

    atomic_write_csv(unit.directory(out_dir) / store.METRICS_NAME, metrics)
    training = {"epochs_run": result.epochs_run, "best_epoch": result.best_epoch,
                "best_val_loss": result.best_val_loss, "seconds": result.seconds, "strategy": result.strategy,
                "replicas": result.replicas, "params": int(result.model.count_params())}
    if result.teacher is not None:  # distillation: the teacher's run, before the student's
        training["teacher"] = {key: getattr(result.teacher, key)
                               for key in ("epochs_run", "best_epoch", "best_val_loss", "seconds")}
    UnitRecord(unit, settings, data.patients, training, seconds, versions=environment_versions(),
               keras_dtype_policy=keras.mixed_precision.dtype_policy().name).write(out_dir)
    store.write_marker(unit, out_dir, seconds=seconds["total"], rows=len(metrics))


@contextlib.contextmanager
def _reading(unit: Unit, settings: Settings, patients: UnitPatients) -> Iterator[None]:
    """Turn TensorFlow's DataLossError (a record that changed after it was verified) into one line naming
    the unit's record files; TensorFlow's own message does not say which file."""
    import tensorflow as tf

    try:
        yield
    except tf.errors.DataLossError as exc:
        ids = sorted({*patients.train, *patients.val, *patients.eval})
        files = ", ".join(str(path) for path, _ in record_files(settings, ids).values())
        raise RecordError(f"unit {unit.uid}: a record could not be read ({str(exc).splitlines()[0]}); it is one of "
                          f"{files}; find it with tfrobseg.dataset.integrity.verify_records and prepare the data "
                          "again") from None


def run_unit(unit: Unit, settings: Settings, out_dir: str | os.PathLike, *, progress: bool = True,
             position: int = 0) -> pd.DataFrame:
    """Train, attack and score one unit; writes its files and marker, returns its metrics.

    The unit starts from a cleared Keras session and the run's seed, *before* its datasets are made
    (their shuffle depends on the global seed), so its numbers do not depend on which units ran
    before it in the same process.
    """
    import keras

    from tfrobseg.training import set_seed

    keras.backend.clear_session()
    set_seed(settings.train.seed)
    out_dir = Path(out_dir)
    t0 = time.perf_counter()
    unit_dir = unit.directory(out_dir)
    unit_dir.mkdir(parents=True, exist_ok=True)
    data = load_data(unit, settings)
    with _reading(unit, settings, data.patients):
        result = train(unit, settings, data, unit_dir, progress, position)
        t_train = time.perf_counter() - t0
        metrics = attack_and_score(unit, settings, result.model, data.eval, data.patients.eval, progress, position)
    total = time.perf_counter() - t0
    record(unit, settings, out_dir, data, result, metrics,
           {"train": t_train, "attack_and_metrics": total - t_train, "total": total})
    keras.backend.clear_session()
    return metrics
