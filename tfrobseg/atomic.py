"""Atomic file output: write under a temporary name in the same folder, then ``os.replace``.

A crash or an error therefore never leaves a half-written file under the final name; the
temporary name starts with ``.tmp-`` so that :func:`remove_stale_temporaries` can clean up after
a killed run.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "atomic_write_text", "remove_stale_temporaries"]

TMP_PREFIX = ".tmp-"


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``, on error it is removed."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex[:8]}-{final.name}")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete temporaries left by a killed run in ``folder`` (not recursive); returns them."""
    folder = Path(folder)
    stale = sorted(folder.glob(f"{TMP_PREFIX}*")) if folder.is_dir() else []
    for p in stale:
        p.unlink()
    return stale
