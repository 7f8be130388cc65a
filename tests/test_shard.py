"""Scale-out: N shards write every mask exactly once, a rerun resumes, and the Kubernetes and
SLURM examples in docs/ are valid and compute the shard they should."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import SimpleITK as sitk
import yaml

from app.cli import main
from conftest import ROOT, synthetic_ct

CASES = ["case_a", "case_b_0000", "case_c", "case_d_0000"]  # sorted; _0000 is dropped
NAMES = ["case_a", "case_b", "case_c", "case_d"]
FAST = ("--device", "cpu", "--folds", "0", "--no-tta", "--quiet")
MANIFEST = ROOT / "docs" / "kubernetes-job.yaml"
SLURM = ROOT / "docs" / "slurm-array.sh"


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cases")
    for seed, name in enumerate(CASES):
        sitk.WriteImage(synthetic_ct(size=(40, 36, 8), seed=seed), str(folder / f"{name}.nii.gz"))
    return folder


def done_cases(stdout: str) -> list[str]:
    return re.findall(r"^done\s+(\S+)", stdout, re.MULTILINE)


def skipped_cases(stdout: str) -> list[str]:
    return re.findall(r"^skip\s+(\S+):", stdout, re.MULTILINE)


def predict(cases, out, weights, *extra) -> int:
    return main(["predict", "-i", str(cases), "-o", str(out), "--weights", str(weights), *FAST, *extra])


def test_shards_write_every_mask_exactly_once_then_resume(cases, tmp_path, tiny_weights, capsys):
    out = tmp_path / "out"
    count = 3  # 4 cases: shards of 2, 1 and 1
    seen = []
    for i in range(count):  # in one process: the weights load is what differs from N pods, not the slicing
        assert predict(cases, out, tiny_weights, "--shard", f"{i}/{count}") == 0
        stdout = capsys.readouterr().out
        assert done_cases(stdout) == NAMES[i::count], stdout  # its own cases, and only those
        for other in set(NAMES) - set(NAMES[i::count]):
            assert other not in stdout
        seen += done_cases(stdout)
    assert sorted(seen) == NAMES  # the union is every case, none twice
    assert sorted(p.name for p in out.glob("*.nii.gz")) == [f"{n}.nii.gz" for n in NAMES]
    # One log per shard: appends from several machines to one file on NFS are not atomic.
    logs = sorted(out.glob("predict_log.shard-*-of-3.jsonl"))
    assert [p.name for p in logs] == [f"predict_log.shard-{i}-of-3.jsonl" for i in range(count)]
    log = [json.loads(line) for p in logs for line in p.read_text().splitlines()]
    assert sorted(r["case"] for r in log) == NAMES and all(r["status"] == "ok" for r in log)

    # Resume: a mask lost (a killed worker) is redone; the others are skipped, untouched.
    (out / "case_c.nii.gz").unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob("*.nii.gz")}
    assert predict(cases, out, tiny_weights) == 0
    stdout = capsys.readouterr().out
    assert done_cases(stdout) == ["case_c"]
    assert skipped_cases(stdout) == ["case_a", "case_b", "case_d"]
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.nii.gz") if p.name in kept} == kept

    # --overwrite redoes the shard's cases; --shard in the CLI selects as SHARD does.
    assert predict(cases, out, tiny_weights, "--shard", "1/3", "--overwrite") == 0
    stdout = capsys.readouterr().out
    assert done_cases(stdout) == ["case_b"] and not skipped_cases(stdout)
    assert (out / "case_b.nii.gz").stat().st_mtime_ns != kept["case_b.nii.gz"]
    assert (out / "case_a.nii.gz").stat().st_mtime_ns == kept["case_a.nii.gz"]


def test_predict_sh_shard_variable(cases, tmp_path, tiny_weights, run_predict_sh, monkeypatch):
    """The entrypoint as the pods run it: SHARD=I/N in the environment, a real run."""
    monkeypatch.setenv("SHARD", "1/2")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    previews = tmp_path / "out" / "previews"
    result = run_predict_sh(cases, tmp_path / "out", tiny_weights, "--folds", "0", "--no-tta", "--preview", str(previews))
    assert result.returncode == 0, result.stderr
    assert done_cases(result.stdout) == ["case_b", "case_d"]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.nii.gz")) == ["case_b.nii.gz", "case_d.nii.gz"]
    assert sorted(p.name for p in previews.iterdir()) == ["case_b.png", "case_d.png"]


# --- the Kubernetes Indexed Job ---------------------------------------------------------------

def manifest() -> dict:
    documents = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d is not None]
    assert len(documents) == 1
    return documents[0]


def test_kubernetes_manifest_is_an_indexed_job():
    job = manifest()
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", job["metadata"]["name"])  # a DNS label
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    assert isinstance(spec["completions"], int) and spec["completions"] >= 1
    assert isinstance(spec["parallelism"], int) and 1 <= spec["parallelism"] <= spec["completions"]
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] in ("Never", "OnFailure")  # a Job refuses Always
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert len(volumes) == len(pod["volumes"])
    assert pod["containers"]
    for container in pod["containers"]:
        assert container["name"] and container["image"]
        assert isinstance(container["command"], list) and all(isinstance(a, str) for a in container["command"])
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert set(mounts.values()) <= set(volumes)  # every mount names a volume of the pod
        assert mounts["/workspace/inputs"] == "inputs" and mounts["/workspace/outputs"] == "outputs"
    assert "persistentVolumeClaim" in volumes["inputs"] and "persistentVolumeClaim" in volumes["outputs"]


def test_kubernetes_command_takes_the_shard_from_the_completion_index(tmp_path):
    """Run the container's command with a stand-in predict.sh that prints what it was given."""
    job = manifest()
    container = job["spec"]["template"]["spec"]["containers"][0]
    command = container["command"]
    assert command[:2] == ["sh", "-c"] and "JOB_COMPLETION_INDEX" in command[2] and "predict.sh" in command[2]
    (tmp_path / "predict.sh").write_text('echo "SHARD=$SHARD ARGS=$*"\n')
    count = job["spec"]["completions"]
    for index in (0, count - 1):
        env = {"PATH": os.environ["PATH"], "JOB_COMPLETION_INDEX": str(index)}
        result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
        assert result.stdout.startswith(f"SHARD={index}/{count} ")  # N is spec.completions
    assert container.get("workingDir", "/workspace") == "/workspace"  # where the image has predict.sh


