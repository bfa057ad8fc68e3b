"""What the command-line tools print: TensorFlow's native log lines hidden, progress readable in logs.

Native logs. TensorFlow 2.21 writes its start-up lines (``WARNING: All log messages before
absl::InitializeLog() ...``, ``I0000 ... cudart_stub.cc:31] Could not find cuda drivers ...``,
``E0000 ... failed call to cuInit ...``) and later ``I0000 ... Compiled cluster using XLA!`` from
C++ straight to file descriptor 2, and no switch turns them all off (measured: with
``TF_CPP_MIN_LOG_LEVEL=3``, ``TF_CPP_MAX_VLOG_LEVEL``, ``ABSL_MIN_LOG_LEVEL``, ``GLOG_minloglevel``
or ``ABSL_STDERRTHRESHOLD`` the lines logged before absl is initialised still appear).
:func:`setup_console` therefore points descriptor 2 at a pipe read by a small filter *process*
that forwards everything but those lines to the real stderr. A process rather than a thread: a
C++ ``F0000`` (fatal) line is followed by ``abort()``, which would kill a thread before it
forwarded the line; the filter process drains the pipe to its end whatever happens to the
writers. Worker processes (``spawn``) inherit descriptor 2, so their lines pass through the same
filter. Python's own ``sys.stderr`` is kept on the real stderr. ``--verbose`` (or
``TFROBSEG_VERBOSE=1``, which workers inherit) turns the filter off.

Progress. On a terminal: tqdm bars, one row per worker. In a file or pipe: plain complete lines,
each written at once (so the lines of several workers never mix), at most every 10 % or 30 s.
The choice is made once, in the process that calls :func:`setup_console`, and passed to workers in
``TFROBSEG_PROGRESS`` (``bars`` or ``lines``).

Only the standard library is imported here: the filter process imports this module.
"""

from __future__ import annotations

import argparse
import atexit
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Self

__all__ = ["NoiseFilter", "Progress", "add_verbose_option", "progress", "progress_mode", "setup_console"]

VERBOSE_ENV = "TFROBSEG_VERBOSE"
PROGRESS_ENV = "TFROBSEG_PROGRESS"
# The identity (device:inode) of the filter's pipe: a process whose stderr is that pipe is filtered already.
_PIPE_ENV = "TFROBSEG_STDERR_FILTER"

# absl's line header: severity, MMDD, time (before absl is initialised: 0000 00:00:<Unix seconds>), thread id,
# file:line. Fatal (F) lines are kept.
_HEADER = (rb"(?:[IWE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] "
           rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR)")
_HEADER_RE = re.compile(_HEADER)
_NOISE_LINE_RE = re.compile(_HEADER + rb"[^\n]*\n")
# Loose: every beginning of a header matches (and a few other strings, which only wait _IDLE_S longer).
_HEADER_START_RE = re.compile(rb"[IWE]\d{0,4}(?: [\d:.]*(?: +\d*(?: \S*)?)?)?")
_ABSL_WARNING = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
_IDLE_S = 0.1  # how long the possible start of a noise line is held back before it is forwarded as is
# Written to the pipe at exit: the filter answers once everything before it is forwarded.
_FLUSH = b"\x00tfrobseg-console-flush\x00"


class NoiseFilter:
    """Streaming filter of bytes: drops TensorFlow/absl log lines, forwards the rest at once.

    Lines are cut at ``\\n``; a partial line (a tqdm ``\\r`` update) is forwarded as soon as it
    cannot be the start of a log line. A log line is found anywhere in a line, because a worker's
    C++ line can follow a progress bar's partial line.
    """

    def __init__(self) -> None:
        self._carry = b""

    @property
    def holding(self) -> bool:
        """Whether bytes are held back (a possible log line not yet complete)."""
        return bool(self._carry)

    def feed(self, chunk: bytes) -> bytes:
        """The bytes of ``chunk`` (after those held back) that can be forwarded now."""
        data = _NOISE_LINE_RE.sub(b"", self._carry + chunk)
        start = max(data.rfind(b"\n"), data.rfind(b"\r")) + 1
        tail = data[start:]
        header = _HEADER_RE.search(tail)
        if header:
            keep = start + header.start()  # a log line whose end has not arrived yet
        elif _HEADER_START_RE.fullmatch(tail) or (tail and _ABSL_WARNING.startswith(tail)):
            keep = start
        else:
            keep = len(data)
        self._carry = data[keep:]
        return data[:keep]

    def idle(self) -> bytes:
        """No more bytes came for a while: forward what was held unless it is a log line's beginning."""
        if _HEADER_RE.match(self._carry):
            return b""
        out, self._carry = self._carry, b""
        return out

    def close(self) -> bytes:
        """End of input: what is left, less an unterminated log line."""
        out = b"" if _HEADER_RE.match(self._carry) else self._carry
        self._carry = b""
        return out


