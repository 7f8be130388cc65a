"""predict_log.jsonl accounts for the process's wall time, from process start to exit, in named
stages; the process start is the kernel's, not the first line of Python."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import SimpleITK as sitk

from conftest import ROOT, synthetic_ct

ISSUE_STAGES = {"interpreter_and_imports", "cuda_init", "weight_load", "read", "reorient", "crop", "resample",
                "normalise", "network", "export_resampling", "argmax", "postprocess", "write"}


def test_stages_cover_the_measured_wall_time_of_a_predict_process(tiny_weights, tmp_path):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    sitk.WriteImage(synthetic_ct(size=(70, 60, 14), spacing=(0.8, 0.8, 4.0)), str(inputs / "a_0000.nii.gz"))
    sitk.WriteImage(synthetic_ct(size=(50, 44, 10), spacing=(1.2, 1.2, 3.0), seed=5), str(inputs / "b_0000.nii.gz"))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "app", "predict", "-i", str(inputs), "-o", str(outputs),
                          "--weights", str(tiny_weights), "--folds", "0", "--no-tta", "--device", "cpu", "--quiet"],
                         capture_output=True, text=True, env=env, cwd=ROOT, check=False)
    wall = time.perf_counter() - start
    assert run.returncode == 0, run.stderr[-2000:]
    records = [json.loads(line) for line in (outputs / "predict_log.jsonl").read_text().splitlines()]
    assert [r["case"] for r in records] == ["a", "b"]
    last = records[-1]
    named = {**last["process_stages"], **{k: v for r in records for k, v in r["stages"].items()}}
    assert ISSUE_STAGES <= named.keys()
    assert last["process_stages"]["cuda_init"] == 0.0 and last["preprocess_on"] in ("device", "host")
    stage_sum = sum(last["process_stages"].values()) + sum(sum(r["stages"].values()) for r in records)
    assert abs(stage_sum - last["accounted_s"]) < 0.01
    assert stage_sum >= 0.95 * wall, (stage_sum, wall, last["process_stages"], [r["stages"] for r in records])
    assert stage_sum <= wall + 0.05  # the kernel start time has clock-tick (10 ms) resolution
    for key in ("torch_max_allocated_mb", "torch_max_reserved_mb", "gpu_mem_stable_mb"):
        assert key in last and last[key] is None  # no GPU here


def test_process_start_is_the_kernels_not_pythons():
    code = ("import time; time.sleep(0.4); "
            "from app.inference.stages import seconds_since_process_start as s; print(s())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True,
                         env=dict(os.environ, PYTHONPATH=str(ROOT))).stdout
    assert 0.4 <= float(out) < 30


def test_stage_timer_synchronises_at_each_boundary_and_adds_repeats():
    from app.inference.stages import StageTimer
    calls = []
    timer = StageTimer(sync=lambda: calls.append(1))
    for _ in range(2):
        with timer.stage("network"):
            time.sleep(0.01)
    assert len(calls) == 4 and set(timer.seconds) == {"network"} and timer.seconds["network"] >= 0.02


def test_cuda_environment_set_before_torch_and_never_overrides_the_user():
    from app.inference.cli import CUDA_ENVIRONMENT, set_cuda_environment
    environ = {"PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:64"}
    set_cuda_environment(environ)
    assert environ == {"PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:64", "CUDA_MODULE_LOADING": "LAZY"}
    assert CUDA_ENVIRONMENT["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    # The allocator reads its settings once, when torch starts CUDA: parsing predict's arguments
    # must not have imported torch yet.
    code = "import sys, app.cli, app.inference.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True,
                         env=dict(os.environ, PYTHONPATH=str(ROOT))).stdout
    assert out.strip() == "False"