# --- the SLURM array script -------------------------------------------------------------------

def slurm(tmp_path, task, count, minimum=None, **env):
    (tmp_path / "in").mkdir(exist_ok=True)
    variables = {"PATH": os.environ["PATH"], "SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_COUNT": str(count),
                 "DRY_RUN": "1", "RUNTIME": "apptainer", **env}
    if minimum is not None:
        variables["SLURM_ARRAY_TASK_MIN"] = str(minimum)
    return subprocess.run(["bash", str(SLURM), "in", "out", "--mode", "fast"], cwd=tmp_path, env=variables,
                          capture_output=True, text=True, timeout=30)


def test_slurm_script_parses():
    subprocess.run(["bash", "-n", str(SLURM)], check=True)
    assert "#SBATCH --array=" in SLURM.read_text()


@pytest.mark.parametrize("task, count, minimum, shard", [(0, 4, 0, "0/4"), (3, 4, None, "3/4"), (1, 4, 1, "0/4"),
                                                         (4, 4, 1, "3/4")])
def test_slurm_shard_from_the_array_task(tmp_path, task, count, minimum, shard):
    result = slurm(tmp_path, task, count, minimum, CUDA_VISIBLE_DEVICES="2", IMAGE="/images/f.sif")
    assert result.returncode == 0, result.stderr
    words = shlex.split(result.stdout.splitlines()[-1])
    assert words[:2] == ["apptainer", "exec"] and "--nv" in words
    assert f"SHARD={shard}" in words and "CUDA_VISIBLE_DEVICES=2" in words
    assert f"{tmp_path}/in:/workspace/inputs:ro" in words and f"{tmp_path}/out:/workspace/outputs" in words
    assert words[-5:] == ["/images/f.sif", "sh", "predict.sh", "--mode", "fast"]


def test_slurm_without_a_container_runs_predict_sh(tmp_path):
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "predict.sh").write_text('echo "SHARD=$SHARD IN=$INPUT_DIR OUT=$OUTPUT_DIR ARGS=$*"\n')
    result = slurm(tmp_path, 2, 3, DRY_RUN="", RUNTIME="none", APP_DIR=str(tmp_path / "app"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == f"SHARD=2/3 IN={tmp_path}/in OUT={tmp_path}/out ARGS=--mode fast"


def test_slurm_refuses_a_task_outside_the_range(tmp_path):
    result = slurm(tmp_path, 9, 4, 0)
    assert result.returncode == 2 and "plain range" in result.stderr
    result = subprocess.run(["bash", str(SLURM), "in", "out"], cwd=tmp_path, capture_output=True, text=True,
                            env={"PATH": os.environ["PATH"]})
    assert result.returncode != 0 and "sbatch --array" in result.stderr


def test_more_shards_than_cases_is_not_a_failure(cases, tmp_path, tiny_weights, capsys):
    assert predict(cases, tmp_path / "out", tiny_weights, "--shard", "5/6") == 0
    assert "has no cases" in capsys.readouterr().out
    assert not list((tmp_path / "out").glob("*.nii.gz"))
