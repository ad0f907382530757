"""SIGINT, SIGTERM and SIGUSR1 stop a run after the current optimizer step with a checkpoint of that
step; the same command then ends with the weights of a run that was never stopped.
`train.save_every_minutes` saves on rank 0's clock.

Before issue 21 a signal killed the run on the spot: everything since the last `save_every_steps`
checkpoint was lost, and nothing told a batch system whether the run could be requeued.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from toy_run import train

from ssl_platform.checkpoint.io import load_checkpoint
from ssl_platform.engine import run_dir, trainer
from ssl_platform.engine.preemption import STOP_SIGNALS, RunInterrupted

ROOT = Path(__file__).resolve().parents[2]


def weights(out_dir):
    return load_file(str(Path(out_dir) / "backbone.safetensors"))


def assert_same_weights(a, b):
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "weights differ"


def send_at(call, signum):
    """A forward hook that sends `signum` to this process at forward call `call`."""
    return lambda n: os.kill(os.getpid(), signum) if n == call else None


def test_signal_mid_accumulation_finishes_the_step_saves_it_and_resumes_to_the_same_weights(tmp_path):
    before = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    train(tmp_path / "straight", accum_steps=2, batch_size=4)
    # call 3 is the first micro-step of step 2: the run completes step 2 (calls 3 and 4), saves it, stops
    calls = []
    with pytest.raises(RunInterrupted, match=r"interrupted by SIGUSR1 at step 2: checkpoint saved to .*last\.pt; "
                                             r"run the same command again to resume") as stopped:
        train(tmp_path / "stopped", hook=lambda n: (calls.append(n), send_at(3, signal.SIGUSR1)(n)),
              accum_steps=2, batch_size=4)
    assert (stopped.value.signum, stopped.value.step, stopped.value.out_dir) == (signal.SIGUSR1, 2, tmp_path / "stopped")
    assert calls == [1, 2, 3, 4]
    state = load_checkpoint(tmp_path / "stopped" / "checkpoints" / "last.pt")
    assert (state["step"], state["micro_in_epoch"]) == (2, 4)
    assert not (tmp_path / "stopped" / "backbone.safetensors").exists()
    assert {s: signal.getsignal(s) for s in STOP_SIGNALS} == before, "fit must put the handlers back"
    train(tmp_path / "stopped", accum_steps=2, batch_size=4)
    assert_same_weights(weights(tmp_path / "straight"), weights(tmp_path / "stopped"))


def test_a_second_signal_during_the_save_is_ignored(tmp_path, monkeypatch):
    save = run_dir.save_checkpoint

    def save_then_signal_again(path, state):
        os.kill(os.getpid(), signal.SIGINT)  # a second Ctrl-C while the checkpoint is written
        save(path, state)

    monkeypatch.setattr(run_dir, "save_checkpoint", save_then_signal_again)
    with pytest.raises(RunInterrupted, match="interrupted by SIGTERM at step 3") as stopped:
        train(tmp_path / "r", hook=send_at(3, signal.SIGTERM))
    assert stopped.value.signum == signal.SIGTERM
    assert load_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")["step"] == 3
    assert list((tmp_path / "r" / "checkpoints").iterdir()) == [tmp_path / "r" / "checkpoints" / "last.pt"]


def test_save_every_minutes_saves_when_rank_zeros_clock_says_so(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(trainer, "_clock", lambda: 60.0 * len(calls))  # each forward takes "a minute"
    saved = []
    save = run_dir.save_checkpoint
    monkeypatch.setattr(run_dir, "save_checkpoint", lambda path, state: (saved.append(state["step"]), save(path, state)))
    train(tmp_path / "r", hook=calls.append, max_steps=7, save_every_minutes=2.5)
    # 3 "minutes" after the start, 3 after the save at step 3, and the last step
    assert saved == [3, 6, 7]


def test_save_and_log_intervals_may_change_on_resume(tmp_path):
    train(tmp_path / "r", max_steps=2)
    _, result = train(tmp_path / "r", max_steps=4, save_every_steps=1, log_every_steps=2, save_every_minutes=5.0,
                      collective_timeout_minutes=1.0)
    assert result["step"] == 4


# --- the real command, stopped by each signal, sent to its whole process group like a terminal's Ctrl-C or
# torchrun's shutdown (so the data loader worker receives it too)

STEPS = 24
ARGS = ["recipes/simclr/debug.yaml", f"train.max_steps={STEPS}", "train.epochs=2", "train.save_every_steps=1000",
        "train.log_every_steps=1", "data.num_workers=1"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def pretrain(out_dir):
    return [sys.executable, "-m", "ssl_platform", "pretrain", *ARGS, f"train.out_dir={out_dir}"]


def last_logged_step(metrics: Path) -> int:
    """The highest step in metrics.jsonl so far (0: none); a line still being written is not counted."""
    lines = metrics.read_text().splitlines(keepends=True) if metrics.exists() else []
    return max((json.loads(line)["step"] for line in lines if line.endswith("\n")), default=0)


def wait_until_training_past(proc: subprocess.Popen, out: Path, step: int) -> None:
    """Until the run in `out` has logged a step after `step`, so that a signal lands mid-run."""
    deadline = time.time() + 300
    while last_logged_step(out / "metrics.jsonl") <= step and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be signalled"


@pytest.mark.slow
def test_each_signal_saves_the_step_it_reports_and_the_same_command_resumes(tmp_path):
    """SIGTERM, SIGINT and SIGUSR1 in turn stop one run; each time the same command resumes it where
    it stopped, and the run ends with the weights of the run that was never stopped."""
    # the uninterrupted run, on the other core meanwhile (each run is one thread and one loader worker)
    straight = subprocess.Popen(pretrain(tmp_path / "straight"), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
    out, stopped_at = tmp_path / "run", 0
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        proc = subprocess.Popen(pretrain(out), cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
        wait_until_training_past(proc, out, stopped_at)
        os.killpg(proc.pid, signum)
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 128 + signum, stderr
        assert not stopped_at or f"resuming at step {stopped_at}" in stdout, stdout
        state = load_checkpoint(out / "checkpoints" / "last.pt")
        assert stopped_at < state["step"] < STEPS, (signum.name, stopped_at, state["step"])
        assert (f"interrupted by {signum.name} at step {state['step']}: checkpoint saved to "
                f"{out / 'checkpoints' / 'last.pt'}; run the same command again to resume") in stderr
        assert not (out / "backbone.safetensors").exists() and not (out / ".sslp.lock").exists()
        stopped_at = state["step"]

    resumed = subprocess.run(pretrain(out), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600,
                             check=False)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming at step {stopped_at}" in resumed.stdout
    _, stderr = straight.communicate(timeout=600)
    assert straight.returncode == 0, stderr
    assert_same_weights(weights(tmp_path / "straight"), weights(out))


def worker_pids(torchrun_pid):
    """{local rank: pid} of torchrun's worker processes (from their environment)."""
    found = {}
    for child in Path(f"/proc/{torchrun_pid}/task/{torchrun_pid}/children").read_text().split():
        env = dict(kv.split("=", 1) for kv in Path(f"/proc/{child}/environ").read_bytes().decode().split("\0") if "=" in kv)
        if "LOCAL_RANK" in env:
            found[int(env["LOCAL_RANK"])] = int(child)
    return found


