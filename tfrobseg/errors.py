"""The package's own errors: a bad input file of one patient, and a results folder made with other settings."""

from __future__ import annotations

__all__ = ["InputError", "SettingsMismatchError"]


class InputError(ValueError):
    """A bad input: the one-line message names the patient (when known), the file and the problem."""

    def __init__(self, message: str, *, patient: str | None = None, path: object = None):
        self.patient = patient
        self.path = None if path is None else str(path)
        parts = [p for p in (patient, self.path) if p]
        super().__init__(": ".join([*parts, " ".join(str(message).split())]))


class SettingsMismatchError(RuntimeError):
    """A results folder already holds a run made with different settings."""
