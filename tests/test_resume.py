"""--continue: a fold stopped part-way and resumed trains every epoch with the learning rate and
CE-to-Dice weights of an uninterrupted run; a resumed run keeps the epoch count fitted to its
time budget."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 8   # breakpoints at 4 and 6: resuming at epoch 5 lands inside the CE-to-Dice hand-over
STOP_AFTER = 5


def _run(cmd, log_file, timeout=600):
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                         env=dict(os.environ, PYTHONUNBUFFERED="1"))
    log_file.write_text(res.stdout + "\n--- stderr ---\n" + res.stderr)
    assert res.returncode == 0, f"{' '.join(map(str, cmd))} failed, see {log_file}:\n{res.stderr[-3000:]}"
    return res.stdout


def _trace(work: Path) -> list[dict]:
    from app.training.resume import read_trace
    fold_dirs = list(work.glob("nnUNet_results/nnUNet/3d_fullres/*/*/fold_0"))
    assert len(fold_dirs) == 1, fold_dirs
    return read_trace(fold_dirs[0])


def test_a_stopped_fold_resumes_with_the_schedule_of_an_uninterrupted_run(tmp_path):
    py = sys.executable
    task = tmp_path / "Task596_Resume"
    _run([py, "-m", "app", "synth", "--out", str(tmp_path / "data"), "--cases", "5", "--seed", "96",
          "--size", "small", "--nnunet-task", str(task)], tmp_path / "synth.log")
    train = [py, "-m", "app", "train", "--task-dir", str(task), "--planner", "small", "--folds", "0",
             "--epochs", str(EPOCHS), "--iterations", "1", "--val-iterations", "1", "--da-workers", "1",
             "--processes", "1", "--no-validation-tta", "--seed", "0"]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    # --prepare-only: what fold jobs on a cluster need first, and nothing more
    out = _run(train + ["--work-dir", str(whole), "--prepare-only"], tmp_path / "prepare.log")
    assert "fold jobs can start" in out
    assert (whole / "nnUNet_preprocessed" / task.name / "splits_final.pkl").is_file()
    assert not list(whole.glob("nnUNet_results/nnUNet/3d_fullres/*/*/fold_0"))
    # the reference run needs no validation; the resumed one validates a single case
    _run(train + ["--work-dir", str(whole), "--validation-cases", "0"], tmp_path / "whole.log")
    train += ["--validation-cases", "1"]
    # the same preprocessed data and split for the interrupted run
    shutil.copytree(whole / "nnUNet_preprocessed", parts / "nnUNet_preprocessed")

    out = _run(train + ["--work-dir", str(parts), "--stop-after-epochs", str(STOP_AFTER)], tmp_path / "part1.log")
    assert f"stopped after epoch {STOP_AFTER} of {EPOCHS}" in out
    fold_dir = next(parts.glob("nnUNet_results/nnUNet/3d_fullres/*/*/fold_0"))
    assert (fold_dir / "model_latest.model").is_file()
    assert not (fold_dir / "model_final_checkpoint.model").exists()
    assert [e["epoch"] for e in _trace(parts)] == list(range(STOP_AFTER))

    out = _run(train + ["--work-dir", str(parts), "--continue"], tmp_path / "part2.log")
    assert f"resuming from model_latest.model at epoch {STOP_AFTER} of {EPOCHS}" in out
    assert (fold_dir / "model_final_checkpoint.model").is_file()

    uninterrupted, resumed = _trace(whole), _trace(parts)
    assert [e["epoch"] for e in uninterrupted] == list(range(EPOCHS))
    # the schedule moves: the comparison below would catch an epoch that is off by one
    assert len({(e["weight_ce"], e["weight_dice"]) for e in uninterrupted}) >= 3
    assert all(a["lr"] > b["lr"] for a, b in zip(uninterrupted, uninterrupted[1:]))
    for whole_epoch, resumed_epoch in zip(uninterrupted, resumed, strict=True):
        assert resumed_epoch == pytest.approx(whole_epoch), (whole_epoch, resumed_epoch)
    # --validation-cases 1: one held-out case validated at full resolution
    assert [p.name for p in (fold_dir / "validation_raw").glob("*.nii.gz")] != []
    assert len(list((fold_dir / "validation_raw").glob("*.nii.gz"))) == 1
    assert len(json.loads((fold_dir / "validation_raw" / "summary.json").read_text())["results"]["all"]) == 1


def test_a_resumed_run_keeps_the_epochs_fitted_to_its_budget(tmp_path, monkeypatch):
    """With a fake clock: a run fits 3 + 54 epochs to a 300 s budget and is checkpointed after
    epoch 5; the resumed trainer keeps 57 epochs, counts the 40 s already spent, and still stops
    at 1.15 x the budget."""
    pytest.importorskip("nnunet")
    import app.training.trainer as trainer_module
    from app.training.trainer import ScaledCEToDiceTrainer

    clock = {"now": 0.0}
    monkeypatch.setattr(trainer_module.time, "monotonic", lambda: clock["now"])
    for name in ("on_epoch_end", "run_training", "load_checkpoint"):
        monkeypatch.setattr(trainer_module.STOCK_TRAINER, name, lambda self, *a, **k: True)

    def stock_save(self, fname, *args, **kwargs):   # nnunet writes the checkpoint and its .pkl
        Path(fname).write_bytes(b"model")
        Path(fname + ".pkl").write_bytes(b"info")
    monkeypatch.setattr(trainer_module.STOCK_TRAINER, "save_checkpoint", stock_save)

    def new_trainer():
        t = ScaledCEToDiceTrainer.__new__(ScaledCEToDiceTrainer)
        t.print_to_log_file = lambda *a, **k: None
        t.time_budget_s, t.max_num_epochs, t.epoch = 300.0, 1000, 0
        return t

    first = new_trainer()
    first.run_training()
    for epoch, seconds in enumerate([20, 5, 5, 5, 5]):
        clock["now"] += seconds
        first.epoch = epoch
        first.on_epoch_end()
    assert first.max_num_epochs == 57
    checkpoint = str(tmp_path / "model_latest.model")
    first.save_checkpoint(checkpoint)
    # written under temporary names, then renamed: nothing partial is left beside the checkpoint
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "model_latest.model", "model_latest.model.pkl", "model_latest.model.run_state.json"]

    clock["now"] = 1000.0   # a later process: its own clock, nothing spent yet
    resumed = new_trainer()
    resumed.load_checkpoint(checkpoint)
    resumed.epoch = 5
    resumed.run_training()
    assert resumed.max_num_epochs == 57
    for epoch in range(5, 8):   # no new calibration at the resumed run's third epoch
        clock["now"] += 5
        resumed.epoch = epoch
        resumed.on_epoch_end()
    assert resumed.max_num_epochs == 57
    clock["now"] += 1.15 * 300 - 40 - 15 + 1   # over 1.15 x the budget, counting the first run's 40 s
    resumed.epoch = 8
    resumed.on_epoch_end()
    assert resumed.max_num_epochs == 9


def test_a_finished_preprocessing_is_not_redone_for_a_plan_whose_trainer_writes_no_split(tmp_path, monkeypatch):
    """The localiser trains nnunet's fold "all", which writes no splits_final.pkl: --continue must
    still find its preprocessing done (the marker), and redo only one that never finished."""
    import nnunet.experiment_planning.utils as nnunet_utils

    from app.training.config import TrainConfig
    from app.training.planner import LOCALISER_PLANS_ID
    from app.training.workdir import plan_and_preprocess

    class Replanned(Exception):
        pass

    def crop(*args, **kwargs):
        raise Replanned
    monkeypatch.setattr(nnunet_utils, "crop", crop)
    cfg = TrainConfig(task_dir=tmp_path / "Task597_Loc", work_dir=tmp_path / "work", out=None, planner="localiser")
    paths = {"raw": tmp_path / "raw", "pre": tmp_path / "pre"}
    pre = paths["pre"] / "Task597_Loc"
    pre.mkdir(parents=True)
    plans_file = pre / f"{LOCALISER_PLANS_ID}_plans_3D.pkl"
    plans_file.write_bytes(b"plans")
    with pytest.raises(Replanned):   # plans but no marker: preprocessing was interrupted
        plan_and_preprocess(cfg, paths, "Task597_Loc", print)
    (pre / f"{LOCALISER_PLANS_ID}.preprocessed").write_text(plans_file.name)
    assert plan_and_preprocess(cfg, paths, "Task597_Loc", print) == plans_file
