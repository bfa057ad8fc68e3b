"""The error raised for a bad input file of one patient (skipped, or fatal with ``--strict``)."""

from __future__ import annotations

__all__ = ["InputError"]


class InputError(ValueError):
    """A bad input: the one-line message names the patient (when known), the file and the problem."""

    def __init__(self, message: str, *, patient: str | None = None, path: object = None):
        self.patient = patient
        self.path = None if path is None else str(path)
        parts = [p for p in (patient, self.path) if p]
        super().__init__(": ".join([*parts, " ".join(str(message).split())]))
