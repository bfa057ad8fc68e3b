"""Check a results folder: one set of settings, intact unit files, no silent gaps, the same data.

:func:`verify_results` reads a folder written by ``experiments/crossval.py`` / ``holdout.py`` and returns
one :class:`Finding` per thing to report. Problems (the folder's tables could be wrong or incomplete
without saying so): an unreadable ``run.json``; a unit made with other settings than ``run.json``; a
unit whose files differ from its marker's checksums; a ``metrics.csv`` without one row per evaluated
patient and ε; a unit started but neither complete nor running (failed, or interrupted); folds missing
inside a model × loss; a unit submitted to SLURM (``<out>/slurm/submitted.jsonl``) that never started; data that
changed since the run or records that no longer read. Warnings: markers without checksums (made by an older
tfrobseg). Running units (their lock is held) and study-grid units not run are information.

A folder filled by many jobs (SLURM array tasks, shards on several machines) is checked the same way;
:func:`merge_results` then writes each phase's rows of every unit as one table, as a local run does at its end.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tfrobseg import study
from tfrobseg.defenses.masking import checked_temperatures
from tfrobseg.errors import InputError
from tfrobseg.experiment import store
from tfrobseg.experiment.units import MARKER, PHASES, RECORD_NAME, Unit, UnitRecord
from tfrobseg.io import config_hash
from tfrobseg.locks import current_holder, describe_holder

__all__ = ["LEVELS", "Finding", "VerifyReport", "merge_results", "verify_results"]

#: Finding levels, most serious first; only "problem" makes the folder fail.
LEVELS = ("problem", "warning", "running", "info")


@dataclass
class Finding:
    """One thing to report about the folder: its level, where (a unit id, a file) and what."""

    level: str
    where: str
    message: str

    def line(self) -> str:
        return f"{self.level}: {self.where}: {self.message}"


@dataclass
class VerifyReport:
    """What :func:`verify_results` found, and how many units are complete."""

    root: Path
    findings: list[Finding] = field(default_factory=list)
    complete: int = 0

    def add(self, level: str, where: str, message: str) -> None:
        self.findings.append(Finding(level, where, message))

    def count(self, level: str) -> int:
        return sum(f.level == level for f in self.findings)

    @property
    def ok(self) -> bool:
        return self.count("problem") == 0

    def summary(self) -> str:
        return (f"{self.root}: {self.complete} unit(s) complete, {self.count('running')} running; "
                f"{self.count('problem')} problem(s), {self.count('warning')} warning(s)")


def verify_results(results_dir: str | os.PathLike) -> VerifyReport:
    """Check ``results_dir`` (see the module docstring).

    Raises FileNotFoundError when the folder or its ``run.json`` does not exist (not a results folder).
    """
    root = Path(results_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    if not (root / store.RUN_FILE).is_file():
        raise FileNotFoundError(f"{root}: no {store.RUN_FILE}, so not a results folder of crossval.py / holdout.py")
    report = VerifyReport(root)
    try:
        run = store.RunFile.read(root)
    except ValueError as exc:
        report.add("problem", store.RUN_FILE, f"{exc}; the settings of the units cannot be compared")
        run = None
    if run is not None and run.legacy:
        report.add("warning", store.RUN_FILE, "made by an older tfrobseg (the data identified by the manifest "
                   "file's hash): the data are not compared by content")
    present: dict[tuple[str, str, str], set[int | None]] = defaultdict(set)
    for unit in _units(root):
        if _check_unit(report, root, unit, run):
            present[(unit.phase, unit.model, unit.loss)].add(unit.fold)
    _check_gaps(report, run, present)
    _check_submitted(report, root)
    if run is not None and not run.legacy:
        _check_data(report, run)
    _grid_info(report, root)
    return report


def _units(root: Path) -> list[Unit]:
    """Every unit with a folder or a lock file under ``root``."""
    uids = {d.relative_to(root).as_posix() for phase in PHASES for d in root.glob(f"{phase}/*/*/*") if d.is_dir()}
    locks = root / store.LOCKS_DIR
    uids |= {p.relative_to(locks).as_posix().removesuffix(".lock") for p in locks.glob("*/*/*/*.lock")}
    return [unit for unit in map(_unit_of, sorted(uids)) if unit is not None]


def _unit_of(uid: str) -> Unit | None:
    """The unit of an id ``<phase>/<model>/<loss>/<fold>`` (:attr:`Unit.uid`), None when it is not one."""
    parts = uid.split("/")
    if len(parts) != 4:
        return None
    phase, model, loss, fold = parts
    if phase in PHASES and (fold == "holdout" or (fold.startswith("fold") and fold[4:].isdigit())):
        return Unit(phase, model, loss, None if fold == "holdout" else int(fold[4:]))
    return None


def _check_unit(report: VerifyReport, root: Path, unit: Unit, run: store.RunFile | None) -> bool:
    """Report on one unit; True when it is complete or running (it counts as present in its grid)."""
    d = unit.directory(root)
    if not (d / MARKER).is_file():
        holder = current_holder(store.lock_path(unit, root))
        if holder is not None:
            report.add("running", unit.uid, f"being computed by {describe_holder(holder, since=True)}")
            return True
        if (d / store.FAILURE_NAME).is_file():
            report.add("problem", unit.uid, f"failed ({store.read_failure(d)}); a re-run of its command retries it")
        elif d.is_dir():
            report.add("problem", unit.uid, f"started but not complete (no {MARKER}: interrupted); a re-run of its "
                       "command restarts it")
        return False
    n_before = report.count("problem")
    for problem in store.unit_problems(d):
        report.add("problem", unit.uid, f"{problem}; a re-run of its command recomputes the unit")
    if report.count("problem") == n_before and store.UnitMarker.read(d).sha256 is None:
        report.add("warning", unit.uid, f"no checksums recorded in {MARKER} (made by an older tfrobseg): its files "
                   "cannot be checked")
    _check_record(report, d, unit, run)
    if report.count("problem") == n_before:
        report.complete += 1
    return True


def _check_record(report: VerifyReport, d: Path, unit: Unit, run: store.RunFile | None) -> None:
    """The unit's settings are the run's, and its metrics have one row per evaluated patient, ε and attack."""
    try:
        record = UnitRecord.read(d)
    except ValueError as exc:
        report.add("problem", unit.uid, str(exc))
        return
    fingerprint = record.settings.fingerprint()
    if run is not None and config_hash(fingerprint) != run.settings_hash:
        names = store.differing(run.settings, fingerprint)
        report.add("problem", unit.uid, f"made with other settings than {store.RUN_FILE} (differing: "
                   f"{', '.join(names) or 'unknown'}): the tables would mix two runs; move the unit out or "
                   "recompute it")
    metrics = d / store.METRICS_NAME
    if not metrics.is_file():
        report.add("problem", unit.uid, f"{store.METRICS_NAME}: missing")
        return
    try:
        rows = len(pd.read_csv(metrics))
    except (OSError, ValueError) as exc:
        report.add("problem", unit.uid, f"{store.METRICS_NAME}: unreadable ({type(exc).__name__}: {exc})")
        return
    n_patients, n_eps = len(record.patients.eval), len(record.settings.epsilons)
    # A distilled network's attacks are also made through its training temperature (the gradient-masking check).
    n_views = 1 + len(checked_temperatures(record.settings.defense))
    n_attacks = len(record.settings.evaluated_attacks()) * n_views
    if rows != n_patients * n_eps * n_attacks:
        attacks = f" x {n_attacks} attacks" if n_attacks > 1 else ""
        report.add("problem", unit.uid, f"{store.METRICS_NAME} has {rows} rows, {RECORD_NAME} lists {n_patients} "
                   f"evaluated patient(s) x {n_eps} eps{attacks} = {n_patients * n_eps * n_attacks}; recompute the unit")


def _check_gaps(report: VerifyReport, run: store.RunFile | None,
                present: dict[tuple[str, str, str], set[int | None]]) -> None:
    """Cross-validation folds missing inside a model × loss of which some folds are there."""
    folds = (run.data or {}).get("split", {}).get("folds") if run is not None else None
    n_folds = len(folds) if folds else study.N_FOLDS
    for (phase, model, loss), have in sorted(present.items()):
        missing = sorted(set(range(n_folds)) - have) if phase == "crossval" else []
        if missing:
            report.add("problem", f"{phase}/{model}/{loss}", f"fold(s) {', '.join(map(str, missing))} missing "
                       f"(have {', '.join(f'fold{k}' for k in sorted(have))}): its table rows average fewer folds; "
                       f"run crossval.py --model {model} --loss {loss} --folds {','.join(map(str, missing))}")


def _check_submitted(report: VerifyReport, root: Path) -> None:
    """Units submitted as SLURM array tasks whose task never started them (no folder, no lock): still queued, or
    cancelled before it ran; either way the grid is not complete."""
    from tfrobseg.experiment.executor import read_submissions

    for uid, task in sorted(read_submissions(root).items()):
        unit = _unit_of(uid)
        if unit is not None and not unit.directory(root).exists() and not store.lock_path(unit, root).exists():
            report.add("problem", uid, f"submitted as array task {task.job_id} on {task.submitted} and never started: "
                       f"still queued (squeue -j {task.job_id.split('_')[0]}) or cancelled (submit it again with its "
                       "command); its log: " + task.log)


def merge_results(root: str | os.PathLike) -> dict[str, tuple[Path, int]]:
    """Write ``results_<phase>.csv`` of ``root`` from every complete unit's rows (what a local run writes at its
    end; after many jobs, none of which saw the whole grid). Returns ``{phase: (path, rows)}``."""
    written = {}
    for phase in PHASES:
        frame = store.write_results(root, phase)
        if not frame.empty:
            written[phase] = (store.results_path(root, phase), len(frame))
    return written


def _check_data(report: VerifyReport, run: store.RunFile) -> None:
    """The run's data folder, when it is here, has the same content and readable records."""
    from tfrobseg.dataset.integrity import verify_records
    from tfrobseg.dataset.manifest import Manifest, describe_data_changes

    data_dir = Path(str(run.settings.get("data_dir", "")))
    if not data_dir.is_dir():
        report.add("info", "data", f"{data_dir} not found from here: the data were not checked")
        return
    try:
        manifest = Manifest.read(data_dir)
    except (OSError, ValueError) as exc:
        report.add("problem", "data", f"{exc}")
        return
    if manifest.content_hash() != run.settings.get("data_fingerprint"):
        changes = describe_data_changes(run.data, manifest.fingerprint()) if run.data else []
        report.add("problem", "data", f"{data_dir} changed since the run started "
                   f"({'; '.join(changes) or 'content fingerprint differs'}): new units would not match the others")
    try:
        verify_records(data_dir, manifest=manifest)
    except InputError as exc:
        report.add("problem", "data", str(exc))


def _grid_info(report: VerifyReport, root: Path) -> None:
    """Study-grid units not run (e.g. the demo runs one model): information, not problems."""
    from tfrobseg.reporting.grid import describe_missing, outside_reasons, unit_status

    results = store.collect_metrics(root)
    if results.empty:
        return
    inside = results[outside_reasons(results) == ""]
    for phase in PHASES:
        if (results["phase"] == phase).any():
            for line in describe_missing(unit_status(inside, phase)):
                report.add("info", f"study grid, {phase}", line)
