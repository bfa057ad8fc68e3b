"""Console: TensorFlow's native log lines filtered from descriptor 2 (also in spawn workers, also at an
abort), --verbose keeps them; progress as plain single-write lines when stderr is not a terminal."""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tfrobseg.console import NoiseFilter, Progress, progress, progress_mode

REPO = Path(__file__).resolve().parents[1]
NOISE = re.compile(r"^(I0000|E0000|W0000|WARNING: All log messages)", re.MULTILINE)
# Lines as TensorFlow 2.21 writes them (copied from a CPU machine), and one in the MMDD format of an initialised absl.
ABSL = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
INFO = b"I0000 00:00:1795443416.828855    2172 cudart_stub.cc:31] Could not find cuda drivers on your machine.\n"
ERROR = b"E0000 00:00:1795443418.301003    2172 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error\n"
XLA = b"I1123 14:20:01.123456   17882 device_compiler.h:208] Compiled cluster using XLA!\n"
WARN = b"W0000 00:00:1795443418.5    2172 op_kernel.cc:1857] a warning\n"
FATAL = b"F0000 00:00:1795443419.000001    2172 check.cc:10] Check failed: x == y\n"


def _filtered(*chunks: bytes) -> bytes:
    noise = NoiseFilter()
    return b"".join(noise.feed(c) for c in chunks) + noise.close()


def test_the_filter_drops_log_lines_and_keeps_the_rest():
    text = b"hello\n" + ABSL + INFO + b"Error: a real one\n" + ERROR + WARN + XLA + FATAL + b"bye\n"
    assert _filtered(text) == b"hello\nError: a real one\n" + FATAL + b"bye\n"


def test_partial_lines_pass_at_once_and_a_log_line_after_a_bar_is_dropped():
    noise = NoiseFilter()
    assert noise.feed(b"\rtrain: 10%") == b"\rtrain: 10%"  # a tqdm update: no newline, forwarded now
    assert noise.feed(b"\rtrain: 20%" + INFO) == b"\rtrain: 20%"  # a worker's log line right after it
    assert noise.feed(b"Epoch 1") == b"Epoch 1" and not noise.holding


def test_a_log_line_split_across_reads_is_held_then_dropped():
    noise = NoiseFilter()
    assert noise.feed(b"ok\n" + INFO[:3]) == b"ok\n" and noise.holding
    assert noise.feed(INFO[3:30]) == b""
    assert noise.feed(INFO[30:] + b"next\n") == b"next\n"
    # A held beginning that no log line follows is forwarded when the input pauses, and at the end.
    assert noise.feed(b"I") == b"" and noise.idle() == b"I"
    assert noise.feed(b"WARN") == b"" and noise.close() == b"WARN"