def _write_all(fd: int, data: bytes) -> bool:
    """Write ``data`` to ``fd``; False when the reader has gone (the caller keeps draining its input)."""
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:
        return False
    return True


def _forward(src: int = 0, dst: int = 2, ack: int = 1) -> None:
    """The filter process: copy ``src`` to ``dst`` through :class:`NoiseFilter` until end of input,
    answering on ``ack`` each flush request."""
    # Ctrl-C reaches the whole process group; the filter must live on to forward the last lines.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    noise = NoiseFilter()
    alive = True
    while True:
        if noise.holding and not select.select([src], [], [], _IDLE_S)[0]:
            alive = alive and _write_all(dst, noise.idle())
            continue
        chunk = os.read(src, 65536)
        if not chunk:
            break
        *flushed, rest = chunk.split(_FLUSH)
        for part in flushed:
            alive = alive and _write_all(dst, noise.feed(part) + noise.idle())
            _write_all(ack, b".")
        alive = alive and _write_all(dst, noise.feed(rest))
    if alive:
        _write_all(dst, noise.close())


def add_verbose_option(parser: argparse.ArgumentParser) -> None:
    """Add ``--verbose``: show TensorFlow's native log lines (hidden by default)."""
    parser.add_argument("--verbose", action="store_true",
                        help=f"show TensorFlow's start-up and XLA log lines (hidden by default; also {VERBOSE_ENV}=1)")


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _pipe_id(fd: int) -> str:
    st = os.fstat(fd)
    return f"{st.st_dev}:{st.st_ino}"


def _stderr_is_fd2() -> bool:
    """Whether Python's stderr is descriptor 2 (not e.g. pytest's capture, which must stay untouched)."""
    try:
        return sys.stderr.fileno() == 2
    except (AttributeError, ValueError, OSError):
        return False


def setup_console(verbose: bool = False) -> None:
    """Call first thing after parsing a command's options (and in each worker process).

    Decides the progress style once (bars on a terminal, lines otherwise) and, unless ``verbose``
    or ``TFROBSEG_VERBOSE=1``, hides TensorFlow's native log lines for this process and the
    processes it starts. Idempotent; a worker whose stderr is its parent's filter does nothing.
    """
    if PROGRESS_ENV not in os.environ:
        tty = _isatty(sys.stderr)
        os.environ[PROGRESS_ENV] = "bars" if tty else "lines"
        if tty:  # workers' bars are drawn through the filter's pipe, where tqdm cannot ask the terminal its width
            os.environ.setdefault("COLUMNS", str(shutil.get_terminal_size().columns))
    if verbose or os.environ.get(VERBOSE_ENV) == "1":
        os.environ[VERBOSE_ENV] = "1"
        return
    # Keeps out multi-line INFO messages (CPU feature guard) whose continuation lines carry no header.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if not _stderr_is_fd2() or os.environ.get(_PIPE_ENV) == _pipe_id(2):
        return
    _start_filter()


def _start_filter() -> None:
    read_end, write_end = os.pipe()
    root = str(Path(__file__).resolve().parents[1])
    code = f"import sys; sys.path.insert(0, {root!r}); from tfrobseg.console import _forward; _forward()"
    # -I -S: a bare interpreter (this module needs only the standard library) starts in ~20 ms.
    proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", code], stdin=read_end, stdout=subprocess.PIPE)
    os.close(read_end)
    sys.stderr.flush()
    real = os.dup(2)
    os.dup2(write_end, 2)
    os.close(write_end)
    os.environ[_PIPE_ENV] = _pipe_id(2)
    encoding = getattr(sys.stderr, "encoding", None) or "utf-8"
    sys.stderr = open(real, "w", encoding=encoding, errors="backslashreplace", buffering=1, closefd=False)  # noqa: SIM115
    atexit.register(_stop_filter, proc, real)