# the signal lands at step 1 or 2: room enough, and each of the three runs trains less (this override
# comes after ARGS' max_steps, and the later one wins)
DIST_STEPS = 10


@pytest.mark.dist
@pytest.mark.slow
def test_a_signal_to_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "-m", "ssl_platform", "pretrain", *ARGS, "data.batch_size=32", f"train.max_steps={DIST_STEPS}"]
    subprocess.run([*torchrun, f"train.out_dir={tmp_path / 'straight'}"], cwd=ROOT, env=ENV, check=True,
                   capture_output=True, timeout=600)
    out = tmp_path / "run"
    proc = subprocess.Popen([*torchrun, f"train.out_dir={out}"], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    metrics, deadline = out / "metrics.jsonl", time.time() + 300
    while not (metrics.exists() and metrics.read_text().strip()) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be signalled"
    os.kill(worker_pids(proc.pid)[1], signal.SIGUSR1)  # rank 1 alone: rank 0 learns of it in the all-reduce
    output, _ = proc.communicate(timeout=300)
    step = load_checkpoint(out / "checkpoints" / "last.pt")["step"]
    assert 1 <= step < DIST_STEPS
    # rank 0, which never received the signal, tells (only rank 0 prints); every rank saves, then exits with
    # 128 + SIGUSR1, unless torchrun, seeing the other rank gone first, SIGTERMs it on its way out
    assert output.count(f"stopped: interrupted by SIGUSR1 at step {step}: checkpoint saved to") == 1, output
    exits = {int(rank): int(code) for rank, code in
             re.findall(r"rank\s*: (\d) \(local_rank: \d\)\s*exitcode\s*: (-?\d+) ", output)}
    assert 128 + signal.SIGUSR1 in exits.values(), output  # the first rank torchrun saw end
    assert set(exits.values()) <= {128 + signal.SIGUSR1, -signal.SIGTERM}, output

    resumed = subprocess.run([*torchrun, f"train.out_dir={out}"], cwd=ROOT, env=ENV, capture_output=True, text=True,
                             timeout=600, check=False)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resuming at step {step}" in resumed.stdout
    assert_same_weights(weights(tmp_path / "straight"), weights(out))
