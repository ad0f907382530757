"""Two "nodes" on this machine, one process each, joined by torchrun's c10d rendezvous, pretrain on shards
served over http from 127.0.0.1: every sample of the epoch is trained on exactly once across the ranks,
in the global order the sampler draws (issue 19, part 4).

The nodes share the run directory (a cluster's shared file system) and each keeps its own shard cache
(a node's local disk), so each node reads the shards it needs from the server.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssl_platform.data.datasets import ImageFolder
from ssl_platform.data.samplers import ResumableSampler
from ssl_platform.data.shards import write_shards
from ssl_platform.engine.sample_log import global_order

ROOT = Path(__file__).resolve().parents[2]
# the http server the shard tests use (tests/ is not a package: loaded by path)
_spec = importlib.util.spec_from_file_location("http_shards", ROOT / "tests" / "data" / "http_shards.py")
http_shards = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(http_shards)

PER_CLASS, CLASSES = 33, ("coat", "shirt", "shoe")  # 99 images: a global batch of 16 leaves 3 out
BATCH, NODES = 8, 2  # per process; one process per node
TIMEOUT_S = 240


def make_folder(root: Path) -> Path:
    """99 random 16x16 grey PNGs in 3 class sub-folders."""
    rng = np.random.default_rng(0)
    for name in CLASSES:
        (root / name).mkdir(parents=True)
        for i in range(PER_CLASS):
            Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8), mode="L").save(root / name / f"{i:03d}.png")
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_command(rank: int, port: int, source: str, cache: Path, out: Path) -> list[str]:
    dataset = f"{{_component_: ssl_platform.data.datasets.ShardDataset, source: '{source}', cache_dir: '{cache}'}}"
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(NODES), "--node-rank", str(rank),
            "--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"localhost:{port}",
            "--rdzv-id", f"two-nodes-{port}", "-m", "ssl_platform", "pretrain", "recipes/simclr/debug.yaml",
            f"data.dataset={dataset}", f"data.batch_size={BATCH}", "data.num_workers=0", "train.epochs=1",
            "train.max_steps=null", "train.log_samples=true", f"train.out_dir={out}", "train.save_every_steps=100"]


def run_nodes(commands: list[list[str]], logs: list[Path]) -> list[int]:
    """Start every node and wait for all of them; once one fails or time runs out, kill every node still
    running (its whole process group). Returns the exit codes (-9 for a node killed)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "LITDATA_DISABLE_VERSION_CHECK": "1"}
    procs = []
    try:
        for command, log in zip(commands, logs):
            with log.open("w") as file:  # a file, not a pipe: nobody reads while the nodes run
                procs.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=file, stderr=subprocess.STDOUT,
                                              start_new_session=True))
        deadline = time.monotonic() + TIMEOUT_S
        # a node that failed leaves the other waiting for it at a rendezvous or collective: stop then
        while (any(p.poll() is None for p in procs) and not any(p.poll() for p in procs)
               and time.monotonic() < deadline):
            time.sleep(0.2)
    finally:  # torchrun leaves its worker behind when it is killed alone: kill the group
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    return [p.returncode for p in procs]


def shown(logs: list[Path]) -> str:
    return "\n".join(f"--- node {r} ({log.name}) ---\n{log.read_text()[-4000:]}" for r, log in enumerate(logs))


@pytest.mark.slow
@pytest.mark.dist
def test_two_nodes_over_http_train_on_every_sample_of_the_epoch_once(tmp_path):
    folder = make_folder(tmp_path / "images")
    shards = tmp_path / "shards"
    write_shards(ImageFolder(folder, channels=1), shards, shard_size="8KB", source=str(folder))
    assert len(list(shards.glob("*.bin"))) >= 3, "the test is about several shards: lower shard_size"
    out = tmp_path / "run"
    logs = [tmp_path / f"node{r}.log" for r in range(NODES)]
    requests: list[str] = []
    with http_shards.serve_directory(shards, requests) as url:
        port = free_port()
        codes = run_nodes([node_command(r, port, url, tmp_path / f"cache{r}", out) for r in range(NODES)], logs)
    assert codes == [0] * NODES, f"exit codes {codes}\n{shown(logs)}"

    n, global_batch = PER_CLASS * len(CLASSES), BATCH * NODES
    steps = n // global_batch  # 6: the last 3 samples of the shuffled epoch cannot fill a global batch
    order = global_order(out)
    assert sorted(order) == list(range(steps)), shown(logs)
    seen = [i for step in sorted(order) for i in order[step]]
    assert len(seen) == n - n % global_batch == len(set(seen)), "a sample trained on twice across the nodes"
    assert set(seen) <= set(range(n))
    # the exact order: the sampler's global permutation for (seed 0, epoch 0), cut into global batches,
    # the one a single process with batch 16 would draw
    expected = ResumableSampler(n, seed=0).global_order()[: steps * global_batch].tolist()
    assert seen == expected
    ranks = {json.loads(line)["rank"] for f in (out / "samples").glob("rank*.jsonl") for line in f.read_text().splitlines()}
    assert ranks == {0, 1}, "both nodes logged their samples"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == steps and (out / "backbone.safetensors").exists(), "the run did not finish"
    # each node fetched the index and the shards over http into its own cache
    assert "/index.json" in requests and any(r.startswith("/chunk-") for r in requests)
    assert all(list((tmp_path / f"cache{r}").rglob("chunk-*.bin")) for r in range(NODES)), "a node read no shard"
