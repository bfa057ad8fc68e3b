"""The study's two evaluation phases as resumable experiment grids (Apostolidis et al., II-G).

* ``crossval``: for each model × loss × fold k, train on the other folds of the training part
  (early stopping on the validation split), attack every slice of fold k at every ε, and score
  each patient in 3D (Tables I and III).
* ``holdout``: for each model × loss, train on the whole training part (early stopping on the
  validation split), attack the hold-out test split (Tables II and IV).

Each unit writes ``metrics.csv`` (one row per patient × ε), ``config.json``, ``history.csv``,
``best.keras`` and finally its completion marker (:mod:`tfrobseg.runs`). Completed units are
skipped on a re-run; an interrupted unit is restarted from scratch (no mid-training resume: a
unit is short next to a run, and restarting keeps the seeded result identical to an
uninterrupted one). The command-line scripts ``experiments/crossval.py`` and
``experiments/holdout.py`` are thin wrappers around :func:`main`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tfrobseg import runs

DEFAULT_EPSILONS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
STUDY_FILTERS = (16, 32, 64, 128, 256)
BUILTIN_DATA = Path("data/builtin")
ATTACKS = ("fgsm", "ifgsm", "pgd", "noise")

# Defaults the built-in synthetic cohort sets when the user does not choose: sized so that the
# main command (one model, 6 losses x 3 folds = 18 units, 11 eps) finishes within 30 minutes on a
# 2-core CPU. Every step of the protocol still runs; capacity, resolution and epochs shrink, and
# the learning rate is raised because 1e-4 does not leave the initial state in a few dozen epochs
# of ~20 steps (measured: Dice < 0.1 after 4 epochs at 1e-4 or 1e-3; 0.34 after 20 epochs at 1e-3).
# 40 epochs, not 20: at 20 the BCE networks still predicted only background (clean Dice 0.000 on
# fold 0), at 40 the same unit reached clean Dice 0.544.
BUILTIN_PRESET: dict[str, Any] = {
    "max_epochs": 40,
    "learning_rate": 1e-3,
    "filters": (8, 16, 32, 64, 128),
    "image_size": 64,
    "early_stopping_patience": 10,
    "jobs": 2,
}


@dataclass
class Settings:
    """Everything that changes a unit's numbers (fingerprinted into ``run.json``)."""

    data_dir: str
    manifest_sha256: str
    split_file: str | None
    split_sha256: str | None
    epsilons: tuple[float, ...]
    attack: str
    attack_loss: str
    max_epochs: int
    batch_size: int
    seed: int
    precision: str
    xla: bool
    filters: tuple[int, ...]
    image_size: int
    learning_rate: float = 1e-4
    plateau_factor: float = 0.5
    plateau_patience: int = 2
    min_learning_rate: float = 1e-6
    early_stopping_patience: int = 10
    threshold: float = 0.5
    preset: str | None = None

    def fingerprint(self) -> dict[str, Any]:
        d = asdict(self)
        d["data_dir"] = os.path.abspath(d["data_dir"])  # the manifest hash identifies the data
        d.pop("split_file")
        return json.loads(json.dumps(d))


# --------------------------------------------------------------------------- data helpers
def resize_element(element: dict, size: int) -> dict:
    """Resample a slice element to ``size``×``size``: bilinear image, nearest masks, spacing scaled.

    Used only when ``image_size`` differs from the prepared 256 px (the built-in preset), so the
    in-plane spacing grows by the same factor and HD95/ASSD stay in millimetres.
    """
    import tensorflow as tf

    out = dict(element)
    h = tf.cast(tf.shape(element["image"])[-3], tf.float32)
    w = tf.cast(tf.shape(element["image"])[-2], tf.float32)
    out["image"] = tf.image.resize(element["image"], (size, size), method="bilinear", antialias=True)
    for key in ("mask", "mask2"):
        if key in element:
            out[key] = tf.image.resize(element[key], (size, size), method="nearest")
    scale = tf.stack([tf.constant(1.0), h / size, w / size])
    out["spacing"] = tf.cast(element["spacing"], tf.float32) * scale
    return out


