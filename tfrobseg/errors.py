"""The package's own errors: a bad input file of one patient, an output file that cannot be written, a
prepared record that no longer matches its manifest, a results folder made with other settings, a training run
whose loss stopped being finite, and a figure's unit that cannot be trained."""

from __future__ import annotations

__all__ = ["FigureUnitError", "InputError", "OptionError", "OutputError", "RecordError", "SettingsMismatchError",
           "TrainingDiverged", "UnitFilesError", "UnitsFailed", "UnitsSubmitted"]


class InputError(ValueError):
    """A bad input: the one-line message names the patient (when known), the file and the problem."""

    def __init__(self, message: str, *, patient: str | None = None, path: object = None):
        self.patient = patient
        self.path = None if path is None else str(path)
        parts = [p for p in (patient, self.path) if p]
        super().__init__(": ".join([*parts, " ".join(str(message).split())]))


class OutputError(OSError):
    """An output file could not be written (disk full, permission denied); the one-line message names it."""


class RecordError(InputError):
    """A prepared record is missing, truncated, corrupted or has no checksum; the message names the patient,
    the file and how to prepare it again."""


class SettingsMismatchError(RuntimeError):
    """A results folder already holds a run made with different settings."""


class TrainingDiverged(RuntimeError):
    """The training (or validation) loss became NaN or infinite; the one-line message says where."""


class UnitsFailed(RuntimeError):
    """Units of a grid failed; the others completed. ``failures`` maps each unit id to its one-line reason."""

    def __init__(self, failures: dict[str, str]):
        self.failures = dict(failures)
        super().__init__("; ".join(f"{uid}: {reason}" for uid, reason in self.failures.items()))


class UnitsSubmitted(RuntimeError):
    """Units of a grid were submitted to a cluster and not waited for (``--executor slurm`` without ``--wait``);
    the message says which array and what to run when it has finished."""


class OptionError(SystemExit):
    """A command-line option, the --out folder or the data cannot make a run; the one-line message says which
    and how to fix it. Raised before any folder is created or any work starts. A SystemExit, so that a script
    that does not catch it still ends with its message; the experiment scripts print it and exit 2."""


class UnitFilesError(RuntimeError):
    """A completed unit's files do not match the checksums of its marker, or its model cannot be loaded;
    the one-line message names the unit and the file."""


class FigureUnitError(RuntimeError):
    """The unit a figure needs is not in the results folder and cannot be trained for it (the folder's
    ``run.json`` or settings unreadable, its data changed, or the training failed); the one-line message
    names the unit or the file."""
