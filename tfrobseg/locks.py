"""Advisory file locks: one writer per prepared-data folder, one process per unit of a results folder.

A lock is an exclusive ``fcntl.flock`` on a small file that is kept open while the lock is held.
The kernel releases it when the holder exits in any way (Ctrl-C, ``kill -9``, a node failure seen
by the NFS lock manager), so there are no stale locks to clean up after a crash, and a lock file
left on disk means nothing by itself. The file holds who took the lock (host, process id, time),
only for the message another process prints when it finds the lock taken.

Lock files are never deleted: removing one while a second process waits on it would let two
processes hold "the" lock on two different files.

Shared filesystems: ``flock`` is honoured across machines on NFS (Linux clients map it to POSIX
locks held by the lock manager), on Lustre mounted with ``-o flock`` and on GPFS/Spectrum Scale.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Self

__all__ = ["FileLock", "LockHeld", "current_holder", "describe_holder", "read_holder"]


class LockHeld(RuntimeError):
    """The lock is held by another process; ``holder`` says which (host, pid, since), when known."""

    def __init__(self, path: Path, holder: dict):
        self.path = Path(path)
        self.holder = holder
        super().__init__(f"{path}: locked by {describe_holder(holder, since=True)}")


class FileLock:
    """An exclusive, non-blocking lock on ``path`` (created with its parent folders when missing).

    ``acquire()`` raises :class:`LockHeld` when another process holds it; ``release()`` is idempotent.
    The same process taking a lock it already holds through another ``FileLock`` also gets
    :class:`LockHeld` (``flock`` locks belong to the open file, not the process).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> FileLock:
        if self._fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockHeld(self.path, read_holder(self.path)) from None
        except BaseException:
            os.close(fd)
            raise
        info = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # an unheld lock names nobody
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def read_holder(path: str | os.PathLike) -> dict:
    """Who holds the lock at ``path`` as written by its holder ({} when unknown or unreadable)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}



def describe_holder(holder: dict, *, since: bool = False) -> str:
    """``process P on host H`` (``since T`` added with ``since``), or ``another process`` when unknown."""
    if not holder:
        return "another process"
    text = f"process {holder.get('pid', '?')} on host {holder.get('host', '?')}"
    return f"{text} since {holder.get('since', '?')}" if since else text


def current_holder(path: str | os.PathLike) -> dict | None:
    """Who holds the lock at ``path`` ({} when unknown), or None when nobody does (probed by taking it)."""
    if not Path(path).is_file():
        return None
    try:
        FileLock(path).acquire().release()
    except LockHeld as exc:
        return exc.holder
    return None
