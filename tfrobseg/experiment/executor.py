"""Where a grid's units run: here, in worker processes (``--executor local``), or on a SLURM cluster as one job
array submitted through submitit (``--executor slurm``, the optional extra ``pip install 'tfrobseg[cluster]'``).

On SLURM each array task computes exactly one unit with the code a local worker runs (the grid's
``_worker_run``, or one unit's attacks of ``experiments/attack.py``): it takes the unit's lock, skips a unit
another task completed, clears a half-finished folder and starts it from scratch. A task that SLURM pre-empts
or that reaches its time limit is requeued by submitit (:class:`ArrayTask` is checkpointable: the same unit
again), and, like an interrupted local unit, restarts from scratch; so does a unit whose task was killed, on
the next submission. Units already complete are not submitted; several submissions and machines can share
one results folder because the per-unit locks (:mod:`tfrobseg.locks`) keep two tasks off one unit.

A run's settings describe the machine its units run on, not the one that submits them: under
``--executor slurm`` a unit has ``--gpus-per-unit`` GPUs (mixed precision and the replica count follow from
it) and ``--cpus-per-unit`` threads unless ``--threads`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfrobseg.errors import OptionError

__all__ = ["EXECUTORS", "SUBMITIT_CLUSTERS", "SUBMIT_DIR", "ArrayTask", "ExecutorConfig", "Submission",
           "SubmittedTask", "TaskOutcome", "add_executor_options", "executor_argv", "local_gpus", "read_submissions",
           "record_submissions", "require_submitit", "resolve_executor", "submit_array"]

EXECUTORS = ("local", "slurm")
#: submitit's clusters: ``slurm``, or ``local`` / ``debug`` to run the same array on this machine (tests, trying a
#: set-up before the cluster).
SUBMITIT_CLUSTERS = ("slurm", "local", "debug")
#: Where a results folder keeps submitit's files (the pickled tasks, each task's stdout / stderr) and the log of
#: what was submitted (:class:`SubmittedTask`).
SUBMIT_DIR = "slurm"
SUBMITTED_LOG = "submitted.jsonl"
_INSTALL = "pip install 'tfrobseg[cluster]'"


@dataclass(frozen=True)
class ExecutorConfig:
    """How a grid's units are run (``--executor`` and its options; the defaults are one unit per GPU node)."""

    name: str = "local"
    partition: str | None = None
    gpus_per_unit: int = 1
    cpus_per_unit: int = 8
    mem_gb: float | None = None
    time_min: int = 24 * 60
    array_parallelism: int = 64
    slurm_options: tuple[tuple[str, str], ...] = ()  # extra #SBATCH options, e.g. (("account", "lab"),)
    setup: tuple[str, ...] = ()  # shell lines each task runs before Python (module load, source a venv)
    wait: bool = False
    cluster: str = "slurm"

    def __post_init__(self) -> None:
        if self.name not in EXECUTORS:
            raise ValueError(f"executor must be one of {EXECUTORS}, got {self.name!r}")
        if self.cluster not in SUBMITIT_CLUSTERS:
            raise ValueError(f"submitit cluster must be one of {SUBMITIT_CLUSTERS}, got {self.cluster!r}")
        if self.gpus_per_unit < 0 or self.cpus_per_unit < 1 or self.time_min < 1 or self.array_parallelism < 1 \
                or (self.mem_gb is not None and self.mem_gb <= 0):
            raise ValueError("--gpus-per-unit must be >= 0, --cpus-per-unit, --time and --array-parallelism >= 1, "
                             "--mem > 0")

    @property
    def remote(self) -> bool:
        """Whether units are submitted (SLURM through submitit) rather than computed by this process's workers."""
        return self.name == "slurm"

    def unit_gpus(self) -> int:
        """The GPUs of the machine a unit runs on, which the run's settings are made for: ``--gpus-per-unit`` on
        SLURM, this machine's own otherwise."""
        return self.gpus_per_unit if self.remote else local_gpus()

    def parameters(self, name: str) -> dict[str, Any]:
        """submitit's ``update_parameters`` keywords for an array called ``name`` (one task per unit, one node)."""
        params: dict[str, Any] = {"name": name, "timeout_min": self.time_min, "nodes": 1, "tasks_per_node": 1,
                                  "cpus_per_task": self.cpus_per_unit, "gpus_per_node": self.gpus_per_unit,
                                  "slurm_array_parallelism": self.array_parallelism}
        if self.mem_gb is not None:
            params["mem_gb"] = self.mem_gb
        if self.partition:
            params["slurm_partition"] = self.partition
        if self.slurm_options:
            params["slurm_additional_parameters"] = dict(self.slurm_options)
        if self.setup:
            params["slurm_setup"] = list(self.setup)
        return params


