"""SIGINT, SIGTERM and SIGUSR1 stop a run after the current optimizer step with a checkpoint of that
step; the same command then ends with the weights of a run that was never stopped.
`train.save_every_minutes` saves on rank 0's clock.

Before issue 21 a signal killed the run on the spot: everything since the last `save_every_steps`
checkpoint was lost, and nothing told a batch system whether the run could be requeued.
"""

from __future__ import annotations

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


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    subprocess.run(pretrain(out), cwd=ROOT, env=ENV, check=True, capture_output=True, timeout=600)
    return weights(out)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1], ids=lambda s: s.name)
def test_signal_saves_the_step_it_reports_and_the_same_command_resumes(tmp_path, straight, signum):
    out = tmp_path / "run"
    proc = subprocess.Popen(pretrain(out), cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    metrics, deadline = out / "metrics.jsonl", time.time() + 300
    while not (metrics.exists() and metrics.read_text().strip()) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be signalled"
    os.killpg(proc.pid, signum)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signum, stderr
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    assert 1 <= state["step"] < STEPS
    assert (f"interrupted by {signum.name} at step {state['step']}: checkpoint saved to "
            f"{out / 'checkpoints' / 'last.pt'}; run the same command again to resume") in stderr
    assert not (out / "backbone.safetensors").exists() and not (out / ".sslp.lock").exists()

    resumed = subprocess.run(pretrain(out), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600,
                             check=False)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming at step {state['step']}" in resumed.stdout
    assert_same_weights(straight, weights(out))


def worker_pids(torchrun_pid):
    """{local rank: pid} of torchrun's worker processes (from their environment)."""
    found = {}
    for child in Path(f"/proc/{torchrun_pid}/task/{torchrun_pid}/children").read_text().split():
        env = dict(kv.split("=", 1) for kv in Path(f"/proc/{child}/environ").read_bytes().decode().split("\0") if "=" in kv)
        if "LOCAL_RANK" in env:
            found[int(env["LOCAL_RANK"])] = int(child)
    return found


@pytest.mark.dist
@pytest.mark.slow
def test_a_signal_to_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "-m", "ssl_platform", "pretrain", *ARGS, "data.batch_size=32"]
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
    assert 1 <= step < STEPS
    # rank 0 (which never received the signal) tells and exits with 128 + SIGUSR1; rank 1 does the
    # same, unless torchrun, seeing rank 0 gone first, SIGTERMs it on its way out (after the save)
    assert output.count(f"stopped: interrupted by SIGUSR1 at step {step}: checkpoint saved to") == 1, output
    assert re.search(rf"rank\s*: 0 \(local_rank: 0\)\s*exitcode\s*: {128 + signal.SIGUSR1} ", output), output
    rank1 = re.search(r"rank\s*: 1 \(local_rank: 1\)\s*exitcode\s*: (-?\d+) ", output)
    assert rank1 is None or int(rank1.group(1)) in (128 + signal.SIGUSR1, -signal.SIGTERM), output

    resumed = subprocess.run([*torchrun, f"train.out_dir={out}"], cwd=ROOT, env=ENV, capture_output=True, text=True,
                             timeout=600, check=False)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resuming at step {step}" in resumed.stdout
    assert_same_weights(weights(tmp_path / "straight"), weights(out))
