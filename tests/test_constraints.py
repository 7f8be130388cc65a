"""The CUDA lines' constraint files agree with requirements.txt, the Makefile, the Dockerfile and
the driver floors predict names: every pin exact, one torch per line, the default line's torch the
one the dev venv and the test image install."""
from __future__ import annotations

import re
from pathlib import Path

from app.inference.cuda_probe import DRIVER_FLOOR

ROOT = Path(__file__).resolve().parent.parent
LINES = {13: "2.13.0", 12: "2.10.0"}


def pins(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version and re.fullmatch(r"[0-9][0-9A-Za-z.+]*", version), f"{path.name}: {line!r} is not an exact pin"
            out[name.lower().replace("_", "-")] = version
    return out


def test_each_line_pins_its_torch_and_nothing_requirements_pins():
    requirements = pins(ROOT / "requirements.txt")
    for line, torch in LINES.items():
        constraint = pins(ROOT / f"requirements-cuda{line}.txt")
        assert constraint["torch"] == torch
        assert set(constraint) & set(requirements) == {"torch"}, f"cuda{line}.txt pins what requirements.txt pins"
        cuda_libs = [name for name in constraint if name.startswith("nvidia-")]
        assert cuda_libs and all(name.endswith("-cu12") == (line == 12) for name in cuda_libs), cuda_libs


def test_default_line_is_the_torch_of_requirements_makefile_and_dockerfile():
    assert pins(ROOT / "requirements.txt")["torch"] == LINES[13]
    assert f"pip install --quiet torch=={LINES[13]}" in (ROOT / "Makefile").read_text()
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "ARG CUDA=13\n" in dockerfile and 'constraints="/opt/requirements-cuda${CUDA}.txt"' in dockerfile
    assert {f"!requirements-cuda{line}.txt" for line in (12, 13)} <= set((ROOT / ".dockerignore").read_text().splitlines())


def test_predict_knows_the_driver_floor_of_every_line():
    lines = {int(p.stem[len("requirements-cuda"):]) for p in ROOT.glob("requirements-cuda*.txt")}
    assert lines == set(LINES) and lines <= set(DRIVER_FLOOR)