def add_executor_options(p: argparse.ArgumentParser) -> None:
    """The executor options of every grid command (docs/cluster.md)."""
    g = p.add_argument_group("where the units run (docs/cluster.md)")
    g.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="local (default: this machine, --jobs units at once) or slurm (the pending units as one "
                        f"SLURM job array through submitit: {_INSTALL})")
    g.add_argument("--partition", default=None, help="slurm: the partition (default: the cluster's)")
    g.add_argument("--gpus-per-unit", type=int, default=1,
                   help="slurm: GPUs per unit (default 1; 2 or more train one unit with --strategy mirrored; 0 for "
                        "CPU nodes). The run's precision and replicas follow from it, not from the submitting machine")
    g.add_argument("--cpus-per-unit", type=int, default=8,
                   help="slurm: CPU cores per unit (default 8); also the unit's threads unless --threads is given")
    g.add_argument("--mem", type=float, default=None, metavar="GB", help="slurm: memory per unit in GB")
    g.add_argument("--time", type=int, default=24 * 60, metavar="MINUTES",
                   help="slurm: time limit per unit in minutes (default 1440); a unit that reaches it is requeued "
                        "and restarted from scratch (up to 3 times), so give more than --dry-run's estimate")
    g.add_argument("--array-parallelism", type=int, default=64, help="slurm: units running at once (default 64)")
    g.add_argument("--slurm-option", action="append", default=None, metavar="KEY=VALUE",
                   help="slurm: another #SBATCH option, e.g. account=mylab or qos=long (repeat for several)")
    g.add_argument("--setup", action="append", default=None, metavar="LINE",
                   help="slurm: a shell line each task runs first, e.g. 'module load cuda' (repeat for several)")
    g.add_argument("--wait", action="store_true",
                   help="slurm: follow the array until every unit finished, then write the tables as a local run does")
    g.add_argument("--submitit-cluster", choices=SUBMITIT_CLUSTERS, default="slurm",
                   help="slurm: submitit's cluster; local or debug run the same array on this machine (to try a "
                        "set-up before the cluster)")


def require_submitit() -> Any:
    """The submitit module, or OptionError with the one line that says how to install it."""
    try:
        import submitit
    except ImportError:
        raise OptionError(f"--executor slurm needs submitit, an optional extra: {_INSTALL}") from None
    return submitit


def resolve_executor(args: argparse.Namespace) -> ExecutorConfig:
    """The executor of the parsed options, checked (OptionError naming the option) before anything is prepared or
    created: ``slurm`` needs submitit and, unless it is a ``--dry-run`` or another submitit cluster, ``srun``."""
    name = getattr(args, "executor", "local")
    slurm_only = {"--partition": args.partition, "--mem": args.mem, "--slurm-option": args.slurm_option,
                  "--setup": args.setup, "--wait": args.wait or None}
    if name == "local":
        given = [flag for flag, value in slurm_only.items() if value is not None]
        if given:
            raise OptionError(f"{', '.join(given)}: options of --executor slurm")
        return ExecutorConfig()
    if getattr(args, "jobs", None) is not None:
        raise OptionError("--jobs is for --executor local; on SLURM every unit is an array task of its own "
                          "(--array-parallelism says how many run at once)")
    options = []
    for item in args.slurm_option or ():
        key, eq, value = str(item).partition("=")
        if not eq or not key.strip():
            raise OptionError(f"--slurm-option {item!r}: expected KEY=VALUE, e.g. account=mylab")
        options.append((key.strip().lstrip("-"), value.strip()))
    try:
        config = ExecutorConfig(name, args.partition, args.gpus_per_unit, args.cpus_per_unit, args.mem, args.time,
                                args.array_parallelism, tuple(options), tuple(args.setup or ()), bool(args.wait),
                                args.submitit_cluster)
    except ValueError as exc:
        raise OptionError(str(exc)) from None
    require_submitit()
    if config.cluster == "slurm" and not getattr(args, "dry_run", False) and shutil.which("srun") is None:
        raise OptionError("--executor slurm: no SLURM on this machine (srun not found): submit from the cluster's "
                          "login node, or try the array here with --submitit-cluster local")
    return config


def executor_argv(args: argparse.Namespace) -> list[str]:
    """The executor options of ``args`` as command-line flags, for a command that starts another (the related-work
    experiments' extra attacks: ``experiments/attack.py``)."""
    if getattr(args, "executor", "local") == "local":
        return []
    argv = ["--executor", args.executor, "--gpus-per-unit", str(args.gpus_per_unit), "--cpus-per-unit",
            str(args.cpus_per_unit), "--time", str(args.time), "--array-parallelism", str(args.array_parallelism),
            "--submitit-cluster", args.submitit_cluster]
    for flag, value in (("--partition", args.partition), ("--mem", args.mem)):
        if value is not None:
            argv += [flag, str(value)]
    for flag, values in (("--slurm-option", args.slurm_option), ("--setup", args.setup)):
        for value in values or ():
            argv += [flag, value]
    return argv + (["--wait"] if args.wait else [])


