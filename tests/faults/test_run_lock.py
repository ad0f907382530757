"""One run per directory: a second run on a directory a live run holds is refused, naming the holder,
and changes nothing; a lock left by a dead process is taken over; the lock file is gone after a run.

Before issue 21 two runs on one out_dir both trained, overwriting each other's `last.pt`.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from toy_run import train

from ssl_platform.checkpoint import run_lock
from ssl_platform.checkpoint.run_lock import LOCK_NAME, RunLockedError, hold_run_lock
from ssl_platform.cli import main

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
HOLD = ("import sys, time\nfrom ssl_platform.checkpoint.run_lock import hold_run_lock\n"
        "with hold_run_lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(120)\n")


def snapshot(directory):
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(directory).rglob("*")) if p.is_file()}


def holder(directory):
    """A child process holding the lock on `directory` (it holds it once this returns)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(directory)], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def dead_pid():
    """A pid no process has: pids stay below pid_max (a fork would do too, but fast tests start none)."""
    return int(Path("/proc/sys/kernel/pid_max").read_text())


@pytest.mark.slow
def test_second_pretrain_on_a_held_directory_exits_2_naming_the_holder_and_changes_nothing(tmp_path, capsys):
    # the command's own entry point, in this process; the holder is another process (a POSIX lock is per process)
    out = tmp_path / "run"
    args = ["pretrain", str(ROOT / "recipes/simclr/debug.yaml"), f"train.out_dir={out}"]
    assert main([*args, "train.max_steps=2"]) == 0
    first = holder(out)
    try:
        before = snapshot(out)
        capsys.readouterr()
        assert main([*args, "train.max_steps=4"]) == 2
        stderr = capsys.readouterr().err
        assert f"is in use by another training run: pid {first.pid} on host {socket.gethostname()}" in stderr
        assert "Traceback" not in stderr
        assert snapshot(out) == before
    finally:
        first.terminate()  # SIGTERM: the holder's `with` block still runs its cleanup
        first.wait(timeout=60)
    assert first.returncode == 128 + signal.SIGTERM
    assert not (out / LOCK_NAME).exists()


@pytest.mark.slow  # a second process holds the lock
def test_fit_refuses_a_held_directory_and_writes_nothing(tmp_path):
    first = holder(tmp_path / "run")
    try:
        with pytest.raises(RunLockedError, match=rf"pid {first.pid} on host {socket.gethostname()}, started "):
            train(tmp_path / "run", max_steps=2)
        assert [p.name for p in (tmp_path / "run").iterdir()] == [LOCK_NAME]
    finally:
        first.kill()
        first.wait()


def test_lock_file_is_gone_after_a_run_and_after_a_failed_run(tmp_path):
    train(tmp_path / "ok", max_steps=2)
    assert not (tmp_path / "ok" / LOCK_NAME).exists()

    def fail(call):
        if call == 2:
            raise MemoryError("a method that fails mid-run")

    with pytest.raises(MemoryError):
        train(tmp_path / "failed", hook=fail, max_steps=4)
    assert (tmp_path / "failed" / "config.yaml").exists() and not (tmp_path / "failed" / LOCK_NAME).exists()


def test_record_names_this_process_while_held_and_nesting_is_a_no_op(tmp_path):
    with hold_run_lock(tmp_path, "evaluation run") as path:
        record = json.loads(path.read_text())
        assert (record["pid"], record["host"]) == (os.getpid(), socket.gethostname())
        assert record["argv"] == sys.argv and record["started"]
        with hold_run_lock(tmp_path):  # the same process again: a no-op, the outer lock stays
            pass
        assert path.exists()
    assert not path.exists()


