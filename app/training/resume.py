"""Continuing an interrupted fold, and ending one on purpose part-way.

Resuming is nnU-Net v1's own `-c` (`load_latest_checkpoint`: network, optimiser, fp16 scaler,
epoch and loss curves; nnUNetTrainerV2 then sets the poly learning rate of that epoch), with one
correction: nnunet's CE-to-Dice trainer recomputes its loss weights for the epoch it resumes at,
while an uninterrupted run trains that epoch with the weights set when the previous one ended.

Every epoch appends what it trained with (learning rate, CE and Dice weights) to the fold's
`schedule_trace.jsonl`, so that a resumed run can be checked against an uninterrupted one.
"""
from __future__ import annotations

import json
from pathlib import Path

LATEST = "model_latest.model"
FINAL = "model_final_checkpoint.model"
TRACE = "schedule_trace.jsonl"


class StoppedForNow(Exception):
    """This invocation's epochs for the fold are done (--stop-after-epochs); a checkpoint is written."""

    def __init__(self, epochs_done: int):
        super().__init__(f"stopped after epoch {epochs_done}")
        self.epochs_done = epochs_done


def resumable_checkpoint(fold_dir: Path) -> Path | None:
    """The checkpoint nnunet's load_latest_checkpoint would take (final first, then latest)."""
    for name in (FINAL, LATEST):
        if (fold_dir / name).is_file():
            return fold_dir / name
    return None


def resume(trainer) -> int:
    """Load the latest checkpoint into an initialised trainer; returns the epoch it goes on from."""
    trainer.load_latest_checkpoint(train=True)
    finished = trainer.epoch - 1
    if finished >= 0 and hasattr(trainer, "update_loss"):
        # the weights an uninterrupted run set at the end of the last finished epoch
        trainer.epoch = finished
        trainer.update_loss()
        trainer.epoch = finished + 1
    return trainer.epoch


def current_schedule(trainer) -> dict:
    loss = getattr(trainer.loss, "loss", trainer.loss)  # inside deep supervision's wrapper
    return {"epoch": int(trainer.epoch), "lr": float(trainer.optimizer.param_groups[0]["lr"]),
            "weight_ce": float(getattr(loss, "weight_ce", float("nan"))),
            "weight_dice": float(getattr(loss, "weight_dice", float("nan"))),
            "max_num_epochs": int(trainer.max_num_epochs)}


def read_trace(fold_dir: Path) -> list[dict]:
    path = Path(fold_dir) / TRACE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def start_trace(fold_dir: Path, from_epoch: int) -> None:
    """Keep the entries of the epochs before `from_epoch` (a resumed run repeats any after its checkpoint)."""
    kept = [entry for entry in read_trace(fold_dir) if entry["epoch"] < from_epoch]
    (Path(fold_dir) / TRACE).write_text("".join(json.dumps(entry) + "\n" for entry in kept))


def add_epoch_hooks(trainer, fold_dir: Path, stop_after_epochs: int | None, first_epoch: int) -> None:
    """Trace every epoch; with `stop_after_epochs`, checkpoint and stop once this invocation has
    trained that many epochs of the fold (unless the fold is finished anyway)."""
    trace = Path(fold_dir) / TRACE
    epoch_end = trainer.on_epoch_end

    def on_epoch_end():
        with open(trace, "a") as out:
            out.write(json.dumps(current_schedule(trainer)) + "\n")
        go_on = epoch_end()
        done = trainer.epoch + 1
        if stop_after_epochs and done - first_epoch >= stop_after_epochs and done < trainer.max_num_epochs:
            trainer.save_checkpoint(str(Path(fold_dir) / LATEST))
            raise StoppedForNow(done)
        return go_on

    trainer.on_epoch_end = on_epoch_end