class ArrayTask:
    """One array task: ``fn(*args)`` in a fresh process whose TensorFlow thread pools and op determinism are set
    first (they change a CPU's rounding, as in a local worker). Checkpointable in submitit's sense: on
    pre-emption or at the time limit submitit calls :meth:`checkpoint` and requeues the same call, which
    restarts the unit from scratch (no mid-training resume, as locally)."""

    def __init__(self, fn: Callable[..., Any], threads: int, deterministic: bool):
        self.fn, self.threads, self.deterministic = fn, threads, deterministic

    def __call__(self, *args: Any) -> Any:
        from tfrobseg.console import setup_console

        setup_console()
        from tfrobseg.parallel import configure_threads

        # False only on submitit's debug cluster, which runs the task in the submitting process.
        configure_threads(self.threads, self.deterministic)
        return self.fn(*args)

    def checkpoint(self, *args: Any) -> Any:
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args)


@dataclass
class Submission:
    """The array of one submission: its submitit jobs, each with the label (unit id) of what it computes."""

    jobs: list[Any]
    labels: list[str]
    folder: Path

    @property
    def array_id(self) -> str:
        return str(self.jobs[0].job_id).split("_")[0] if self.jobs else ""

    def follow(self, say: Callable[[str], None]) -> None:
        """Wait until every task ended, saying how many did as they do (SLURM is asked every 30 s)."""
        poll = 30.0 if self.jobs and type(self.jobs[0]).__name__ == "SlurmJob" else 1.0
        total, reported = len(self.jobs), -1
        while True:
            ended = sum(job.done() for job in self.jobs)
            if ended != reported:
                say(f"array {self.array_id}: {ended}/{total} task(s) ended")
                reported = ended
            if ended == total:
                return
            time.sleep(poll)

    def outcomes(self) -> list[TaskOutcome]:
        """What each task of an ended array returned, or why it did not (its error, or the task was killed)."""
        outcomes = []
        for label, job in zip(self.labels, self.jobs):
            try:
                result, error = job.result(), None
            except Exception as exc:  # noqa: BLE001 (the task's own error, or submitit's for a task killed before it ended)
                result, error = None, " ".join(str(exc).split())[-300:]
            outcomes.append(TaskOutcome(label, str(job.job_id), result, error, str(job.paths.stderr)))
        return outcomes


@dataclass(frozen=True)
class TaskOutcome:
    """One ended array task: its label, job id, what it returned (``None`` on an error), the error's last 300
    characters on one line (``None`` when it returned), and its log file."""

    label: str
    job_id: str
    result: Any
    error: str | None
    log: str


def submit_array(tasks: Sequence[tuple[str, Callable[..., Any], tuple]], config: ExecutorConfig, folder: Path, *,
                 name: str, threads: int, deterministic: bool) -> Submission:
    """Submit ``tasks`` (``(label, fn, args)``, ``fn`` a module-level function) as one job array; submitit's files
    go to ``folder`` (each task pickled, its stdout and stderr)."""
    submitit = require_submitit()
    folder.mkdir(parents=True, exist_ok=True)
    executor = submitit.AutoExecutor(folder=str(folder), cluster=config.cluster)
    params = config.parameters(name)
    if config.cluster != "slurm":
        # submitit's local cluster hands out this machine's GPUs and fails asking for more than it has.
        params["gpus_per_node"] = min(config.gpus_per_unit, local_gpus())
    executor.update_parameters(**params)
    jobs = []
    with executor.batch():
        for _, fn, args in tasks:
            jobs.append(executor.submit(ArrayTask(fn, threads, deterministic), *args))
    return Submission(jobs, [label for label, _, _ in tasks], folder)


def local_gpus() -> int:
    """The GPUs TensorFlow sees on this machine."""
    import tensorflow as tf

    return len(tf.config.list_physical_devices("GPU"))


@dataclass(frozen=True)
class SubmittedTask:
    """One line of ``<out>/slurm/submitted.jsonl``: a unit submitted as an array task, when, and where its log is;
    ``experiments/verify.py`` names the task of a unit that never completed."""

    unit: str
    job_id: str
    log: str
    submitted: str


def record_submissions(out_dir: Path, tasks: Sequence[tuple[str, Any]]) -> Path:
    """Append ``tasks`` (unit id of ``out_dir``, its submitit job) to the folder's log, in one ``O_APPEND`` write
    (never rewritten: several machines may submit into one folder)."""
    path = Path(out_dir) / SUBMIT_DIR / SUBMITTED_LOG
    path.parent.mkdir(parents=True, exist_ok=True)
    when = time.strftime("%Y-%m-%d %H:%M:%S")
    lines = "".join(json.dumps(SubmittedTask(uid, str(job.job_id), str(job.paths.stderr), when).__dict__) + "\n"
                    for uid, job in tasks)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, lines.encode("utf-8"))
    finally:
        os.close(fd)
    return path


def read_submissions(out_dir: Path) -> dict[str, SubmittedTask]:
    """The latest submission of each unit of ``out_dir`` ({} when none); a line cut short by a crash is skipped."""
    path = Path(out_dir) / SUBMIT_DIR / SUBMITTED_LOG
    if not path.is_file():
        return {}
    latest: dict[str, SubmittedTask] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            task = SubmittedTask(**json.loads(line))
        except (ValueError, TypeError):
            continue
        latest[task.unit] = task
    return latest
