"""--validation-cases K: each fold validates its first K held-out cases only, and the pooled
postprocessing choice then sees exactly those cases' references."""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

from app.training.config import TrainConfig
from app.training.fold import _validate
from app.training.pipeline import _keep_reference_of_validated_cases


class FakeTrainer:
    """Records what nnunet's validate would have predicted."""

    def __init__(self, cases):
        self.dataset_val = OrderedDict((case, {"properties_file": f"{case}.pkl"}) for case in cases)
        self.network = type("Net", (), {"eval": lambda self: None})()
        self.validated = None

    def validate(self, **kwargs):
        self.validated = (list(self.dataset_val), kwargs["do_mirroring"])


def _cfg(tmp_path: Path, **kwargs) -> TrainConfig:
    return TrainConfig(task_dir=tmp_path / "Task1_X", work_dir=tmp_path / "w", out=None, **kwargs)


def test_validation_takes_the_first_k_held_out_cases_by_name(tmp_path):
    trainer = FakeTrainer(["case_7", "case_2", "case_9", "case_4"])
    _validate(_cfg(tmp_path, validation_cases=2, validation_tta=False), trainer)
    assert trainer.validated == (["case_2", "case_4"], False)


def test_by_default_every_held_out_case_is_validated(tmp_path):
    cases = ["case_7", "case_2", "case_9"]
    trainer = FakeTrainer(cases)
    _validate(_cfg(tmp_path), trainer)
    assert sorted(trainer.validated[0]) == sorted(cases) and trainer.validated[1] is True


def test_pooled_postprocessing_sees_only_the_validated_references(tmp_path):
    validated = {0: ["a"], 1: ["c", "d"]}
    for fold, cases in validated.items():
        folder = tmp_path / f"fold_{fold}" / "validation_raw"
        folder.mkdir(parents=True)
        for case in cases:
            (folder / f"{case}.nii.gz").write_bytes(b"")
    references = tmp_path / "gt_niftis"
    references.mkdir()
    for case in "abcdef":
        (references / f"{case}.nii.gz").write_bytes(b"")
    _keep_reference_of_validated_cases(tmp_path, (0, 1))
    assert sorted(p.name for p in references.iterdir()) == ["a.nii.gz", "c.nii.gz", "d.nii.gz"]
