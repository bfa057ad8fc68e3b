"""File locks: exclusive between processes, released when the holder dies, and naming the holder."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from tfrobseg.locks import FileLock, LockHeld, read_holder

HOLD = textwrap.dedent("""
    import sys, time
    from tfrobseg.locks import FileLock
    FileLock(sys.argv[1]).acquire()
    print("held", flush=True)
    time.sleep(60)
""")


def _holder(path):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_process_is_refused_and_told_who_holds_it(tmp_path):
    path = tmp_path / "sub" / ".lock"
    proc = _holder(path)
    try:
        with pytest.raises(LockHeld, match=rf"locked by process {proc.pid} on "):
            FileLock(path).acquire()
        assert read_holder(path)["pid"] == proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_kill_9_releases_the_lock(tmp_path):
    path = tmp_path / ".lock"
    proc = _holder(path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with FileLock(path) as lock:
        assert lock.held
        assert read_holder(path)["pid"] == os.getpid()
    assert read_holder(path) == {}


def test_two_locks_in_one_process_exclude_each_other(tmp_path):
    path = tmp_path / ".lock"
    with FileLock(path), pytest.raises(LockHeld):
        FileLock(path).acquire()
    FileLock(path).acquire().release()
