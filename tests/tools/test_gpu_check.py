"""`tools/gpu_check.sh --device cpu --tiny`: the GPU check's whole path (every debug recipe, the demo with
device and worker views, SimCLR ResNet and I-JEPA ViT on generated JPEGs, the full `sslp bench` on the
last two, FLOPs) end to end on CPU at tiny sizes, so that the command is known to run when a GPU is lent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.data
def test_gpu_check_runs_end_to_end_on_cpu_at_tiny_sizes(tmp_path):
    if not (ROOT / "data" / "fashion-mnist").exists() and not os.environ.get("SSL_PLATFORM_DATA"):
        pytest.skip("the demo recipe needs `python -m ssl_platform data prepare fashion-mnist`")
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "2"}
    proc = subprocess.run([str(ROOT / "tools/gpu_check.sh"), "--device", "cpu", "--tiny", "--out", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    names = [row["name"] for row in report["rows"]]
    debug = sorted(p.parent.name for p in (ROOT / "recipes").glob("*/debug.yaml"))
    assert names == [f"debug {d}" for d in debug] + ["demo, views on device", "demo, views in workers",
                                                     "SimCLR ResNet-50 224 px", "I-JEPA ViT-B/16 224 px"]
    assert all("error" not in row and row["engine"] > 0 for row in report["rows"])
    full = report["rows"][-2:]
    for row in full:  # the whole `sslp bench` on the generated JPEG folder, with FLOPs and the verdict
        assert {"plain", "model_only", "input_only", "engine_vs_plain", "engine_vs_ceiling"} <= set(row)
        assert row["step_tflop"] > 0 and row["mfu"] is None and isinstance(row["data_bound"], bool)  # no peak on CPU
    table = (tmp_path / "gpu_check.md").read_text()
    assert table.count("\n| ") == len(names) + 1 and "SimCLR ResNet-50 224 px" in table


def test_gpu_check_without_cuda_says_how_to_run_on_cpu(tmp_path):
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import gpu_check
    finally:
        sys.path.pop(0)
    if gpu_check.torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    sys_argv = sys.argv
    sys.argv = ["gpu_check.py", "--out", str(tmp_path)]
    try:
        assert gpu_check.main() == 2
    finally:
        sys.argv = sys_argv