def _run_child(folder: Path, code: str, *, verbose: bool = False) -> subprocess.CompletedProcess:
    script = folder / "child.py"  # a file, not -c: spawn workers import the main module
    script.write_text(textwrap.dedent(code), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TFROBSEG_")}
    env["PYTHONPATH"] = str(REPO)
    if verbose:
        env["TFROBSEG_VERBOSE"] = "1"
    return subprocess.run([sys.executable, str(script)], capture_output=True, env=env, timeout=60, check=False)


CHILD = """
    import multiprocessing, os, sys
    from tfrobseg.console import setup_console

    def worker_init():
        setup_console()  # as the experiment grid's workers do

    def work(i):
        os.write(2, {info!r})
        os.write(2, b"worker line %d\\n" % i)
        return sys.stderr is sys.__stderr__  # no filter of its own: its stderr is the parent's filter

    if __name__ == "__main__":
        setup_console()
        os.write(2, {absl!r} + {info!r} + b"kept 1\\n")
        os.write(2, b"\\rpartial")
        os.write(2, b"\\rupdate\\n" + {error!r} + {fatal!r})
        print("python stderr", file=sys.stderr)
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(2, initializer=worker_init) as pool:
            print("workers without a filter:", all(pool.map(work, range(2))), flush=True)
        sys.exit("exit message")
"""


def test_setup_console_filters_the_process_and_its_spawn_workers(tmp_path):
    code = CHILD.format(absl=ABSL, info=INFO, error=ERROR, fatal=FATAL)
    quiet = _run_child(tmp_path, code)
    err = quiet.stderr.decode()
    assert quiet.returncode == 1 and "exit message" in err  # sys.exit's message is not lost
    assert not NOISE.search(err), err
    for kept in ("kept 1", "\rpartial\rupdate\n", "F0000", "python stderr", "worker line 0", "worker line 1"):
        assert kept in err, (kept, err)
    assert "workers without a filter: True" in quiet.stdout.decode()

    verbose = _run_child(tmp_path, code, verbose=True)
    err = verbose.stderr.decode()
    assert err.count("I0000") == 3 and "E0000" in err and "WARNING: All log messages" in err
    assert "worker line 1" in err and "exit message" in err


def test_a_fatal_line_before_an_abort_still_shows(tmp_path):
    code = f"""
        import os
        from tfrobseg.console import setup_console
        setup_console()
        os.write(2, {INFO!r} + {FATAL!r})
        os.abort()
    """
    proc = _run_child(tmp_path, code)
    assert proc.returncode != 0
    assert proc.stderr.decode() == FATAL.decode()


def test_help_prints_no_log_lines():
    proc = subprocess.run([sys.executable, str(REPO / "experiments/crossval.py"), "--help"], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120, check=True)
    assert "--verbose" in proc.stdout
    assert not NOISE.search(proc.stdout + proc.stderr)


def test_lines_mode_writes_plain_complete_lines(capfd, monkeypatch):
    monkeypatch.setenv("TFROBSEG_PROGRESS", "lines")
    assert progress_mode() == "lines"
    with progress(880, "attack crossval/unet/bce/fold0", unit="slice") as bar:
        for _ in range(880):
            bar.update(1)
    with progress(3, "train x", unit="epoch", each_step=True) as bar:
        bar.update(1, "loss 0.4123 val_loss 0.4500 lr 1e-03")
    with progress(5, "off", unit="patient", enabled=False) as bar:
        bar.update(5)
    err = capfd.readouterr().err
    assert "\x1b[" not in err and "\r" not in err
    lines = err.splitlines()
    assert lines[:2] == ["attack crossval/unet/bce/fold0: 10% (88/880 slices)",
                         "attack crossval/unet/bce/fold0: 20% (176/880 slices)"]
    assert len(lines) == 11 and lines[9] == "attack crossval/unet/bce/fold0: 100% (880/880 slices)"
    assert lines[10] == "train x: epoch 1/3 loss 0.4123 val_loss 0.4500 lr 1e-03"


def test_lines_mode_reports_after_30_seconds_without_a_10_percent_step(capfd, monkeypatch):
    bar = Progress(1000, "prepare", unit="patient", mode="lines")
    bar.update(1)
    assert capfd.readouterr().err == ""
    monkeypatch.setattr(bar, "_shown_at", bar._shown_at - Progress.EVERY_SECONDS)
    bar.update(1)
    assert capfd.readouterr().err == "prepare: 0% (2/1000 patients)\n"


def test_a_line_is_one_write(monkeypatch):
    writes = []
    monkeypatch.setattr(os, "write", lambda fd, data: writes.append((fd, data)) or len(data))
    Progress(2, "prepare", unit="patient", mode="lines").update(2)
    assert [data for _, data in writes] == [b"prepare: 100% (2/2 patients)\n"]


@pytest.mark.parametrize("mode", ["lines", "bars"])
def test_the_epoch_callback_reports_every_epoch(capfd, monkeypatch, mode):
    import keras
    import numpy as np

    from tfrobseg.training.callbacks import EpochProgress

    monkeypatch.setenv("TFROBSEG_PROGRESS", mode)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    x = np.ones((4, 2), "float32")
    model.fit(x, x[:, :1], validation_data=(x, x[:, :1]), epochs=2, verbose=0,
              callbacks=[EpochProgress(2, desc="train unit")])
    err = capfd.readouterr().err
    if mode == "bars":
        assert "train unit" in err and "\r" in err  # tqdm as before
        return
    lines = [line for line in err.splitlines() if not NOISE.match(line)]  # TensorFlow starts in this process
    assert len(lines) == 2 and "\r" not in err
    assert re.fullmatch(r"train unit: epoch 2/2 loss \d+\.\d{4} val_loss \d+\.\d{4} lr 1e-03", lines[1]), lines