def test_stale_lock_file_nobody_holds_is_taken_over_with_a_notice(tmp_path, capsys):
    stale = {"pid": dead_pid(), "host": socket.gethostname(), "started": "2020-01-01T00:00:00+00:00", "argv": []}
    (tmp_path / LOCK_NAME).write_text(json.dumps(stale))
    with hold_run_lock(tmp_path) as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert f"taking over a stale lock {path} of pid {stale['pid']} on host {stale['host']}" in capsys.readouterr().err
    assert not path.exists()


@pytest.fixture
def no_flock(monkeypatch):  # (lockf: the lock the module takes)
    """A file system that cannot lock (NFS without lockd answers ENOLCK)."""
    def flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(run_lock.fcntl, "lockf", flock)


def write_lock(directory, pid, host):
    (directory / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": host, "started": "then", "argv": ["x"]}))


def test_without_flock_the_lock_is_an_exclusive_file(tmp_path, no_flock):
    with hold_run_lock(tmp_path) as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()
        with pytest.raises(FileExistsError):  # what O_EXCL sees while the lock is held
            os.open(path, os.O_CREAT | os.O_EXCL)
    assert not path.exists()


def test_without_flock_a_dead_process_lock_on_this_host_is_taken_over(tmp_path, no_flock, capsys):
    pid = dead_pid()
    write_lock(tmp_path, pid, socket.gethostname())
    with hold_run_lock(tmp_path) as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert f"taking over a stale lock {path} of pid {pid}" in capsys.readouterr().err


def test_without_flock_a_live_process_lock_is_refused(tmp_path, no_flock):
    write_lock(tmp_path, os.getppid(), socket.gethostname())
    with pytest.raises(RunLockedError, match=rf"pid {os.getppid()} on host {socket.gethostname()}"), \
            hold_run_lock(tmp_path):
        pass
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getppid(), "the holder's file is kept"


def test_without_flock_another_hosts_lock_is_refused_saying_to_delete_it_if_gone(tmp_path, no_flock):
    write_lock(tmp_path, 1234, "node-elsewhere")
    with pytest.raises(RunLockedError, match=rf"pid 1234 on host node-elsewhere.*delete {tmp_path / LOCK_NAME}"), \
            hold_run_lock(tmp_path):
        pass
    assert (tmp_path / LOCK_NAME).exists()


@pytest.mark.slow  # a second process holds the lock
def test_evaluation_into_a_held_directory_is_refused_and_writes_nothing(tmp_path):
    # two evaluations into one out_dir would mix their results.jsonl (or one would delete the other's)
    from ssl_platform.evaluation.suite import load_suite, run_suite

    out = tmp_path / "eval"
    out.mkdir()
    (out / "results.jsonl").write_text('{"kept": true}\n')
    before = snapshot(out)
    proc = holder(out)
    try:
        suite = load_suite(ROOT / "eval" / "digits.yaml")
        with pytest.raises(RunLockedError, match=f"pid {proc.pid}"):
            run_suite(suite, backbone=None, backbone_name="random", out_dir=out, overwrite=True)
    finally:
        proc.kill()
        proc.wait()
    assert {k: v for k, v in snapshot(out).items() if k != LOCK_NAME} == before


FORK_AND_HOLD = ("import os, sys, time\nfrom ssl_platform.checkpoint.run_lock import hold_run_lock\n"
                 "with hold_run_lock(sys.argv[1]):\n"
                 "    if os.fork() == 0:\n        time.sleep(60)\n        os._exit(0)\n"  # a DataLoader worker, say
                 "    print('held', flush=True)\n    time.sleep(120)\n")


@pytest.mark.slow  # a second process holds the lock
def test_a_killed_runs_forked_children_do_not_keep_its_lock(tmp_path):
    # a SIGKILLed run's loader workers live on for seconds; the same command must resume at once
    proc = subprocess.Popen([sys.executable, "-c", FORK_AND_HOLD, str(tmp_path)], cwd=ROOT, env=ENV,
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        proc.kill()
        proc.wait()
        with hold_run_lock(tmp_path):  # the child still runs, and must not hold it
            pass
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
