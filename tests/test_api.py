"""The Python API as docs/api.md documents it, and the packaging's console script."""
from __future__ import annotations

import re
import sys
import tomllib

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import ROOT, same_geometry, synthetic_ct

API_DOC = ROOT / "docs" / "api.md"
DOC_LOAD = 'Predictor.from_weights("weights", device="auto", mode="accurate")'


def documented_examples() -> list[str]:
    blocks = re.findall(r"^( *)```python\n(.*?)^ *```", API_DOC.read_text(), re.DOTALL | re.MULTILINE)
    assert blocks, "docs/api.md has no python example"
    code = [re.sub(rf"^{indent}", "", block, flags=re.MULTILINE) for indent, block in blocks]
    assert DOC_LOAD in code[0]
    return code


def test_documented_example_runs(tmp_path, tiny_weights, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "inputs").mkdir()
    first = synthetic_ct(size=(40, 36, 8), seed=1)
    second = synthetic_ct(size=(36, 40, 6), spacing=(1.2, 1.0, 5.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1), seed=2)
    sitk.WriteImage(first, "inputs/case_0001_0000.nii.gz")
    sitk.WriteImage(second, "inputs/case_0002_0000.nii.gz")
    example, *more = documented_examples()
    example = example.replace(
        DOC_LOAD, f'Predictor.from_weights({str(tiny_weights)!r}, device="cpu", folds=(0,), tta=False, progress=False)')
    scope: dict = {}
    for code in (example, *more):  # the later snippets go on from the first one's variables
        exec(compile(code, str(API_DOC), "exec"), scope)
    written = sitk.ReadImage(str(tmp_path / "case_0001.nii.gz"))
    assert same_geometry(written, first) and written.GetPixelID() == sitk.sitkUInt8
    assert same_geometry(scope["mask"], second)
    assert scope["labels"].shape == (6, 40, 36) and scope["labels"].dtype == np.uint8
    assert set(np.unique(scope["labels"])) <= {0, 1, 2, 3, 4}
    assert (tmp_path / "case_0002.png").stat().st_size > 0  # the preview snippet


def test_one_predictor_predicts_many_without_reloading(tiny_weights, monkeypatch):
    from app.inference import predictor as predictor_module
    from app.inference.predictor import Predictor

    predictor = Predictor.from_weights(tiny_weights, device="cpu", folds=(0,), tta=False, progress=False)
    assert predictor.folds == (0,) and predictor.device.type == "cpu" and not predictor.mode.tta
    networks = list(predictor.networks)

    def no_reload(*args, **kwargs):
        raise AssertionError("weights loaded again")
    monkeypatch.setattr(predictor_module, "load_weights", no_reload)
    monkeypatch.setattr(predictor_module, "load_network", no_reload)
    images = [synthetic_ct(size=(40, 36, 8), seed=3),
              synthetic_ct(size=(32, 44, 7), spacing=(1.1, 0.8, 3.0), seed=4)]
    for image in images:
        mask = predictor.predict_image(image)
        assert same_geometry(mask, image) and mask.GetPixelID() == sitk.sitkUInt8
    assert all(a is b for a, b in zip(predictor.networks, networks))


def test_pyproject_console_script(tmp_path, monkeypatch, capsys):
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == "flare21-seg"
    assert project["scripts"]["flare21-predict"] == "app.console:console_main"
    dynamic = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["dynamic"]
    assert dynamic["dependencies"] == {"file": ["requirements.txt"]}
    from app.console import console_main
    monkeypatch.setattr(sys, "argv", ["flare21-predict", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        console_main()
    assert exit_info.value.code == 0 and "--shard" in capsys.readouterr().out
    monkeypatch.setattr(sys, "argv", ["flare21-predict", "-i", str(tmp_path / "none"), "-o", str(tmp_path / "out")])
    assert console_main() == 2
