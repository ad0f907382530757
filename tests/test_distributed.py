"""Multi-process runs on CPU (gloo) under torchrun."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def _run(args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(TORCHRUN + args, cwd=ROOT, env=env, check=False, capture_output=True, text=True, timeout=300,
                          **kw)


@pytest.mark.dist
def test_ddp_gradient_equals_single_process_on_concatenated_batch():
    proc = _run([str(ROOT / "tests" / "distributed_worker.py")])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "max |grad_ddp - grad_single|" in proc.stdout


@pytest.mark.dist
@pytest.mark.slow
def test_two_process_pretrain_run(tmp_path):
    out = tmp_path / "run"
    proc = _run(["-m", "ssl_platform", "pretrain", "recipes/simclr/debug.yaml", "train.max_steps=3",
                 f"train.out_dir={out}", "data.batch_size=32"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # lr follows the global batch: 0.3 * (32 x 2 processes) / 256
    assert "global batch 64/256 -> peak lr 0.075" in proc.stdout
    assert (out / "backbone.safetensors").exists() and (out / "checkpoints" / "last.pt").exists()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 3, "only rank 0 writes: one row per step"
    assert len(rows) == 3


@pytest.mark.dist
@pytest.mark.slow
def test_two_process_eval_equals_one_process(tmp_path):
    """Features sharded over ranks and gathered back in order give the same cached-feature results;
    fine-tuning trains with DDP; rank 0 alone writes the files."""
    args = ["eval", "eval/digits.yaml", "backbone=random", "overwrite=true",
            "eval.protocols=[knn,linear,probe,finetune]", "noise.rates=[0.4]", "eval.label_fractions=[1.0]",
            "robust.methods=[none,gce]", "probe.epochs=3", "linear.lambdas=[1.0e-2,1.0]",
            "finetune.epochs=1", "finetune.min_steps=0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # the one process (one thread) meanwhile: on two cores the pair takes about as long as the two processes
    one = subprocess.Popen([sys.executable, "-m", "ssl_platform", *args, f"out_dir={tmp_path / 'one'}"], cwd=ROOT,
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    two = _run(["-m", "ssl_platform", *args, f"out_dir={tmp_path / 'two'}"])
    _, stderr = one.communicate(timeout=300)
    assert one.returncode == 0, stderr
    assert two.returncode == 0, two.stdout + two.stderr

    def rows(name):
        return [json.loads(line) for line in (tmp_path / name / "results.jsonl").read_text().splitlines()]

    cached = lambda rs: [r for r in rs if r["protocol"] != "finetune"]
    assert cached(rows("two")) == cached(rows("one")) and len(cached(rows("one"))) == 12  # 2 noise settings x 6
    finetuned = [r for r in rows("two") if r["protocol"] == "finetune"]
    assert len(finetuned) == 2  # one row per noise setting: only rank 0 wrote
    run = tmp_path / "two" / "runs" / "digits" / "f1-symmetric0.4-s0" / "finetune-none"
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # 1347 images, 128 per process x 2 processes: 5 optimizer steps, the last one logged once
    assert [r["step"] for r in logged] == [5]


@pytest.mark.dist
@pytest.mark.slow
def test_two_process_gsimclr_debug_trains_and_resumes_to_the_same_weights(tmp_path):
    """Both stages on 2 processes (32 images each: the global batch of 64 is what holds distinct
    pseudo-labels), and the same run stopped at step 10 and continued ends with the same weights."""
    from safetensors.torch import load_file

    def pretrain(out, steps):
        proc = _run(["-m", "ssl_platform", "pretrain", "recipes/gsimclr/debug.yaml", f"train.out_dir={out}",
                     f"train.max_steps={steps}", "data.batch_size=32", "before.data.batch_size=32"])
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    out = pretrain(tmp_path / "straight", 26)
    assert "global batch 64/256 -> peak lr 0.075" in out and "pseudo-labels for epoch 1" in out
    rows = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 26 and sum(r["train/distinct_labels"] == 1.0 for r in rows) >= 20
    pretrain(tmp_path / "resumed", 10)
    assert "resuming at step 10" in pretrain(tmp_path / "resumed", 26)
    a = load_file(str(tmp_path / "straight" / "backbone.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "backbone.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a), "the resumed 2-process run differs from the straight one"


# (recipe, peak lr printed for a global batch of 64): methods that draw masks from each process's own
# RNG stream (SparK, I-JEPA, T-JEPA); I-JEPA and T-JEPA also keep an EMA target encoder outside DDP
# (no gradients), which follows the synchronised context encoder
TWO_PROCESS_RUNS = {
    "spark": ("recipes/spark/debug.yaml", "0.0005", ["data.batch_size=32"]),
    "ijepa": ("recipes/ijepa/debug.yaml", "0.00025", ["data.batch_size=32"]),
    # masks drawn independently per band group from each process's RNG (180 crops: 2 steps per epoch)
    "satmae_pp": ("recipes/satmae_pp/debug.yaml", "0.0025", ["data.batch_size=32", "train.epochs=5"]),
    "tjepa": ("recipes/tjepa/debug.yaml", "0.00025", ["data.batch_size=32"]),
    # image and text masks and the ITM negatives from each process's own RNG stream; the tokenizer is
    # built by both ranks from the recipe's corpus (deterministic) into the run directory
    "m3ae": ("recipes/m3ae/debug.yaml", "0.00025", ["data.batch_size=32"]),
    # the whole graph on each process, each with its own node masks (8 copies: 4 steps per epoch)
    "graphmae": ("recipes/graphmae/debug.yaml", "0.01", ["data.batch_size=1", "train.epochs=3"]),
}


@pytest.mark.dist
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TWO_PROCESS_RUNS))
def test_two_process_debug_recipe_trains_and_resumes_to_the_same_weights(tmp_path, name):
    """Two processes, stopped at step 4 and continued: the same weights as the run that was never stopped."""
    from safetensors.torch import load_file

    from ssl_platform.checkpoint.io import load_checkpoint

    recipe, peak_lr, overrides = TWO_PROCESS_RUNS[name]

    def pretrain(out, steps):
        proc = _run(["-m", "ssl_platform", "pretrain", recipe, f"train.out_dir={out}",
                     f"train.max_steps={steps}", "train.save_every_steps=4", *overrides])
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    assert f"-> peak lr {peak_lr};" in pretrain(tmp_path / "straight", 10)
    rows = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 10 and all(r["train/loss"] > 0 for r in rows)
    pretrain(tmp_path / "resumed", 4)
    assert "resuming at step 4" in pretrain(tmp_path / "resumed", 10)
    a = load_file(str(tmp_path / "straight" / "backbone.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "backbone.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    state = load_checkpoint(tmp_path / "straight" / "checkpoints" / "last.pt")["method"]
    if name in ("ijepa", "tjepa"):
        # the export is the EMA target, which lags the context encoder it follows
        assert any(not torch.equal(a[k], state[f"context_encoder.{k}"]) for k in a)


def test_collective_timeout_comes_from_the_argument_then_the_environment_then_ten_minutes(monkeypatch):
    from ssl_platform.distributed import ENV_TIMEOUT, collective_timeout_minutes

    monkeypatch.delenv(ENV_TIMEOUT, raising=False)
    assert collective_timeout_minutes() == 10.0
    monkeypatch.setenv(ENV_TIMEOUT, "2.5")
    assert collective_timeout_minutes() == 2.5
    assert collective_timeout_minutes(0.5) == 0.5
    for bad in ("abc", "0", "-1", "inf", "nan"):
        monkeypatch.setenv(ENV_TIMEOUT, bad)
        with pytest.raises(ValueError, match=rf"{ENV_TIMEOUT}='{bad}' is not a positive number of minutes"):
            collective_timeout_minutes()


def test_gloo_and_nccl_failures_count_as_collective_failures_and_model_errors_do_not():
    from ssl_platform.distributed import ProgressRecords, is_collective_failure

    gloo = RuntimeError("[/pytorch/third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:78] Timed out waiting "
                        "3000ms for recv operation to complete")
    assert is_collective_failure(gloo)
    assert is_collective_failure(torch.distributed.DistBackendError("NCCL communicator was aborted"))
    assert not is_collective_failure(RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x3 and 5x2)"))
    assert ProgressRecords().explain(gloo) is None, "one process has no other rank to name"
