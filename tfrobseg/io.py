"""File output that never leaves a half-written file, content hashes, and the library versions.

Every file the package writes (manifests, TFRecords, unit records, metrics, tables, figures,
models) goes through :func:`atomic_path`: it is written under a temporary name in the same
folder and moved into place with :func:`os.replace`, so a crash or an error never leaves a
half-written file under the final name. Temporary names start with ``.tmp-`` so that
:func:`remove_stale_temporaries` can clean up after a killed run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_path", "atomic_save_model", "atomic_write_csv", "atomic_write_json", "atomic_write_text",
    "config_hash", "environment_versions", "file_hash", "out_folder_problem", "remove_stale_temporaries", "save_figure",
    "to_json",
]

TMP_PREFIX = ".tmp-"
#: Distributions whose versions change the numbers; recorded next to every result.
VERSIONED = ("tfrobseg", "tensorflow", "keras", "numpy", "scipy", "pandas", "SimpleITK")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``, on error it is removed.

    The temporary name keeps ``path``'s suffix, so writers that infer the format from it
    (``.keras``, ``.png``, ``.pdf``) work unchanged.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex[:8]}-{final.name}")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically, flushed to disk before the rename."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    return Path(path)


def to_json(obj: Any) -> str:
    """Indented, key-sorted JSON (NumPy scalars and arrays, paths and sets converted)."""
    return json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n"


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write ``obj`` as :func:`to_json`."""
    return atomic_write_text(path, to_json(obj))


def atomic_write_csv(path: str | os.PathLike, df: Any) -> Path:
    """Atomically write a pandas DataFrame as CSV without its index."""
    return atomic_write_text(path, df.to_csv(index=False))


def atomic_save_model(model: Any, path: str | os.PathLike) -> Path:
    """Save a Keras model as ``.keras`` atomically."""
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"model path must end in .keras, got {path}")
    with atomic_path(path) as tmp:
        model.save(tmp)
    return path


def save_figure(fig: Any, stem: str | os.PathLike, formats: tuple[str, ...] = ("png", "pdf")) -> list[Path]:
    """Save a matplotlib figure as ``stem.<format>`` for each format, atomically, then close it."""
    import matplotlib.pyplot as plt

    paths = []
    for ext in formats:
        path = Path(stem).with_suffix(f".{ext}")
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110 if ext == "png" else None, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete temporaries left by a killed run in ``folder`` (not recursive); returns them."""
    folder = Path(folder)
    stale = sorted(folder.glob(f"{TMP_PREFIX}*")) if folder.is_dir() else []
    for p in stale:
        p.unlink()
    return stale


def _json_default(obj: Any) -> Any:
    # NumPy scalars / arrays, paths and sets appear in configs and metric summaries.
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "shape", None) == ():
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def config_hash(settings: Mapping[str, Any]) -> str:
    """SHA-256 (first 16 hex digits) of the canonical JSON of ``settings``."""
    blob = json.dumps(settings, sort_keys=True, default=_json_default).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


def file_hash(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def environment_versions() -> dict[str, str]:
    """Versions of Python, the platform, this package and the libraries that change the numbers.

    Read from the installed distributions' metadata, so nothing heavy is imported.
    """
    import importlib.metadata as md

    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in VERSIONED:
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = "not installed"
    return versions


def out_folder_problem(out: str | os.PathLike) -> str | None:
    """Why ``out`` cannot be used as an output folder (None when it can): it is a file, a file is in the
    way of creating it, or its nearest existing folder refuses a new file. Writing is tried for real:
    the permission bits do not tell (root ignores them; read-only mounts)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        return "is a file, not a folder; choose a folder"
    ancestor = out
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"{ancestor} is a file, so the folder cannot be created; choose another --out"
    probe = ancestor / f"{TMP_PREFIX}probe-{uuid.uuid4().hex[:8]}"
    try:
        probe.touch()
        probe.unlink()
    except OSError as exc:
        return f"cannot write in {ancestor} ({exc.strerror or type(exc).__name__}); choose a folder you can write to"
    return None
