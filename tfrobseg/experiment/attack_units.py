"""Attack the trained units of a results folder with other attacks, without retraining (``experiments/attack.py``).

For every complete unit of the folder (its marker, its files matching the marker's checksums) and every
chosen attack, the unit's ``best.keras`` is loaded, its evaluation patients (its ``config.json``) are read
with the run's settings (``run.json``: data folder, image size, threshold) and attacked and scored exactly
as the unit runner does (:class:`tfrobseg.experiment.runner.Evaluation`), into the tidy rows of
``metrics.csv``. Each unit × attack writes ``<unit>/attacks/<key>.csv`` and then, last, its record
``<key>.json`` (:class:`~tfrobseg.experiment.store.AttackRecord`: the spec, ε, the model's SHA-256,
seconds, versions); the key (:meth:`~tfrobseg.experiment.attacks.AttackSpec.key`) hashes what changes the
rows (options, attack loss, ε, batch size).

Resumable per unit × attack: a recorded attack whose record names the unit's current model and whose rows
match their checksum is skipped, an attack the unit's own ``metrics.csv`` already holds (same options, loss,
batch size, every ε) too; anything else is (re)computed. The process computing one holds its lock
(:func:`~tfrobseg.experiment.store.attack_lock_path`), so several processes can share a folder. The
ensemble computes only its missing members (each recorded as an attack of its own) and reduces their rows
(:func:`~tfrobseg.experiment.runner.ensemble_rows`), reusing the unit's own rows of a member (the study's
FGSM). :func:`tfrobseg.experiment.store.collect_attack_rows` reads everything back as one frame.

With ``--executor slurm`` the units with an attack to compute are submitted as one job array, a task per unit
(:func:`array_unit`: that unit's attacks, as here); with ``--wait`` the call then reads their rows back as a
local call would (every attack recorded by then).
"""

from __future__ import annotations

import argparse
import fnmatch
import functools
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tfrobseg.console import add_verbose_option, setup_console
from tfrobseg.errors import InputError, OptionError, UnitsSubmitted
from tfrobseg.experiment import store
from tfrobseg.experiment.attacks import AttackSpec, add_attack_options, given_options
from tfrobseg.experiment.cli import _floats
from tfrobseg.experiment.executor import (
    ExecutorConfig,
    add_executor_options,
    resolve_executor,
)
from tfrobseg.experiment.settings import Settings
from tfrobseg.experiment.units import MARKER, PHASES, Unit, UnitRecord
from tfrobseg.io import atomic_write_csv, config_hash, environment_versions, file_hash

__all__ = ["AttackPlan", "Outcome", "array_unit", "attack_units", "build_parser", "jobs_of", "main", "pending_units",
           "plan_attacks", "run_command", "summary"]


