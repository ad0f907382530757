"""Elastic resumption: a run written by 4 processes and killed with SIGKILL mid-epoch resumes on 2 processes
with the same global batch (2 x the per-process batch) and trains every step on exactly the samples of
an uninterrupted 4-process run, in the same order; with no cross-sample statistics in the model it ends
with the same weights up to float reduction order."""

import contextlib
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
from ssl_platform.data.samplers import ResumableSampler
from ssl_platform.engine.run_dir import resume_position
from ssl_platform.engine.sample_log import global_order

ROOT = Path(__file__).resolve().parents[2]

# SimCLR on digits with a tiny ViT and a head without BatchNorm: nothing in the model depends on how the
# global batch is split (NT-Xent gathers every process's embeddings), so weights are comparable
RECIPE = ["recipes/simclr/debug.yaml", "method.backbone=vit_tiny_patch16_224", "method.small_input=false",
          "method.backbone_kwargs={img_size: 8, patch_size: 4, depth: 2, embed_dim: 32, num_heads: 2}",
          "method.proj_batch_norm=false", "train.epochs=2", "train.max_steps=null", "train.save_every_steps=3",
          "train.log_samples=true"]
DIGITS_TRAIN = 1347  # scikit-learn's digits, the train split of data.datasets.Digits


def pretrain(nproc: int, batch: int, out: Path, **popen):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "ssl_platform", "pretrain", *RECIPE, f"data.batch_size={batch}", f"train.out_dir={out}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, text=True, **popen)


def finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    return out


def kill_run(out_dir: Path) -> None:
    """SIGKILL torchrun and its workers at once (the workers run in sessions of their own, so a process
    group kill misses them): every process whose command line names `out_dir`."""
    arg = f"train.out_dir={out_dir}"
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:  # not a process, or gone
            continue
        if proc.name.isdigit() and arg.encode() in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)


def saved_step(out_dir: Path) -> int:
    try:
        return load_checkpoint(out_dir / "checkpoints" / "last.pt")["step"]
    except CheckpointError:
        return -1


@pytest.mark.slow
@pytest.mark.dist
def test_sigkill_on_4_processes_then_resume_on_2_sees_the_uninterrupted_samples(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    finish(pretrain(4, 16, straight, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))

    # killed once a mid-epoch checkpoint exists (the epoch has 21 steps); the steps it trained after that
    # checkpoint are replayed by the resumed run
    proc = pretrain(4, 16, killed, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while saved_step(killed) < 6 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; make it longer"
    kill_run(killed)
    proc.wait()
    step_at_kill = saved_step(killed)
    assert 6 <= step_at_kill < 21, "killed mid-epoch"

    out = finish(pretrain(2, 32, killed, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    assert f"resuming at step {step_at_kill}" in out
    assert "resuming on 2 processes a run written by 4" in out

    want, got = global_order(straight), global_order(killed)
    assert sorted(want) == sorted(got) == list(range(42))
    assert want == got, "every step trains on the same samples, in the same global order"
    # and that order is the sampler's: epoch 0's permutation cut into global batches of 64
    first_epoch = ResumableSampler(DIGITS_TRAIN, seed=0, batch_size=64).global_order()
    assert [i for s in range(21) for i in want[s]] == first_epoch[:21 * 64].tolist()

    a = load_file(str(straight / "backbone.safetensors"))
    b = load_file(str(killed / "backbone.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6, msg=k)  # measured: 4e-8
    state = load_checkpoint(killed / "checkpoints" / "last.pt")
    assert state["world_size"] == 2 and state["layout"] == {"batch_size": 32, "accum_steps": 1}


def _state(batch_size=16, world=4, accum=1, micro=6 * 1, order="global"):
    state = {"world_size": world, "micro_in_epoch": micro, "recipe": {"data": {"batch_size": batch_size}}}
    if order == "global":
        state |= {"sample_order": "global", "layout": {"batch_size": batch_size, "accum_steps": accum}}
    return state


def test_resume_position_maps_the_samples_done_onto_the_new_layout():
    path = Path("run/checkpoints/last.pt")
    # 6 steps of 4 x 16 = 384 samples: 6 micro-steps of 2 x 32, or 12 of 2 x 16 with accumulation 2
    assert resume_position(_state(), path, 32, 1, 2) == (6, "global")
    assert resume_position(_state(), path, 16, 2, 2) == (12, "global")
    assert resume_position(_state(accum=2, micro=12), path, 128, 1, 1) == (6, "global")
    # an unchanged layout keeps the checkpoint's own count and order, old checkpoints included
    assert resume_position(_state(order="strided"), path, 16, 1, 4) == (6, "strided")


def test_resume_position_refuses_a_new_global_batch_naming_the_batch_size_that_keeps_it():
    with pytest.raises(ValueError, match=r"global batch 32 .*written with 64 \(data.batch_size 16 x 4 processes"
                                         r".*set data.batch_size=32"):
        resume_position(_state(), Path("last.pt"), 16, 1, 2)
    with pytest.raises(ValueError, match=r"batch_size x 3 x accum_steps = 64"):
        resume_position(_state(), Path("last.pt"), 20, 1, 3)


def test_resume_position_refuses_a_layout_change_for_old_strided_checkpoints_and_fixed_micro_batches():
    with pytest.raises(ValueError, match="written before runs could change their layout"):
        resume_position(_state(order="strided"), Path("last.pt"), 32, 1, 2)
    # G-SimCLR's sampler builds global micro-batches of 64 distinct labels: accumulation would halve them
    with pytest.raises(ValueError, match=r"global micro-batch of 64 .*set data.batch_size=32"):
        resume_position(_state(), Path("last.pt"), 16, 2, 2, fixed_micro_batch=True)
    assert resume_position(_state(), Path("last.pt"), 32, 1, 2, fixed_micro_batch=True) == (6, "global")
