"""How the efficiency harness starts one fresh run of the segmenter for one case.

Two runners, both called as `runner(inputs_dir, outputs_dir) -> exit code`:
- CommandRunner: a shell command (e.g. "sh predict.sh", or a `docker run ...` line) with
  INPUT_DIR and OUTPUT_DIR in its environment;
- BuildahRunner: a fresh container from an image via buildah (rootless, no Docker engine needed),
  run as the organisers run theirs: `cd /workspace && sh predict.sh` with inputs/outputs mounted.
A run over its time limit is killed with its whole process group and reported as exit code 124.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable, Sequence

TIMEOUT_EXIT_CODE = 124  # as coreutils' `timeout`
BUILDAH = ("buildah", "--storage-driver=vfs")
CONTAINER_INPUTS = "/workspace/inputs"
CONTAINER_OUTPUTS = "/workspace/outputs"
CONTAINER_COMMAND = "cd /workspace && sh predict.sh"


def run_process(command: str | Sequence[str], *, shell: bool = False, env: dict | None = None,
                timeout: float | None = None) -> int:
    """Run to completion and return the exit code; on timeout kill the whole process group.

    A new session makes the command a group leader, so `sh -c` children and container
    processes die with it instead of lingering after a timeout.
    """
    process = subprocess.Popen(command, shell=shell, env=env, start_new_session=True)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        print(f"run exceeded {timeout} s and was killed", file=sys.stderr)
        return TIMEOUT_EXIT_CODE
    except BaseException:  # Ctrl-C: do not leave the run behind
        _kill_group(process)
        raise


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


class CommandRunner:
    """`sh -c COMMAND` with INPUT_DIR / OUTPUT_DIR set (predict.sh reads exactly those)."""

    def __init__(self, command: str, timeout: float | None = None,
                 run: Callable[..., int] = run_process) -> None:
        if not command.strip():
            raise ValueError("--command is empty")
        self.command = command
        self.timeout = timeout
        self._run = run

    def environment(self, inputs: Path, outputs: Path) -> dict[str, str]:
        return {**os.environ, "INPUT_DIR": str(inputs), "OUTPUT_DIR": str(outputs)}

    def __call__(self, inputs: Path, outputs: Path) -> int:
        return self._run(self.command, shell=True, env=self.environment(inputs, outputs),
                         timeout=self.timeout)

    def describe(self) -> str:
        return f"command: {self.command}"


def buildah_from_argv(image: str) -> list[str]:
    return [*BUILDAH, "from", image]


def buildah_run_argv(container: str, inputs: Path, outputs: Path) -> list[str]:
    return [*BUILDAH, "run", "--isolation=chroot",
            "-v", f"{Path(inputs).resolve()}:{CONTAINER_INPUTS}:ro",
            "-v", f"{Path(outputs).resolve()}:{CONTAINER_OUTPUTS}",
            container, "--", "/bin/bash", "-c", CONTAINER_COMMAND]


def buildah_rm_argv(container: str) -> list[str]:
    return [*BUILDAH, "rm", container]


class BuildahRunner:
    """A fresh working container per case: `buildah from`, `buildah run`, `buildah rm`.

    The whole sequence is timed, as the organisers time the whole `docker run --rm`.
    Containers run this way see no GPU: GPU memory needs `--command "docker run --gpus ..."`.
    """

    def __init__(self, image: str, timeout: float | None = None,
                 run: Callable[..., int] = run_process,
                 create: Callable[[list[str]], subprocess.CompletedProcess] | None = None) -> None:
        if not image.strip():
            raise ValueError("--image is empty")
        self.image = image
        self.timeout = timeout
        self._run = run
        self._create = create or (lambda argv: subprocess.run(argv, capture_output=True, text=True))

    def __call__(self, inputs: Path, outputs: Path) -> int:
        created = self._create(buildah_from_argv(self.image))
        if created.returncode != 0:
            print(f"buildah from {self.image} failed ({created.returncode}): "
                  f"{(created.stderr or '').strip()}", file=sys.stderr)
            return created.returncode
        lines = (created.stdout or "").strip().splitlines()
        if not lines:
            print(f"buildah from {self.image} printed no container name", file=sys.stderr)
            return 1
        container = lines[-1].strip()  # pull progress may come first; the name is last
        try:
            return self._run(buildah_run_argv(container, inputs, outputs), timeout=self.timeout)
        finally:
            removed = self._create(buildah_rm_argv(container))
            if removed.returncode != 0:
                print(f"warning: buildah rm {container} failed: {(removed.stderr or '').strip()}",
                      file=sys.stderr)

    def describe(self) -> str:
        return f"image (buildah, vfs, chroot): {self.image}"