def _stop_filter(proc: subprocess.Popen, real: int) -> None:
    """At exit: wait until the filter has forwarded every line written so far, then hand descriptor 2
    back. Not waiting for the filter's end: multiprocessing's resource tracker keeps the pipe open
    until this process has exited (the filter then forwards anything later and stops)."""
    for stream in (sys.stderr, sys.__stderr__):
        try:
            stream.flush()
        except (AttributeError, ValueError, OSError):
            pass
    try:
        os.write(2, _FLUSH)
        select.select([proc.stdout], [], [], 10)  # the answer, or end of file if the filter is gone
    except OSError:
        pass
    os.dup2(real, 2)


def progress_mode() -> str:
    """``bars`` (a terminal) or ``lines`` (a file or pipe), as decided by :func:`setup_console`."""
    mode = os.environ.get(PROGRESS_ENV)
    if mode in ("bars", "lines"):
        return mode
    return "bars" if _isatty(sys.stderr) else "lines"


def _write_line(text: str) -> None:
    """One line to stderr in a single write, so that the lines of several processes never mix."""
    stream = sys.stderr
    try:
        fd = stream.fileno()
    except (AttributeError, ValueError, OSError):
        stream.write(text + "\n")
        stream.flush()
        return
    stream.flush()
    _write_all(fd, (text + "\n").encode(getattr(stream, "encoding", None) or "utf-8", errors="replace"))


class Progress:
    """Progress of one loop: a tqdm bar (``bars``), plain lines (``lines``) or nothing (``off``).

    ``update(n, status)`` advances by ``n``; ``status`` is shown beside the count. Lines name what
    progresses: ``attack crossval/unet/bce/fold0: 50% (440/880 slices)``, written at every 10 % or
    after 30 s; with ``each_step`` one line per step, ``train …: epoch 5/40 loss 0.41 …``.
    """

    EVERY_FRACTION = 0.1
    EVERY_SECONDS = 30.0

    def __init__(self, total: int | None, desc: str, *, unit: str, position: int = 0, mode: str = "lines",
                 each_step: bool = False) -> None:
        self.total, self.desc, self.unit, self.mode, self.each_step = total, desc, unit, mode, each_step
        self.count = 0
        self._shown = 0
        self._shown_at = time.monotonic()
        self._bar = None
        if mode == "bars":
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True, position=position)

    def update(self, n: int = 1, status: str | None = None) -> None:
        self.count += n
        if self._bar is not None:
            if status:
                self._bar.set_postfix_str(status, refresh=False)
            self._bar.update(n)
        elif self.mode == "lines" and self._due():
            _write_line(self._line(status))
            self._shown, self._shown_at = self.count, time.monotonic()

    def _due(self) -> bool:
        if self.each_step or self.count == self.total:
            return True
        if time.monotonic() - self._shown_at >= self.EVERY_SECONDS:
            return True
        if not self.total:
            return False
        step = self.EVERY_FRACTION * self.total
        return int(self.count / step) > int(self._shown / step)

    def _line(self, status: str | None) -> str:
        of = f"/{self.total}" if self.total else ""
        if self.each_step:
            text = f"{self.desc}: {self.unit} {self.count}{of}"
        elif self.total:
            text = f"{self.desc}: {100 * self.count / self.total:.0f}% ({self.count}{of} {self.unit}s)"
        else:
            text = f"{self.desc}: {self.count} {self.unit}s"
        return f"{text} {status}" if status else text

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(total: int | None, desc: str, *, unit: str, position: int = 0, enabled: bool = True,
             each_step: bool = False) -> Progress:
    """The progress display of a loop of ``total`` steps, in the style :func:`progress_mode` names
    (nothing when not ``enabled``); ``position`` is the bar's terminal row (one per worker)."""
    mode = progress_mode() if enabled else "off"
    return Progress(total, desc, unit=unit, position=position, mode=mode, each_step=each_step)
