"""The efficiency harness on two cases with a tiny fake predict script, and the buildah runner's
command construction (no container engine is needed for these tests)."""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from app.cli import main as app_main
from app.evaluation import efficiency, runners
from app.gpumem import GpuMemorySampler

FAKE_PREDICT = """#!/bin/sh
# Stand-in for predict.sh: insists on a folder holding exactly one case, "segments" it by
# copying, and logs which inputs folder it was given.
set -eu
count=$(ls "$INPUT_DIR" | wc -l)
if [ "$count" -ne 1 ]; then echo "expected one input, got $count" >&2; exit 3; fi
for image in "$INPUT_DIR"/*_0000.nii.gz; do
    name=$(basename "$image" _0000.nii.gz)
    cp "$image" "$OUTPUT_DIR/$name.nii.gz"
    echo "$INPUT_DIR $name" >> "{log}"
done
"""


@pytest.fixture
def two_cases(tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for name in ("case_001", "case_002"):
        (inputs / f"{name}_0000.nii.gz").write_bytes(b"not really a CT " + name.encode())
    (inputs / "notes.txt").write_text("ignored: not an image")
    log = tmp_path / "seen.log"
    script = tmp_path / "fake_predict.sh"
    script.write_text(FAKE_PREDICT.replace("{log}", str(log)))
    return SimpleNamespace(inputs=inputs, outputs=tmp_path / "outputs", script=script, log=log,
                           report=tmp_path / "outputs" / "efficiency")


def parse(*argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    efficiency.add_arguments(parser)
    return parser.parse_args([str(a) for a in argv])


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# -- the harness end to end --------------------------------------------------------------------
def test_two_cases_each_in_a_fresh_folder_with_csv_and_plots(two_cases, capsys):
    code = app_main(["efficiency", "--inputs", str(two_cases.inputs), "--outputs",
                     str(two_cases.outputs), "--command", f"sh {two_cases.script}"])
    assert code == 0, capsys.readouterr()
    seen = [line.split() for line in two_cases.log.read_text().splitlines()]
    assert [name for _, name in seen] == ["case_001", "case_002"]
    folders = [folder for folder, _ in seen]
    assert len(set(folders)) == 2, "every case must get its own fresh inputs folder"
    assert not any(Path(folder).exists() for folder in folders), "temporary inputs are removed"
    for name in ("case_001", "case_002"):
        assert (two_cases.outputs / f"{name}.nii.gz").read_bytes().endswith(name.encode())

    rows = read_csv(two_cases.report / "efficiency.csv")
    assert list(rows[0].keys()) == efficiency.CSV_COLUMNS
    assert [row["case"] for row in rows] == ["case_001", "case_002"]
    for row in rows:
        assert row["exit_code"] == "0" and row["mask_written"] == "True"
        assert 0 < float(row["seconds"]) < 30
        if row["gpu_mem_peak_mb"] == "":  # no GPU here: null figures and the reason
            assert row["gpu_mem_stable_mb"] == "" and row["gpu_mem_auc_mb_s"] == ""
            assert row["gpu_note"]
        else:
            assert float(row["gpu_mem_peak_mb"]) > 0
        png = (two_cases.report / f"{row['case']}_gpu_memory.png").read_bytes()
        assert png.startswith(b"\x89PNG")
        samples = json.loads((two_cases.report / f"{row['case']}_gpu_memory.json").read_text())
        assert samples["case"] == row["case"] and "samples_mb" in samples
    assert "case_002" in capsys.readouterr().out


def test_report_folder_option(two_cases, tmp_path):
    args = parse("--inputs", two_cases.inputs, "--outputs", two_cases.outputs,
                 "--command", f"sh {two_cases.script}", "--report", tmp_path / "rep", "--limit", 1)
    assert efficiency.run(args) == 0
    assert [row["case"] for row in read_csv(tmp_path / "rep" / "efficiency.csv")] == ["case_001"]


def test_failing_run_is_recorded_and_makes_exit_code_nonzero(two_cases, capsys):
    args = parse("--inputs", two_cases.inputs, "--outputs", two_cases.outputs,
                 "--command", "exit 7")
    assert efficiency.run(args) == 1
    rows = read_csv(two_cases.report / "efficiency.csv")
    assert [row["exit_code"] for row in rows] == ["7", "7"]
    assert [row["mask_written"] for row in rows] == ["False", "False"]
    assert "case_001" in capsys.readouterr().err


def test_stale_mask_from_an_earlier_run_does_not_count(two_cases):
    two_cases.outputs.mkdir()
    stale = two_cases.outputs / "case_001.nii.gz"
    stale.write_bytes(b"old")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    args = parse("--inputs", two_cases.inputs, "--outputs", two_cases.outputs, "--command", "true",
                 "--limit", 1)
    assert efficiency.run(args) == 1
    assert read_csv(two_cases.report / "efficiency.csv")[0]["mask_written"] == "False"


class TraceNVML:
    """Minimal fake NVML replaying a used-memory trace in MiB (last value repeats)."""

    def __init__(self, used_mib):
        self.used_mib, self.reads = used_mib, 0

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        pass

    def nvmlDeviceGetHandleByIndex(self, index):
        return index

    def nvmlDeviceGetName(self, handle):
        return "Fake GPU"

    def nvmlDeviceGetMemoryInfo(self, handle):
        used = self.used_mib[min(self.reads, len(self.used_mib) - 1)]
        self.reads += 1
        total = 80_000 * 2**20
        return SimpleNamespace(total=total, free=total - used * 2**20)


def test_with_a_gpu_trace_the_plot_and_figures_are_filled(two_cases, tmp_path):
    fake = TraceNVML([500, 500, 1500, 1500, 1500, 1500, 900])

    def make_sampler():
        return GpuMemorySampler(interval=0.01, nvml=fake)

    def runner(inputs, outputs):
        deadline = time.monotonic() + 2.0
        while fake.reads < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        (outputs / "case_001.nii.gz").write_bytes(b"mask")
        return 0

    two_cases.outputs.mkdir()
    result = efficiency.measure_case(two_cases.inputs / "case_001_0000.nii.gz", two_cases.outputs,
                                     runner, make_sampler)
    assert result["gpu_note"] is None and result["mask_written"]
    assert result["gpu_mem_peak_mb"] == 1500 and result["gpu_mem_stable_mb"] == 1500
    assert result["gpu_mem_auc_mb_s"] == pytest.approx(sum(result["samples_mb"]) * 0.01)
    efficiency.write_memory_plot(result, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 5000


def test_timeout_kills_the_whole_run(tmp_path):
    started = time.monotonic()
    marker = tmp_path / "survived"
    code = runners.run_process(f"sleep 5; touch {marker}", shell=True, timeout=0.3)
    assert code == runners.TIMEOUT_EXIT_CODE
    assert time.monotonic() - started < 3
    time.sleep(0.1)
    assert not marker.exists()


def test_command_runner_sets_input_and_output_dirs(tmp_path):
    calls = []
    runner = runners.CommandRunner("sh predict.sh", timeout=9,
                                   run=lambda cmd, **kw: calls.append((cmd, kw)) or 0)
    assert runner(tmp_path / "in", tmp_path / "out") == 0
    command, options = calls[0]
    assert command == "sh predict.sh" and options["shell"] is True and options["timeout"] == 9
    assert options["env"]["INPUT_DIR"] == str(tmp_path / "in")
    assert options["env"]["OUTPUT_DIR"] == str(tmp_path / "out")
    assert "PATH" in options["env"]


# -- argument handling -----------------------------------------------------------------------
def test_image_and_command_are_mutually_exclusive_and_one_is_required(tmp_path):
    with pytest.raises(SystemExit):
        parse("--inputs", tmp_path, "--outputs", tmp_path, "--image", "x", "--command", "y")
    with pytest.raises(SystemExit):
        parse("--inputs", tmp_path, "--outputs", tmp_path)


def test_missing_or_empty_inputs_are_clear_errors(tmp_path, capsys):
    args = parse("--inputs", tmp_path / "nope", "--outputs", tmp_path / "o", "--command", "true")
    assert efficiency.run(args) == 2
    assert "inputs folder not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    args = parse("--inputs", tmp_path / "empty", "--outputs", tmp_path / "o", "--command", "true")
    assert efficiency.run(args) == 2
    assert "no .nii.gz images" in capsys.readouterr().err


def test_case_names_drop_the_channel_suffix():
    assert efficiency.case_name(Path("validation_001_0000.nii.gz")) == "validation_001"
    assert efficiency.case_name(Path("plain.nii.gz")) == "plain"


# -- buildah runner ----------------------------------------------------------------------------
def test_buildah_command_construction(tmp_path):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    assert runners.buildah_from_argv("flare:latest") == [
        "buildah", "--storage-driver=vfs", "from", "flare:latest"]
    assert runners.buildah_run_argv("flare-working-container", inputs, outputs) == [
        "buildah", "--storage-driver=vfs", "run", "--isolation=chroot",
        "-v", f"{inputs.resolve()}:/workspace/inputs:ro",
        "-v", f"{outputs.resolve()}:/workspace/outputs",
        "flare-working-container", "--", "/bin/bash", "-c", "cd /workspace && sh predict.sh"]
    assert runners.buildah_rm_argv("ctr") == ["buildah", "--storage-driver=vfs", "rm", "ctr"]


class FakeBuildah:
    def __init__(self, from_code=0, run_code=0, stdout="Getting image...\nflare-working-container\n"):
        self.calls: list[list[str]] = []
        self.from_code, self.run_code, self.stdout = from_code, run_code, stdout

    def create(self, argv):
        self.calls.append(argv)
        code = self.from_code if argv[2] == "from" else 0
        return subprocess.CompletedProcess(argv, code, stdout=self.stdout, stderr="boom")

    def run(self, argv, timeout=None):
        self.calls.append(argv)
        return self.run_code


def test_buildah_runner_from_run_rm_sequence(tmp_path):
    fake = FakeBuildah(run_code=5)
    runner = runners.BuildahRunner("flare:latest", run=fake.run, create=fake.create)
    assert runner(tmp_path / "in", tmp_path / "out") == 5
    assert [call[2] for call in fake.calls] == ["from", "run", "rm"]
    assert "flare-working-container" in fake.calls[1] and fake.calls[2][-1] == "flare-working-container"


def test_buildah_runner_removes_the_container_even_when_interrupted(tmp_path):
    fake = FakeBuildah()

    def interrupted(argv, timeout=None):
        fake.calls.append(argv)
        raise KeyboardInterrupt

    runner = runners.BuildahRunner("flare:latest", run=interrupted, create=fake.create)
    with pytest.raises(KeyboardInterrupt):
        runner(tmp_path / "in", tmp_path / "out")
    assert fake.calls[-1][2] == "rm"


def test_buildah_from_failure_skips_run(tmp_path, capsys):
    fake = FakeBuildah(from_code=125)
    runner = runners.BuildahRunner("missing:tag", run=fake.run, create=fake.create)
    assert runner(tmp_path / "in", tmp_path / "out") == 125
    assert [call[2] for call in fake.calls] == ["from"]
    assert "missing:tag" in capsys.readouterr().err
