"""Export of an nnU-Net v1 model folder to weights/, and later additions to its MANIFEST."""
from __future__ import annotations

import json
import shutil

from app.inference.weights import load_weights, sha256_of
from app.weights_export import update_manifest


def test_update_manifest_adds_keys_and_keeps_the_weights_verifiable(tiny_weights, tmp_path):
    weights = tmp_path / "w"
    shutil.copytree(tiny_weights, weights)
    before = {p.name: sha256_of(p) for p in weights.glob("fold_*.safetensors")}
    update_manifest(weights, {"predict_cost_per_case": {"seconds": 1.5}})
    manifest = json.loads((weights / "MANIFEST.json").read_text())
    assert manifest["predict_cost_per_case"] == {"seconds": 1.5}
    assert manifest["format_version"] == json.loads((tiny_weights / "MANIFEST.json").read_text())["format_version"]
    assert {name: manifest["files"][name] for name in before} == before
    assert list(manifest)[-1] == "files"
    assert sorted(load_weights(weights).folds) == [0, 1]
    assert not list(weights.glob(".*.tmp"))


def test_update_manifest_cannot_replace_the_file_hashes(tiny_weights, tmp_path):
    weights = tmp_path / "w"
    shutil.copytree(tiny_weights, weights)
    listed = json.loads((weights / "MANIFEST.json").read_text())["files"]
    update_manifest(weights, {"files": {"fold_0.safetensors": "0" * 64}})
    assert json.loads((weights / "MANIFEST.json").read_text())["files"] == listed
    assert sorted(load_weights(weights).folds) == [0, 1]
