"""A pretraining run killed with SIGKILL and started again with the same command ends with exactly
the weights of a run that was never interrupted (SimCLR, G-SimCLR's two stages with re-clustering, SparK, I-JEPA, T-JEPA, GraphMAE)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ssl_platform.checkpoint.io import CheckpointError, load_checkpoint

ROOT = Path(__file__).resolve().parents[2]


# (recipe, extra overrides, kill once a checkpoint at this step exists, steps in the whole run)
RUNS = {
    # num_workers=1: the views come from a worker process, so resumption must not depend on worker RNG
    "simclr": ("recipes/simclr/debug.yaml", ["train.epochs=1", "data.num_workers=1"], 4, 21),
    # both stages; killed in the second epoch, after the pseudo-labels were re-clustered on its start
    "gsimclr": ("recipes/gsimclr/debug.yaml", ["train.epochs=2"], 24, 42),
    # masks come from the training RNG, which the checkpoint carries
    "spark": ("recipes/spark/debug.yaml", ["train.epochs=1"], 8, 21),
    # masks from the training RNG; the EMA target encoder is part of the method's state
    "ijepa": ("recipes/ijepa/debug.yaml", ["train.epochs=1"], 8, 21),
    # per-group masks from the training RNG, flips and rotations seeded per draw (2 epochs of 11 steps)
    "satmae_pp": ("recipes/satmae_pp/debug.yaml", ["train.epochs=2"], 8, 22),
    # rows without transform; column subsets from the training RNG (21 of the epoch's 79 steps)
    "tjepa": ("recipes/tjepa/debug.yaml", ["train.max_steps=21"], 8, 21),
    # a whole graph per step, node masks from the training RNG (21 of 3 epochs x 8 steps)
    "graphmae": ("recipes/graphmae/debug.yaml", ["train.max_steps=21"], 8, 21),
    # three passes per step (MLM, MIM, ITM), masks and negatives from the training RNG; the tokenizer
    # buffer is part of the method's state
    "m3ae": ("recipes/m3ae/debug.yaml", ["train.epochs=1"], 8, 21),
}


def command(name: str, out_dir: Path) -> list[str]:
    recipe, extra, _, _ = RUNS[name]
    return [sys.executable, "-m", "ssl_platform", "pretrain", recipe, f"train.out_dir={out_dir}",
            "train.max_steps=null", "train.save_every_steps=2", "train.log_every_steps=1", *extra]


def saved_step(out_dir: Path) -> int:
    try:
        return load_checkpoint(out_dir / "checkpoints" / "last.pt")["step"]
    except CheckpointError:
        return -1


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RUNS))
def test_sigkill_then_same_command_matches_uninterrupted(tmp_path, name):
    _, _, kill_after, total = RUNS[name]
    # one thread each: the uninterrupted run and the one to kill share the machine's cores side by side
    # (every run of a comparison uses the same thread count, so the weights are bit-comparable)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    reference_log = tmp_path / "reference.log"  # a file, not a pipe: nobody reads while the others run
    with reference_log.open("w") as log:
        reference = subprocess.Popen(command(name, straight), cwd=ROOT, env=env, stdout=log, stderr=log)

    try:
        proc = subprocess.Popen(command(name, killed), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        deadline = time.time() + 300
        while saved_step(killed) < kill_after and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "the run finished before it could be killed; make it longer"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        step_at_kill = saved_step(killed)
        assert kill_after <= step_at_kill < total
        assert not (killed / "backbone.safetensors").exists()

        resumed = subprocess.run(command(name, killed), cwd=ROOT, env=env, check=False, capture_output=True, text=True, timeout=600)
        assert resumed.returncode == 0, resumed.stderr
        assert f"resuming at step {step_at_kill}" in resumed.stdout
        assert reference.wait(timeout=600) == 0, reference_log.read_text()[-3000:]
    finally:  # a failed check must not leave the reference run behind
        if reference.poll() is None:
            reference.kill()
            reference.wait()
    a = load_file(str(straight / "backbone.safetensors"))
    b = load_file(str(killed / "backbone.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"
    full_a = load_checkpoint(straight / "checkpoints" / "last.pt")["method"]
    full_b = load_checkpoint(killed / "checkpoints" / "last.pt")["method"]
    assert all(torch.equal(full_a[k], full_b[k]) for k in full_a), "heads or BN buffers differ"
