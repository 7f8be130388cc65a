"""Hardening, faults: kills, out of memory, missing weights, network, pickles, processes and
threads never leave a partial mask or stop the other cases."""

import contextlib
import gzip
import io
import json
import math
import os
import pickle
import random
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import ROOT, dice_per_label, synthetic_ct

from hardening_helpers import *  # noqa: F401,F403  (helpers, imports and constants)
from hardening_helpers import (  # noqa: F401  (underscored: not taken by the star import)
    _truncated_gz, _truncated_nii, _header_only, _random_bytes, _gzip_of_garbage, _empty_file, _image_2d, _image_4d, _vector_image)

# ---------------------------------------------------------------------------------------------
# atomic writes

def assert_only_complete_masks(outputs: Path, inputs: dict[str, Path]) -> None:
    """Top level: complete masks on their input's grid, the log, hidden entries; nothing else."""
    for entry in outputs.iterdir():
        if entry.name.startswith(".") or entry.name == "predict_log.jsonl":
            continue
        case = entry.name[: -len(".nii.gz")] if entry.name.endswith(".nii.gz") else None
        assert case in inputs, f"unexpected file at the top of the output folder: {entry.name}"
        assert_mask(outputs, case, inputs[case])


def test_sigkill_at_random_moments_leaves_no_partial_mask(tiny_weights, tmp_path):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    cases = {f"k{i}": write_case(inputs, f"k{i}_0000.nii.gz", synthetic_ct(size=(96, 80, 24), seed=i))
             for i in range(3)}
    env = predict_env(inputs, outputs, tiny_weights)
    start = time.perf_counter()
    full = subprocess.run(predict_sh_command("--overwrite"), env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    duration = time.perf_counter() - start
    assert full.returncode == 0, full.stdout + full.stderr
    assert_only_complete_masks(outputs, cases)
    seed = int(os.environ.get("HARDENING_SEED", "0")) or random.SystemRandom().randrange(1, 10**6)
    rng = random.Random(seed)
    for run in range(3):
        delay = rng.uniform(0.2 * duration, duration)
        proc = subprocess.Popen(predict_sh_command("--overwrite"), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        try:
            assert_only_complete_masks(outputs, cases)
        except AssertionError as err:
            raise AssertionError(f"after SIGKILL at {delay:.2f} s (run {run}, HARDENING_SEED={seed}): {err}") from None
    assert masks_in(outputs) == sorted(f"{name}.nii.gz" for name in cases)  # --overwrite never removes one


KILL_DURING_WRITE = textwrap.dedent("""
    import os, signal, sys
    import SimpleITK as sitk
    real_write = sitk.WriteImage
    def dying_write(image, path, *args, **kwargs):
        real_write(image, path, *args, **kwargs)
        with open(path, "r+b") as handle:   # half of the file on disk, then the process dies
            handle.truncate(os.path.getsize(path) // 2)
        os.kill(os.getpid(), signal.SIGKILL)
    sitk.WriteImage = dying_write
    from app.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_sigkill_in_the_middle_of_a_mask_write(tiny_weights, tmp_path):
    """Deterministic: the process dies with half a mask on disk, replacing an existing mask."""
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    cases = {"a": write_case(inputs, "a_0000.nii.gz"), "b": write_case(inputs, "b_0000.nii.gz", seed=1)}
    outputs.mkdir()
    previous = sitk.Image(sitk.ReadImage(str(cases["a"])).GetSize(), sitk.sitkUInt8)
    previous.CopyInformation(sitk.ReadImage(str(cases["a"])))
    sitk.WriteImage(previous, str(outputs / "a.nii.gz"), True)
    old_bytes = (outputs / "a.nii.gz").read_bytes()
    script = tmp_path / "kill_during_write.py"
    script.write_text(KILL_DURING_WRITE)
    env = predict_env(inputs, outputs, tiny_weights, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(script), "predict", "-i", str(inputs), "-o", str(outputs),
                           "--weights", str(tiny_weights), "--device", "cpu", "--quiet", *FAST_ARGS, "--overwrite"],
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    assert (outputs / "a.nii.gz").read_bytes() == old_bytes, "the earlier complete mask was replaced by a partial one"
    assert masks_in(outputs) == ["a.nii.gz"]
    assert_only_complete_masks(outputs, cases)
    result = predict(inputs, outputs, tiny_weights, overwrite=True)  # the next run cleans up and completes
    assert result.code == 0, result.text
    assert masks_in(outputs) == ["a.nii.gz", "b.nii.gz"]
    assert_only_complete_masks(outputs, cases)


# ---------------------------------------------------------------------------------------------
# GPU out of memory (injected at app.inference.network.predict_tiles, wherever it is called from)

def inject_oom(monkeypatch, fail_calls: int | None) -> list:
    """predict_tiles raises torch.cuda.OutOfMemoryError on its first `fail_calls` calls
    (None: always). Returns the list of (tile batch size, device) per call."""
    import torch
    from app.inference import ensemble, network
    real = network.predict_tiles
    calls = []

    def flaky(networks, tiles, *args, **kwargs):
        calls.append((int(tiles.shape[0]), str(tiles.device)))
        if fail_calls is None or len(calls) <= fail_calls:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        return real(networks, tiles, *args, **kwargs)

    monkeypatch.setattr(network, "predict_tiles", flaky)
    if hasattr(ensemble, "predict_tiles"):
        monkeypatch.setattr(ensemble, "predict_tiles", flaky)
    return calls


def test_gpu_out_of_memory_once_is_retried_and_the_run_completes(tiny_weights, tmp_path, monkeypatch):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    cases = {"a": write_case(inputs, "a_0000.nii.gz"), "b": write_case(inputs, "b_0000.nii.gz", seed=1)}
    calls = inject_oom(monkeypatch, fail_calls=1)
    result = predict(inputs, outputs, tiny_weights, network_batch=2)
    assert len(calls) >= 2, "the injected OOM was never hit: has the network call moved?"
    assert result.code == 0, result.text
    assert not result.errors, result.err
    for name, path in cases.items():
        assert_mask(outputs, name, path)
    reference = predict(inputs, tmp_path / "ref", tiny_weights, network_batch=2)
    assert reference.code == 0
    for name in cases:
        a = sitk.GetArrayFromImage(sitk.ReadImage(str(outputs / f"{name}.nii.gz")))
        b = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "ref" / f"{name}.nii.gz")))
        assert np.array_equal(a, b), f"{name}: the retried case's mask differs from an undisturbed run's"


def test_gpu_out_of_memory_every_time_fails_the_case_not_the_run(tiny_weights, tmp_path, monkeypatch):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    write_case(inputs, "a_0000.nii.gz")
    write_case(inputs, "b_0000.nii.gz", seed=1)
    inject_oom(monkeypatch, fail_calls=None)
    result = predict(inputs, outputs, tiny_weights)
    assert result.code == 1, result.text
    assert len(result.errors) == 2, result.err
    assert_one_error(result, "a_0000.nii.gz", "out of memory")
    assert_one_error(result, "b_0000.nii.gz", "out of memory")
    assert masks_in(outputs) == []


# ---------------------------------------------------------------------------------------------
# /dev/shm, network, pickle, hangs

@pytest.fixture
def no_child_processes(monkeypatch):
    """Any attempt to start a process or a multiprocessing pool raises (and is recorded)."""
    import multiprocessing.process
    attempts = []

    def refuse(what):
        def raiser(*args, **kwargs):
            attempts.append(what)
            raise AssertionError(f"predict started a child: {what}")
        return raiser

    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", refuse("multiprocessing Process"))
    monkeypatch.setattr(subprocess.Popen, "__init__", refuse("subprocess.Popen"))
    monkeypatch.setattr(os, "fork", refuse("os.fork"))
    monkeypatch.setattr(os, "posix_spawn", refuse("os.posix_spawn"))
    return attempts


def test_one_process_no_workers_no_multiprocessing(tiny_weights, tmp_path, no_child_processes):
    import multiprocessing
    import torch.utils.data
    loaders = []
    real_init = torch.utils.data.DataLoader.__init__

    def watched_init(self, *args, **kwargs):
        loaders.append(kwargs.get("num_workers", 0))
        real_init(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.utils.data.DataLoader, "__init__", watched_init)
        path = write_case(tmp_path / "in", "a_0000.nii.gz")
        result = predict(tmp_path / "in", tmp_path / "out", tiny_weights)
    assert result.code == 0, result.text
    assert no_child_processes == []
    assert all(workers == 0 for workers in loaders), f"DataLoader workers {loaders}"
    assert multiprocessing.active_children() == []
    assert_mask(tmp_path / "out", "a", path)


def test_predict_runs_with_a_64_mb_dev_shm(tiny_weights, tmp_path):
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare to mount a small /dev/shm")
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64m tmpfs /dev/shm"],
                           capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a private /dev/shm here: {probe.stderr.decode().strip()}")
    path = write_case(tmp_path / "in", "a_0000.nii.gz")
    script = 'mount -t tmpfs -o size=64m tmpfs /dev/shm && exec "$@"'
    result = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", *predict_sh_command()],
                            env=predict_env(tmp_path / "in", tmp_path / "out", tiny_weights),
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_mask(tmp_path / "out", "a", path)


def test_no_network_at_run_time(tiny_weights, tmp_path, monkeypatch):
    attempts = []

    def refuse(what):
        def raiser(*args, **kwargs):
            attempts.append((what, args[1:] if what.startswith("socket.connect") else args))
            raise OSError(f"network access during predict: {what}")
        return raiser

    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("socket.connect_ex"))
    monkeypatch.setattr(socket.socket, "sendto", refuse("socket.sendto"))
    monkeypatch.setattr(socket, "create_connection", refuse("socket.create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("socket.getaddrinfo"))
    path = write_case(tmp_path / "in", "a_0000.nii.gz")
    result = predict(tmp_path / "in", tmp_path / "out", tiny_weights)
    assert attempts == []
    assert result.code == 0, result.text
    assert_mask(tmp_path / "out", "a", path)


def test_no_pickle_is_loaded(tiny_weights, tmp_path, monkeypatch):
    import torch
    attempts = []

    def refuse(what):
        def raiser(*args, **kwargs):
            attempts.append(what)
            raise AssertionError(f"predict loaded a pickle: {what}")
        return raiser

    class RefusingUnpickler:
        def __init__(self, *args, **kwargs):
            refuse("pickle.Unpickler")()

    for name in ("load", "loads"):
        monkeypatch.setattr(pickle, name, refuse(f"pickle.{name}"))
    monkeypatch.setattr(pickle, "Unpickler", RefusingUnpickler)
    monkeypatch.setattr(torch, "load", refuse("torch.load"))
    monkeypatch.setattr(torch.serialization, "load", refuse("torch.serialization.load"))
    real_np_load = np.load
    monkeypatch.setattr(np, "load", lambda *a, **k: refuse("numpy.load(allow_pickle=True)")() if k.get("allow_pickle")
                        else real_np_load(*a, **k))
    path = write_case(tmp_path / "in", "a_0000.nii.gz")
    result = predict(tmp_path / "in", tmp_path / "out", tiny_weights)
    assert attempts == []
    assert result.code == 0, result.text
    assert_mask(tmp_path / "out", "a", path)


def test_no_thread_or_child_outlives_an_in_process_run(tiny_weights, tmp_path):
    import multiprocessing
    before = set(threading.enumerate())
    path = write_case(tmp_path / "in", "a_0000.nii.gz")
    write_case(tmp_path / "in", "bad_0000.nii.gz", sitk.GetImageFromArray(np.zeros((4, 4), np.int16)))
    result = predict(tmp_path / "in", tmp_path / "out", tiny_weights, progress=True)
    assert result.code == 1, result.text
    assert_mask(tmp_path / "out", "a", path)
    deadline = time.monotonic() + 5
    while True:
        left = [t for t in threading.enumerate() if t not in before and t.is_alive() and not t.daemon]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert left == [], f"non-daemon threads left after the run: {left}"
    assert multiprocessing.active_children() == []


def _processes_in_session(session_id: int) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session_id and fields[0] != "Z":  # fields: state ppid pgrp session
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{entry.name} {command}")
    return found


def test_predict_sh_exits_and_leaves_no_process_behind(tiny_weights, tmp_path):
    path = write_case(tmp_path / "in", "a_0000.nii.gz")
    proc = subprocess.Popen(predict_sh_command(), env=predict_env(tmp_path / "in", tmp_path / "out", tiny_weights),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise AssertionError("predict.sh did not finish within 300 s (a hang?)") from None
    assert proc.returncode == 0, out + err
    assert _processes_in_session(proc.pid) == [], "processes outlived predict.sh"
    assert_mask(tmp_path / "out", "a", path)


# ---------------------------------------------------------------------------------------------
# weights

@pytest.mark.parametrize("fault,name", [
    ("missing", "fold_0.safetensors"),
    ("altered", "fold_0.safetensors"),
    ("altered", "plans.json"),
    ("altered", "postprocessing.json"),
    ("missing", "MANIFEST.json"),
])
def test_missing_or_altered_weights_file_is_an_error_before_any_case(fault, name, tiny_weights, tmp_path, monkeypatch):
    from app.inference import io as app_io
    weights = copy_weights(tiny_weights, tmp_path / "weights")
    target = weights / name
    if fault == "missing":
        target.unlink()
    else:
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0x01  # one bit in the middle
        target.write_bytes(bytes(data))
    write_case(tmp_path / "in", "a_0000.nii.gz")
    reads = []
    real_read = app_io.read_image
    monkeypatch.setattr(app_io, "read_image", lambda *a, **k: reads.append(a) or real_read(*a, **k))
    result = predict(tmp_path / "in", tmp_path / "out", weights)
    assert result.code == 2, result.text
    assert name in result.err, result.err
    assert reads == [], "a case was read before the weights were checked"
    assert "Traceback" not in result.text
    assert not (tmp_path / "out").exists() or masks_in(tmp_path / "out") == []


def test_missing_fold_file_via_predict_sh(tiny_weights, run_predict_sh, tmp_path):
    weights = copy_weights(tiny_weights, tmp_path / "weights")
    (weights / "fold_1.safetensors").unlink()
    write_case(tmp_path / "in", "a_0000.nii.gz")
    result = run_predict_sh(tmp_path / "in", tmp_path / "out", weights)  # every fold: accurate mode
    assert result.returncode == 2, result.stdout + result.stderr
    assert "fold_1.safetensors" in result.stderr, result.stderr
    assert "done" not in result.stdout and "Traceback" not in result.stderr


# ---------------------------------------------------------------------------------------------
# empty and mixed folders

@pytest.mark.parametrize("content", ["empty", "only_non_images"])
def test_no_cases_is_a_clear_message_and_exit_code_3(content, tiny_weights, run_predict_sh, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    if content == "only_non_images":
        (inputs / "README.txt").write_text("nothing here")
        (inputs / "sub").mkdir()
    result = run_predict_sh(inputs, tmp_path / "out", tiny_weights, *FAST_ARGS)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "no cases" in result.stderr.lower() and str(inputs) in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_mixed_folder_good_cases_written_one_error_line_per_bad_one(tiny_weights, run_predict_sh, tmp_path):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    good = {"good1": write_case(inputs, "good1_0000.nii.gz", seed=1),
            "good two": write_case(inputs, "good two_0000.nii.gz", seed=2),
            "good3": inputs / "good3_0000.nii"}
    sitk.WriteImage(synthetic_ct(**SMALL, seed=3), str(good["good3"]), False)
    bad = {"truncated_0000.nii.gz": _truncated_gz, "flat_0000.nii.gz": _image_2d,
           "series_0000.nii.gz": _image_4d, "rgb_0000.nii.gz": _vector_image,
           "junk_0000.nii.gz": _random_bytes}
    for filename, writer in bad.items():
        writer(inputs / filename)
    nifti_with_bad_pixdim(synthetic_ct(**SMALL), inputs / "nospacing_0000.nii.gz", 2, 0.0)
    bad["nospacing_0000.nii.gz"] = None
    write_case(inputs, "good1.nii.gz", seed=4)  # collides with good1_0000.nii.gz
    (inputs / "notes.json").write_text("{}")
    result = run_predict_sh(inputs, outputs, tiny_weights, *FAST_ARGS)
    text = result.stdout + result.stderr
    assert result.returncode == 1, text
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR ")]
    for filename in bad:
        assert len([line for line in errors if filename in line]) == 1, f"{filename}:\n{result.stderr}"
    assert len([line for line in errors if "good1" in line]) == 1, f"collision:\n{result.stderr}"
    assert len(errors) == len(bad) + 1, result.stderr
    assert "Traceback" not in text
    for name, path in good.items():
        if name == "good1":
            assert_complete_gzip_nifti(outputs / "good1.nii.gz")
        else:
            assert_mask(outputs, name, path)
    assert masks_in(outputs) == sorted(f"{name}.nii.gz" for name in good)