def make_unit_datasets(settings: Settings, train_ids: Sequence[str], val_ids: Sequence[str], eval_ids: Sequence[str]):
    """(train (x, y), val (x, y) or None, eval dict) datasets for one unit."""
    from tfrobseg import data

    def prepare(ids, shuffle):
        ds = data.make_dataset(settings.data_dir, list(ids), batch_size=settings.batch_size, shuffle=shuffle, seed=settings.seed)
        if settings.image_size != native_size(settings.data_dir):
            ds = ds.map(partial(resize_element, size=settings.image_size))
        return ds

    train = prepare(train_ids, True).map(data.to_xy)
    val = prepare(val_ids, False).map(data.to_xy) if val_ids else None
    return train, val, prepare(eval_ids, False)


def native_size(data_dir: str | os.PathLike) -> int:
    """In-plane size of the prepared slices (from the manifest, 256 when it does not say)."""
    manifest = json.loads((Path(data_dir) / "manifest.json").read_text(encoding="utf-8"))
    params = manifest.get("parameters", {})
    for key in ("image_size", "size", "shape"):
        v = params.get(key)
        if isinstance(v, int):
            return v
        if isinstance(v, (list, tuple)) and v:
            return int(v[-1] if len(v) == 2 else v[0])
    return 256


def load_split(path: str | os.PathLike) -> dict[str, list[str]]:
    """An explicit split file: JSON with "train", "val" (may be empty) and "test" patient lists."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"split file not found: {p}")
    split = json.loads(p.read_text(encoding="utf-8"))
    for key in ("train", "test"):
        if not isinstance(split.get(key), list) or not split[key]:
            raise ValueError(f"split file {p}: '{key}' must be a non-empty list of patient ids")
    split.setdefault("val", [])
    overlap = (set(split["train"]) | set(split["val"])) & set(split["test"])
    if overlap:
        raise ValueError(f"split file {p}: patients in both training and test: {sorted(overlap)}")
    return split


def unit_patients(unit: runs.Unit, manifest: dict, split: dict | None) -> tuple[list[str], list[str], list[str]]:
    """(train, val, eval) patient ids of a unit."""
    from tfrobseg import data

    if split is not None:
        ok = {p for p, info in manifest["patients"].items() if info.get("status", "ok") == "ok"}
        unknown = sorted((set(split["train"]) | set(split["val"]) | set(split["test"])) - ok)
        if unknown:
            raise ValueError(f"split file names patients not prepared (status ok) in the data: {unknown}")
        return list(split["train"]), list(split["val"]), list(split["test"])
    val = data.split_patients(manifest, "val")
    if unit.fold is None:
        return data.split_patients(manifest, "train"), val, data.split_patients(manifest, "test")
    return (
        data.split_patients(manifest, "train", exclude_fold=unit.fold),
        val,
        data.split_patients(manifest, "train", fold=unit.fold),
    )


# --------------------------------------------------------------------------- one unit
def train_config(settings: Settings, strategy: str = "auto") -> Any:
    """The :class:`tfrobseg.training.TrainConfig` a unit trains with: every field the two share."""
    from tfrobseg.training import TrainConfig

    shared = {f.name for f in fields(TrainConfig)} & {f.name for f in fields(Settings)}
    return TrainConfig(**{name: getattr(settings, name) for name in sorted(shared)}, strategy=strategy)


def run_unit(
    unit: runs.Unit,
    settings: Settings,
    out_dir: Path,
    *,
    strategy: str = "auto",
    progress: bool = True,
    position: int = 0,
) -> pd.DataFrame:
    """Train, attack and score one unit; writes its files and marker, returns its metrics."""
    import keras

    from tfrobseg import data, models
    from tfrobseg.attacks import attack_dataset
    from tfrobseg.evaluation import (
        evaluate_attack_stream,
        iter_with_count,
        load_volumes,
    )
    from tfrobseg.losses import get_loss
    from tfrobseg.training import train_model

    t0 = time.perf_counter()
    udir = unit.directory(out_dir)
    udir.mkdir(parents=True, exist_ok=True)
    manifest = data.read_manifest(settings.data_dir)
    split = load_split(settings.split_file) if settings.split_file else None
    train_ids, val_ids, eval_ids = unit_patients(unit, manifest, split)
    if not train_ids or not eval_ids:
        raise ValueError(f"unit {unit.uid}: empty training ({len(train_ids)}) or evaluation ({len(eval_ids)}) set")
    train_ds, val_ds, eval_ds = make_unit_datasets(settings, train_ids, val_ids, eval_ids)

    config = train_config(settings, strategy)
    shape = (settings.image_size, settings.image_size, 1)
    result = train_model(
        lambda: models.build_model(unit.model, input_shape=shape, filters=tuple(settings.filters)),
        get_loss(unit.loss),
        train_ds,
        val_ds,
        config=config,
        out_dir=udir,
        progress=progress,
        desc=f"train {unit.uid}",
        position=position,
    )
    t_train = time.perf_counter() - t0

    attack_loss = unit.loss if settings.attack_loss == "same" else settings.attack_loss
    volumes = load_volumes(eval_ds)
    total = sum(v.n_slices for v in volumes.values()) * len(settings.epsilons)
    stream = attack_dataset(
        result.model, eval_ds, list(settings.epsilons), attack=settings.attack, loss=get_loss(attack_loss),
        batch_size=settings.batch_size, return_images=True, jit_compile=settings.xla,
    )
    extra = {
        "phase": unit.phase, "model": unit.model, "loss": unit.loss,
        "fold": -1 if unit.fold is None else unit.fold, "attack": settings.attack, "attack_loss": attack_loss,
    }
    metrics = evaluate_attack_stream(
        iter_with_count(stream, total, f"attack {unit.uid}", progress, position), volumes,
        threshold=settings.threshold, extra=extra,
    )
    seconds = time.perf_counter() - t0
    runs.atomic_write_csv(udir / "metrics.csv", metrics)
    config_record = {
        "unit": unit.uid, "phase": unit.phase, "model": unit.model, "loss": unit.loss, "fold": unit.fold,
        "settings": settings.fingerprint(), "train_config": config.to_dict(),
        "patients": {"train": list(train_ids), "val": list(val_ids), "eval": list(eval_ids)},
        "seed": settings.seed, "versions": runs.environment_versions(),
        "keras_dtype_policy": keras.mixed_precision.dtype_policy().name,
        "training": {
            "epochs_run": result.epochs_run, "best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss,
            "seconds": result.seconds, "strategy": result.strategy, "replicas": result.replicas,
            "params": int(result.model.count_params()),
        },
        "seconds": {"train": t_train, "attack_and_metrics": seconds - t_train, "total": seconds},
    }
    runs.atomic_write_json(udir / "config.json", config_record)
    runs.write_marker(unit, out_dir, {"seconds": seconds, "rows": len(metrics)})
    keras.backend.clear_session()
    return metrics


# --------------------------------------------------------------------------- the grid
def _log(out_dir: Path, message: str, quiet: bool = False) -> None:
    line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}"
    with open(out_dir / "log.txt", "a", encoding="utf-8") as fh:
        fh.write(line + "\n")
    if not quiet:
        print(message, flush=True)


_WORKER_SLOT = 0


def _worker_init(slots: Any, threads: int) -> None:
    # Runs once per worker process: claim a terminal row for its progress bars and share the
    # cores between the workers (TensorFlow's thread pools are fixed at its first use).
    global _WORKER_SLOT
    _WORKER_SLOT = int(slots.get())
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)


def _worker_run(unit: runs.Unit, settings: Settings, out_dir: Path, strategy: str, progress: bool) -> tuple[pd.DataFrame, float]:
    t0 = time.perf_counter()
    df = run_unit(unit, settings, out_dir, strategy=strategy, progress=progress, position=_WORKER_SLOT + 1)
    return df, time.perf_counter() - t0


def _unit_summary(df: pd.DataFrame) -> str:
    clean = df.loc[df["epsilon"] == 0, "dice"].mean()
    attacked = df.loc[df["epsilon"] > 0, "dice"].mean()
    return f"clean Dice {clean:.3f}, attacked mean Dice {attacked:.3f}"


def run_grid(
    phase: str,
    settings: Settings,
    out_dir: str | os.PathLike,
    *,
    models: Sequence[str],
    losses: Sequence[str],
    folds: Sequence[int | None],
    shard: tuple[int, int] = (1, 1),
    overwrite: bool = False,
    max_units: int | None = None,
    strategy: str = "auto",
    jobs: int = 1,
    progress: bool = True,
    quiet: bool = False,
) -> pd.DataFrame:
    """Run (or resume) a phase's grid into ``out_dir``; returns the combined metrics of the phase.

    Refuses (:class:`tfrobseg.runs.SettingsMismatchError`) when ``out_dir`` holds a run with other
    settings, unless ``overwrite``. ``max_units`` stops after that many units were *computed* in
    this call (skipped complete units do not count), e.g. for time-sliced cluster jobs.
    ``jobs > 1`` trains that many units at once in worker processes, each with its share of
    the cores: graph tracing is single-threaded Python, so two workers keep two cores busy
    where one process would leave one idle while it traces.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs.check_settings(out, settings.fingerprint(), overwrite=overwrite)
    grid = runs.select_shard(runs.make_grid(phase, models, losses, folds), shard)
    position = {u: k for k, u in enumerate(grid, 1)}
    n = len(grid)
    done = runs.completed_units(out, grid)
    _log(out, f"{phase}: {n} units in this shard ({shard[0]}/{shard[1]}), {len(done)} already complete", quiet)
    todo = []
    for unit in grid:
        if unit.is_complete(out):
            _log(out, f"[{position[unit]}/{n}] skip {unit.uid} (complete)", quiet)
        else:
            todo.append(unit)
    if max_units is not None and len(todo) > max_units:
        todo = todo[:max_units]
        _log(out, f"computing {max_units} unit(s) in this call (--max-units)", quiet)
    for unit in todo:
        if runs.reset_unit(unit, out):
            _log(out, f"[{position[unit]}/{n}] {unit.uid} was interrupted earlier: restarting it from scratch", quiet)

    if jobs == 1 or len(todo) <= 1:
        for unit in todo:
            _log(out, f"[{position[unit]}/{n}] start {unit.uid}", quiet)
            t0 = time.perf_counter()
            df = run_unit(unit, settings, out, strategy=strategy, progress=progress)
            _log(out, f"[{position[unit]}/{n}] done {unit.uid} in {time.perf_counter() - t0:.0f} s ({_unit_summary(df)})", quiet)
    else:
        import multiprocessing
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        ctx = multiprocessing.get_context("spawn")
        jobs = min(jobs, len(todo))
        with ctx.Manager() as manager:
            slots = manager.Queue()
            for slot in range(jobs):
                slots.put(slot)
            threads = max(1, (os.cpu_count() or 1) // jobs)
            with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_worker_init, initargs=(slots, threads)) as pool:
                futures = {}
                for unit in todo:
                    futures[pool.submit(_worker_run, unit, settings, out, strategy, progress)] = unit
                    _log(out, f"[{position[unit]}/{n}] queued {unit.uid}", quiet)
                remaining = set(futures)
                while remaining:
                    finished, remaining = wait(remaining, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        unit = futures[fut]
                        df, seconds = fut.result()  # re-raises a worker's error here
                        _log(out, f"[{position[unit]}/{n}] done {unit.uid} in {seconds:.0f} s ({_unit_summary(df)})", quiet)
    combined = runs.collect_metrics(out, phase)
    if not combined.empty:
        runs.atomic_write_csv(out / f"results_{phase}.csv", combined)
    return combined


# --------------------------------------------------------------------------- command line
def _floats(text: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not vals or any(v < 0 or not np.isfinite(v) for v in vals):
        raise argparse.ArgumentTypeError(f"epsilons must be finite and >= 0, got {text!r}")
    return vals


def _ints(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not vals or any(v <= 0 for v in vals):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return vals


def build_parser(phase: str) -> argparse.ArgumentParser:
    what = ("3-fold cross-validation (Tables I, III)" if phase == "crossval"
            else "hold-out retraining and test-set attack (Tables II, IV)")
    p = argparse.ArgumentParser(
        prog=f"experiments/{phase}.py",
        description=f"Apostolidis et al. {what}: train each model x loss, attack at every eps, score in 3D.",
    )
    p.add_argument("--model", default="all", help="model name, comma list, or 'all' (the study's five)")
    p.add_argument("--loss", default="all", help="loss name, comma list, or 'all' (the study's six)")
    if phase == "crossval":
        p.add_argument("--folds", type=str, default=None, help="held-out fold indices, 0-based, e.g. 0,1,2 (default: all)")
    else:
        p.add_argument("--split", default=None, help="JSON file with train/val/test patient lists (default: the manifest's split)")
    p.add_argument("--epsilons", type=_floats, default=DEFAULT_EPSILONS,
                   help="attack strengths in z-score units (default 0,0.1,...,1.0; the clean 0 is always added)")
    p.add_argument("--attack", choices=ATTACKS, default="fgsm")
    p.add_argument("--attack-loss", default="same", help="'same' (the training loss, as in the study) or a loss name")
    p.add_argument("--data", default=None, help=f"prepared data folder (default: the built-in cohort in {BUILTIN_DATA}, prepared if absent)")
    p.add_argument("--out", default=None, help="results folder (default: results/builtin or results/<data folder name>)")
    p.add_argument("--max-epochs", type=int, default=None, help=f"epoch cap (study: 150; built-in preset: {BUILTIN_PRESET['max_epochs']})")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--learning-rate", type=float, default=None, help="initial Adam learning rate (study: 1e-4)")
    p.add_argument("--filters", type=_ints, default=None,
                   help="filters per level (default 16,32,64,128,256; built-in preset 8,16,32,64,128)")
    p.add_argument("--image-size", type=int, default=None, help="in-plane size fed to the networks (default: as prepared, 256; built-in preset 64)")
    p.add_argument("--early-stopping-patience", type=int, default=None, help="epochs without val-loss improvement (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shard", default=None, help="i/n: run the i-th of n disjoint parts of the grid (cluster job arrays)")
    p.add_argument("--overwrite", action="store_true", help="delete results made with other settings in --out")
    p.add_argument("--precision", choices=("float32", "mixed_float16", "mixed_bfloat16"), default=None,
                   help="default: mixed_float16 with a GPU, float32 otherwise")
    p.add_argument("--xla", action=argparse.BooleanOptionalAction, default=None,
                   help="XLA-compile training and attack steps (default on; the built-in preset turns it off on a CPU-only machine)")
    p.add_argument("--jobs", type=int, default=None, help="units computed at once in worker processes (default 1; built-in preset 2)")
    p.add_argument("--strategy", choices=("auto", "default", "mirrored", "multiworker"), default="auto",
                   help="distribution strategy (auto: MultiWorker from TF_CONFIG, Mirrored with >1 GPU)")
    p.add_argument("--max-units", type=int, default=None, help="compute at most N units in this call, then stop")
    p.add_argument("--no-tables", action="store_true", help="do not write the tables at the end")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _names(text: str, all_names: Sequence[str], kind: str, known: Sequence[str]) -> list[str]:
    if text == "all":
        return list(all_names)
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in known]
    if bad:
        raise SystemExit(f"unknown {kind}(s) {bad}; choose from {', '.join(known)} or 'all'")
    return names


def _has_gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def resolve_data(data: str | None) -> tuple[Path, str | None]:
    """``(data folder, preset)``: ``--data`` as given (preset ``None``), or the built-in cohort.

    Without ``--data`` the built-in synthetic cohort in :data:`BUILTIN_DATA` (relative to the
    working directory) is used with the ``"builtin"`` preset, and prepared first when absent.
    """
    if data is not None:
        data_dir = Path(data)
        if not (data_dir / "manifest.json").exists():
            raise SystemExit(f"--data {data_dir}: no manifest.json (prepare it with data_prep/prostatex.py)")
        return data_dir, None
    data_dir = BUILTIN_DATA
    if (data_dir / "manifest.json").exists():
        print(f"Using the built-in synthetic cohort in {data_dir}.", flush=True)
        return data_dir, "builtin"
    print(f"No --data given and no prepared cohort at {data_dir}: preparing the built-in synthetic "
          "cohort (tfrobseg.synthetic.prepare_builtin) ...", flush=True)
    from tfrobseg.synthetic import prepare_builtin

    t0 = time.perf_counter()
    prepare_builtin(str(data_dir), workers=min(2, os.cpu_count() or 1))
    print(f"Built-in cohort ready in {data_dir} ({time.perf_counter() - t0:.0f} s).", flush=True)
    return data_dir, "builtin"


def default_out_dir(out: str | None, data_dir: Path, preset: str | None) -> Path:
    """``--out``, else ``results/builtin`` for the built-in cohort or ``results/<data folder name>``."""
    if out:
        return Path(out)
    return Path("results") / ("builtin" if preset else data_dir.name)


def resolve_settings(args: argparse.Namespace, data_dir: Path, preset: str | None, *, has_gpu: bool) -> tuple[Settings, int]:
    """The run's :class:`Settings` and job count from the parsed options.

    An option the user gave always wins; otherwise the built-in preset's value when ``preset``
    is set, else the study's protocol (Apostolidis et al., II-H). XLA defaults to on, except for
    the preset on a machine without a GPU (compiling a train step costs more than it saves there).
    """
    from tfrobseg.training import TrainConfig, default_precision

    # The study's values live once, as TrainConfig's defaults.
    study = {f.name: f.default for f in fields(TrainConfig)}

    def pick(value, key, study_value):
        if value is not None:
            return value
        return BUILTIN_PRESET[key] if preset else study_value

    split_file = getattr(args, "split", None)
    xla = args.xla if args.xla is not None else not (preset and not has_gpu)
    settings = Settings(
        data_dir=str(data_dir),
        manifest_sha256=runs.file_hash(data_dir / "manifest.json"),
        split_file=split_file,
        split_sha256=runs.file_hash(split_file) if split_file else None,
        epsilons=tuple(sorted({0.0, *args.epsilons})),
        attack=args.attack,
        attack_loss=args.attack_loss,
        max_epochs=pick(args.max_epochs, "max_epochs", study["max_epochs"]),
        batch_size=args.batch_size,
        learning_rate=pick(args.learning_rate, "learning_rate", study["learning_rate"]),
        seed=args.seed,
        precision=args.precision or default_precision(has_gpu),
        xla=bool(xla),
        filters=tuple(pick(args.filters, "filters", STUDY_FILTERS)),
        image_size=int(pick(args.image_size, "image_size", native_size(data_dir))),
        early_stopping_patience=pick(args.early_stopping_patience, "early_stopping_patience",
                                     study["early_stopping_patience"]),
        preset=preset,
    )
    if settings.batch_size < 1 or settings.max_epochs < 1 or settings.image_size < 16:
        raise SystemExit("--batch-size and --max-epochs must be >= 1, --image-size >= 16")
    return settings, int(pick(args.jobs, "jobs", 1))


def main(phase: str, argv: Sequence[str] | None = None) -> int:
    """Command-line entry point of ``experiments/crossval.py`` / ``experiments/holdout.py``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # The tables contain "±" and "ε": never crash on a terminal / log with a non-UTF-8 encoding.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")
    args = build_parser(phase).parse_args(argv)
    from tfrobseg import data, losses, models

    model_names = _names(args.model, models.STUDY_MODELS, "model", models.MODEL_NAMES)
    loss_names = _names(args.loss, losses.STUDY_LOSSES, "loss", losses.LOSS_NAMES)
    if args.attack_loss != "same" and args.attack_loss not in losses.LOSS_NAMES:
        raise SystemExit(f"unknown --attack-loss {args.attack_loss!r}; 'same' or one of {', '.join(losses.LOSS_NAMES)}")
    try:
        shard = runs.parse_shard(args.shard)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None

    data_dir, preset = resolve_data(args.data)
    out_dir = default_out_dir(args.out, data_dir, preset)
    settings, jobs = resolve_settings(args, data_dir, preset, has_gpu=_has_gpu())
    if preset:
        print("Built-in cohort preset (override with the options): "
              f"max_epochs={settings.max_epochs}, learning_rate={settings.learning_rate:g}, filters={settings.filters}, image_size={settings.image_size} "
              f"(prepared slices are resampled, in-plane spacing scaled accordingly), jobs={jobs}, "
              f"xla={'on' if settings.xla else 'off (CPU: compile time exceeds the gain)'}.", flush=True)
    manifest = data.read_manifest(data_dir)
    if phase == "crossval":
        n_folds = len(manifest["split"]["folds"])
        folds: list[int | None] = list(_ints_zero(args.folds, n_folds))
    else:
        folds = [None]
    n_units = len(runs.select_shard(runs.make_grid(phase, model_names, loss_names, folds), shard))
    print(f"{phase}: models {model_names} x losses {loss_names} x folds {folds if phase == 'crossval' else ['hold-out']}"
          f" -> {n_units} unit(s) in this shard; eps {list(settings.epsilons)}; attack {settings.attack} "
          f"(loss: {settings.attack_loss}); precision {settings.precision}; XLA {'on' if settings.xla else 'off'}; "
          f"seed {settings.seed}; results in {out_dir}", flush=True)
    t0 = time.perf_counter()
    try:
        combined = run_grid(
            phase, settings, out_dir, models=model_names, losses=loss_names, folds=folds, shard=shard,
            overwrite=args.overwrite, max_units=args.max_units, strategy=args.strategy, jobs=jobs,
            progress=not args.no_progress,
        )
    except runs.SettingsMismatchError as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    print(f"{phase} finished in {time.perf_counter() - t0:.0f} s.", flush=True)
    print(f"Per-unit results: {out_dir}/{phase}/<model>/<loss>/<fold>/metrics.csv", flush=True)
    if not combined.empty:
        print(f"Combined results: {out_dir / f'results_{phase}.csv'} ({len(combined)} rows)", flush=True)
    if not args.no_tables and not combined.empty:
        from tfrobseg.tables import write_tables

        results = runs.collect_metrics(out_dir)
        written = write_tables(results, out_dir / "tables")
        print(f"Tables: {out_dir / 'tables'} ({len(written)} files; overview {out_dir / 'tables' / 'tables.md'})", flush=True)
        overview = [p for n, p in written.items() if n.endswith(".md") and n.startswith("table_") and "_" not in n[6:-3]]
        for path in overview:
            print(Path(path).read_text(encoding="utf-8"), flush=True)
    return 0


def _ints_zero(text: str | None, n_folds: int) -> tuple[int, ...]:
    if text is None:
        return tuple(range(n_folds))
    try:
        vals = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise SystemExit(f"--folds expects comma-separated fold indices, got {text!r}") from None
    bad = [v for v in vals if not 0 <= v < n_folds]
    if bad or not vals:
        raise SystemExit(f"--folds {text!r}: indices must be in 0..{n_folds - 1}")
    return vals