def build_parser() -> argparse.ArgumentParser:
    """The options of ``experiments/attack.py``; builds without TensorFlow."""
    p = argparse.ArgumentParser(
        prog="experiments/attack.py",
        description="Attack the complete units of a results folder with other attacks, from their saved models "
                    "(no retraining); rows in <unit>/attacks/<key>.csv, resumable per unit x attack.",
        epilog="exit codes: 0 every unit x attack done or recorded (those another process is computing are named "
               "and left to it); 1 some failed (one 'failed: <unit> <attack>: reason' line each, the others are "
               "kept); 2 bad options, no results folder or no complete unit, before any work ('error:').",
        allow_abbrev=False,
    )
    p.add_argument("--results", required=True, help="results folder of crossval.py / holdout.py (with run.json)")
    p.add_argument("--attack", required=True,
                   help="attack name or comma list of tfrobseg.attacks.ATTACKS, and 'ensemble' (per case the worst "
                        "of --ensemble-members: robust Dice)")
    p.add_argument("--epsilons", type=_floats, default=None,
                   help="attack strengths in z-score units (default: the run's; the clean 0 is always added)")
    p.add_argument("--attack-loss", default=None,
                   help="'same' (each unit's training loss) or a loss name (default: the run's --attack-loss)")
    p.add_argument("--batch-size", type=int, default=None, help="slices per attack call (default: the run's)")
    p.add_argument("--units", default=None,
                   help="comma list of unit globs, e.g. 'crossval/recurrent_unet/*/fold0' (default: every unit)")
    add_attack_options(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_executor_options(p)
    add_verbose_option(p)
    return p


@dataclass
class AttackPlan:
    """What a call attacks, resolved and checked before any work."""

    root: Path
    settings: Settings  # the run's, with run.json's (absolute) data folder
    specs: list[AttackSpec]  # the chosen attacks, in order
    epsilons: tuple[float, ...]
    attack_loss: str  # "same" or a loss name
    batch_size: int
    units: list[tuple[Unit, UnitRecord]]


@dataclass
class Outcome:
    """One unit × attack of a call: ``status`` computed, recorded (skipped: recorded earlier, or in the unit's
    ``metrics.csv``), elsewhere (another process holds it) or failed; ``rows`` unless elsewhere or failed."""

    uid: str
    spec: AttackSpec
    status: str
    reason: str = ""
    rows: pd.DataFrame | None = field(default=None, repr=False)


def _complete_units(root: Path, records: list[UnitRecord], settings_hash: str, globs: list[str] | None,
                    say: Callable[[str], None]) -> list[tuple[Unit, UnitRecord]]:
    """The units of ``root`` to attack: complete, made with the run's settings, matching ``globs``."""
    by_uid = {r.unit.uid: r for r in records}
    units = []
    for marker in sorted(root.glob(f"*/*/*/*/{MARKER}")):
        uid = marker.parent.relative_to(root).as_posix()
        if uid.split("/")[0] not in PHASES or (globs and not any(fnmatch.fnmatchcase(uid, g) for g in globs)):
            continue
        problems = store.unit_problems(marker.parent)
        record = by_uid.get(uid)
        if problems or record is None:
            say(f"skip {uid} (not complete: {'; '.join(problems) or 'config.json unreadable'}; experiments/verify.py)")
        elif config_hash(record.settings.fingerprint()) != settings_hash:
            say(f"skip {uid} (made with other settings than {store.RUN_FILE}; experiments/verify.py)")
        elif not (marker.parent / store.MODEL_NAME).is_file():
            say(f"skip {uid} (no {store.MODEL_NAME})")
        else:
            units.append((record.unit, record))
    return units


def plan_attacks(args: argparse.Namespace, say: Callable[[str], None] = print) -> AttackPlan:
    """Every check a call can fail before any work: the folder, the attacks and their options, the loss, the
    batch size, at least one complete unit. Raises OptionError or InputError (one line)."""
    from tfrobseg.experiment.attacks import resolve_attacks
    from tfrobseg.losses import LOSS_NAMES

    root = Path(args.results)
    if not root.is_dir():
        raise OptionError(f"--results {root}: no such folder (the --out of crossval.py / holdout.py)")
    try:
        specs = resolve_attacks(args.attack, given_options(args), args.ensemble_members)
    except ValueError as exc:
        raise OptionError(str(exc)) from None
    if args.attack_loss is not None and args.attack_loss != "same" and args.attack_loss not in LOSS_NAMES:
        raise OptionError(f"--attack-loss {args.attack_loss!r}: 'same' or one of {', '.join(LOSS_NAMES)}")
    if args.batch_size is not None and args.batch_size < 1:
        raise OptionError(f"--batch-size {args.batch_size}: must be >= 1")
    settings, records = store.folder_settings(root)
    globs = [g.strip() for g in args.units.split(",") if g.strip()] if args.units else None
    units = _complete_units(root, records, store.RunFile.read(root).settings_hash, globs, say)
    if not units:
        raise OptionError(f"--results {root}: no complete unit" + (f" matches --units {args.units}" if globs else ""))
    epsilons = tuple(sorted({0.0, *args.epsilons})) if args.epsilons else settings.epsilons
    return AttackPlan(root, settings, specs, epsilons, args.attack_loss or settings.attack_loss,
                      args.batch_size or settings.train.batch_size, units)


def jobs_of(specs: Sequence[AttackSpec]) -> list[AttackSpec]:
    """The unit × attack jobs of the chosen attacks, in the order they run: each ensemble's members before it."""
    jobs: list[AttackSpec] = []
    for spec in specs:
        jobs += [m for m in (*spec.members, spec) if m not in jobs]
    return jobs


class _MemberUnavailable(RuntimeError):
    """An ensemble member's rows are not there: it failed, or another process is computing it."""

    def __init__(self, member: AttackSpec, elsewhere: bool):
        self.elsewhere = elsewhere
        super().__init__(f"member {member.name} {'is being computed by another process' if elsewhere else 'failed'}")


class _UnitAttacks:
    """The attacks of one unit: their keys, the rows already there, the model and data loaded on first need."""

    def __init__(self, plan: AttackPlan, unit: Unit, record: UnitRecord, progress: bool):
        self.plan, self.unit, self.record, self.progress = plan, unit, record, progress
        self.dir = unit.directory(plan.root)
        self.attack_loss = unit.loss if plan.attack_loss == "same" else plan.attack_loss
        self.model_sha = store.model_sha256(self.dir)
        self.rows: dict[AttackSpec, pd.DataFrame] = {}
        self.sources: dict[AttackSpec, str] = {}  # where each spec's rows are
        self.elsewhere: set[AttackSpec] = set()  # specs another process holds
        self._evaluation: Any = None

    def key(self, spec: AttackSpec) -> str:
        return spec.key(loss=self.attack_loss, epsilons=self.plan.epsilons, batch_size=self.plan.batch_size)

    def known(self, spec: AttackSpec) -> tuple[pd.DataFrame, str] | None:
        """The spec's rows already there and where: the unit's ``metrics.csv`` or a valid record."""
        plan = self.plan
        if plan.batch_size == plan.settings.train.batch_size:
            own = store.tidy_rows(pd.read_csv(self.dir / store.METRICS_NAME))
            own = own[(own["attack"] == spec.name) & (own["attack_params"] == spec.attack_params)
                      & (own["attack_loss"] == self.attack_loss)]
            eps = own["epsilon"].astype(float).round(10)
            wanted = {round(e, 10) for e in plan.epsilons}
            own = own[eps.isin(wanted)]
            if len(own) == len(wanted) * len(self.record.patients.eval):
                return own.reset_index(drop=True), store.METRICS_NAME
        csv, path = store.AttackRecord.paths(self.dir, self.key(spec))
        if path.is_file():
            try:
                record = store.AttackRecord.read(path)
            except ValueError:
                return None
            if record.problem(self.dir, self.model_sha) is None:
                return store.tidy_rows(pd.read_csv(csv)), f"{store.ATTACKS_DIR}/{path.name}"
        return None

    def stale(self, spec: AttackSpec) -> str | None:
        """Why a record of the spec exists but cannot be used (None when there is none, or it can)."""
        path = store.AttackRecord.paths(self.dir, self.key(spec))[1]
        if not path.is_file():
            return None
        try:
            return store.AttackRecord.read(path).problem(self.dir, self.model_sha)
        except ValueError as exc:
            return str(exc)

    def evaluation(self) -> Any:
        """The unit's model and evaluation slices (:class:`~tfrobseg.experiment.runner.Evaluation`), loaded once."""
        if self._evaluation is None:
            from tfrobseg.dataset.integrity import verify_records
            from tfrobseg.experiment.runner import Evaluation, eval_dataset, volumetric
            from tfrobseg.reporting.figures import load_unit_model

            settings, patients = self.plan.settings, self.record.patients.eval
            verify_records(settings.data_dir, sorted(patients))
            self._evaluation = Evaluation.of(self.unit, settings, load_unit_model(self.dir),
                                             eval_dataset(settings, patients, volumes=volumetric(self.unit.model)),
                                             patients, progress=self.progress)
        return self._evaluation

    def compute(self, spec: AttackSpec) -> tuple[pd.DataFrame, dict[str, str] | None]:
        """The spec's rows: attacked and scored, or for the ensemble reduced from its members' rows."""
        from tfrobseg.experiment.runner import ensemble_rows

        if not spec.is_ensemble:
            rows = self.evaluation().score(spec, epsilons=self.plan.epsilons, attack_loss=self.attack_loss,
                                           batch_size=self.plan.batch_size)
            return rows, None
        sources = {}
        for member in spec.members:
            if member not in self.rows:
                raise _MemberUnavailable(member, elsewhere=member in self.elsewhere)
            sources[member.name] = self.sources[member]
        return ensemble_rows(spec, self.rows), sources

    def run(self, spec: AttackSpec, say: Callable[[str], None]) -> Outcome:
        """Skip, compute and record, or report one attack of the unit."""
        from tfrobseg.locks import FileLock, LockHeld, describe_holder

        uid, key = self.unit.uid, self.key(spec)
        known = self.known(spec)
        if known is None:
            stale = self.stale(spec)
            lock = FileLock(store.attack_lock_path(self.unit, self.plan.root, key))
            try:
                lock.acquire()
            except LockHeld as exc:
                say(f"skip {uid} {spec.label} (being computed by {describe_holder(exc.holder)})")
                self.elsewhere.add(spec)
                return Outcome(uid, spec, "elsewhere", "being computed by another process")
            try:
                known = self.known(spec)  # finished by another process since we looked
                if known is None:
                    if stale:
                        say(f"{uid} {spec.label}: its record is stale ({stale}): recomputing it")
                    return self._record(spec, key, say)
            finally:
                lock.release()
        rows, source = known
        self.rows[spec], self.sources[spec] = rows, source
        say(f"skip {uid} {spec.label} (in {source})")
        return Outcome(uid, spec, "recorded", source, rows)

    def _record(self, spec: AttackSpec, key: str, say: Callable[[str], None]) -> Outcome:
        t0 = time.perf_counter()
        rows, sources = self.compute(spec)
        seconds = time.perf_counter() - t0
        csv = store.AttackRecord.paths(self.dir, key)[0]
        atomic_write_csv(csv, rows)
        store.AttackRecord(unit=self.unit.uid, key=key, spec=spec.to_json(), attack_loss=self.attack_loss,
                           epsilons=list(self.plan.epsilons), batch_size=self.plan.batch_size,
                           attack_precision=self.plan.settings.attack_precision, model_sha256=self.model_sha,
                           csv_sha256=file_hash(csv), rows=len(rows), seconds=seconds, sources=sources,
                           versions=environment_versions()).write(self.dir)
        self.rows[spec], self.sources[spec] = rows, f"{store.ATTACKS_DIR}/{key}.json"
        attacked = rows.loc[rows["epsilon"].astype(float) > 0, "dice"].mean()
        say(f"done {self.unit.uid} {spec.label} in {seconds:.0f} s (attacked mean Dice {attacked:.3f}; "
            f"{store.ATTACKS_DIR}/{key}.csv)")
        return Outcome(self.unit.uid, spec, "computed", "", rows)


def attack_units(plan: AttackPlan, *, progress: bool = True, say: Callable[[str], None] = print) -> list[Outcome]:
    """Run every unit × attack of ``plan`` (:func:`jobs_of`); a failure is reported and the others go on."""
    outcomes = []
    jobs = jobs_of(plan.specs)
    for k, (unit, record) in enumerate(plan.units, 1):
        say(f"[{k}/{len(plan.units)}] {unit.uid}")
        try:
            attacks = _UnitAttacks(plan, unit, record, progress)
        except (OSError, ValueError) as exc:  # its marker or model became unreadable since it was checked
            attacks, reason = None, " ".join(f"{type(exc).__name__}: {exc}".split())
        for spec in jobs:
            if attacks is None:
                outcomes.append(Outcome(unit.uid, spec, "failed", reason))
            else:
                outcomes.append(_run_job(attacks, spec, say))
            if outcomes[-1].status == "failed":
                say(f"FAILED {unit.uid} {spec.label}: {outcomes[-1].reason}")
    return outcomes


def _run_job(attacks: _UnitAttacks, spec: AttackSpec, say: Callable[[str], None]) -> Outcome:
    uid = attacks.unit.uid
    try:
        return attacks.run(spec, say)
    except _MemberUnavailable as exc:
        if exc.elsewhere:
            say(f"skip {uid} {spec.label} ({exc}; run the same command again when it finishes)")
            return Outcome(uid, spec, "elsewhere", str(exc))
        return Outcome(uid, spec, "failed", str(exc))
    except Exception as exc:  # noqa: BLE001 (one unit x attack failing must not stop the others: report it)
        return Outcome(uid, spec, "failed", " ".join(f"{type(exc).__name__}: {exc}".split()))


def summary(outcomes: Sequence[Outcome]) -> pd.DataFrame:
    """Mean Dice per attack × ε over the units attacked (patients pooled), the clean ε = 0 included."""
    frames = [o.rows.assign(label=o.spec.label) for o in outcomes if o.rows is not None]
    if not frames:
        return pd.DataFrame()
    rows = pd.concat(frames, ignore_index=True)
    order = list(dict.fromkeys(rows["label"]))
    table = rows.pivot_table(index="label", columns="epsilon", values="dice", aggfunc="mean").loc[order]
    table.index.name, table.columns.name = "attack", "ε"
    return table


def pending_units(plan: AttackPlan) -> list[tuple[Unit, UnitRecord]]:
    """The units of ``plan`` with an attack not recorded yet (read from their files; no TensorFlow)."""
    jobs = jobs_of(plan.specs)
    return [(unit, record) for unit, record in plan.units
            if any(_UnitAttacks(plan, unit, record, False).known(spec) is None for spec in jobs)]


def array_unit(plan: AttackPlan) -> str:
    """What one SLURM array task computes: the attacks of ``plan``'s one unit, as a local call does. Raises
    RuntimeError naming the unit and the attacks that failed, so that SLURM records the task as failed."""
    outcomes = attack_units(plan, progress=False, say=functools.partial(print, flush=True))
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        raise RuntimeError("; ".join(f"{o.uid} {o.spec.name}: {o.reason}" for o in failed))
    return f"done: {sum(o.status == 'computed' for o in outcomes)} attack(s) computed"


def _submit(plan: AttackPlan, executor: ExecutorConfig, say: Callable[[str], None]) -> int | None:
    """Submit the units with an attack to compute as one array (a task per unit) and follow it with ``--wait``;
    returns 1 when tasks failed, None when the call goes on to read the rows. Raises UnitsSubmitted without
    ``--wait``."""
    import dataclasses

    from tfrobseg.experiment.executor import SUBMIT_DIR, submit_array

    todo = pending_units(plan)
    if not todo:
        say("every unit x attack is recorded already: nothing to submit")
        return None
    tasks = [(unit.uid, array_unit, (dataclasses.replace(plan, units=[(unit, record)]),)) for unit, record in todo]
    submission = submit_array(tasks, executor, plan.root / SUBMIT_DIR, name="tfrobseg-attack",
                              threads=plan.settings.threads, deterministic=plan.settings.deterministic)
    say(f"{len(todo)} unit(s) submitted as job array {submission.array_id} (a task per unit; logs in "
        f"{plan.root / SUBMIT_DIR})")
    if not executor.wait:
        raise UnitsSubmitted(f"array {submission.array_id}: follow it with squeue / sacct; when it has ended, run the "
                             "same command again: it reads the rows back (and submits what is still missing).")
    submission.follow(say)
    errors = {task.label: f"{task.error} (log: {task.log})" for task in submission.outcomes() if task.error is not None}
    missing = {unit.uid for unit, _ in pending_units(plan)} - set(errors)
    errors |= {uid: "its array task ended with attacks still missing (another process may hold them; run the same "
                    "command again)" for uid in missing}
    for uid, why in sorted(errors.items()):
        print(f"failed: {uid}: {why}", file=sys.stderr)
    return 1 if errors else None


def _configure_tensorflow(settings: Settings, say: Callable[[str], None]) -> None:
    """The run's thread pools and op determinism (they change a CPU's rounding), set before TensorFlow starts;
    when it already runs with other pools (``main`` called in a process that used it), said in one line."""
    from tfrobseg.parallel import configure_threads

    if not configure_threads(settings.threads, settings.deterministic):
        say(f"note: TensorFlow was already running in this process: the run's {settings.threads} thread(s) per unit "
            "not set (CPU rounding may differ)")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point of ``experiments/attack.py``."""
    try:
        return run_command(argv)
    except UnitsSubmitted as exc:
        print(str(exc), flush=True)
        return 0


def run_command(argv: Sequence[str] | None = None) -> int:
    """``experiments/attack.py``'s work and exit code; raises UnitsSubmitted after submitting to SLURM without
    ``--wait`` (:func:`main` prints it and exits 0; the related-work experiments stop before their report)."""
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")  # "ε" on a non-UTF-8 terminal
    args = build_parser().parse_args(argv)
    setup_console(args.verbose)
    say = functools.partial(print, flush=True)
    try:
        executor = resolve_executor(args)
        plan = plan_attacks(args, say)
    except (OptionError, InputError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if executor.remote:
        code = _submit(plan, executor, say)
        if code is not None:
            return code
    _configure_tensorflow(plan.settings, say)
    say(f"attack.py: {len(plan.units)} unit(s) x {len(plan.specs)} attack(s) ({'; '.join(s.label for s in plan.specs)})"
        f"; eps {list(plan.epsilons)}; attack loss {plan.attack_loss}; batch size {plan.batch_size}; "
        f"results in {plan.root}/<unit>/{store.ATTACKS_DIR}/")
    t0 = time.perf_counter()
    outcomes = attack_units(plan, progress=not args.no_progress, say=say)
    counts = {s: sum(o.status == s for o in outcomes) for s in ("computed", "recorded", "elsewhere", "failed")}
    say(f"attack.py finished in {time.perf_counter() - t0:.0f} s: {counts['computed']} computed, {counts['recorded']} "
        f"already there (skipped), {counts['elsewhere']} left to other processes, {counts['failed']} failed.")
    table = summary(outcomes)
    if not table.empty:
        n_units = len({o.uid for o in outcomes if o.rows is not None})
        say(f"Mean Dice over {n_units} unit(s) (patients pooled; ε = 0 is the clean prediction):")
        say(table.to_string(float_format=lambda v: f"{v:.3f}"))
    failed = [o for o in outcomes if o.status == "failed"]
    for o in failed:
        print(f"failed: {o.uid} {o.spec.name}: {o.reason}", file=sys.stderr)
    return 1 if failed else 0
