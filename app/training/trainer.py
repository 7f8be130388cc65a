"""Trainer classes (imports nnunet and torch: training only, never the inference path)."""
from __future__ import annotations

import json
import os
import pickle
import time
from pathlib import Path

from nnunet.training.loss_functions.deep_supervision import MultipleOutputLoss2
from nnunet.training.loss_functions.dice_loss import DC_and_CE_loss
from nnunet.training.network_training.nnUNet_variants.loss_function.nnUNetTrainerV2_graduallyTransitionFromCEToDice import (  # noqa: E501
    nnUNetTrainerV2_graduallyTransitionFromCEToDice,
)

from app.inference.weights import export_params
from app.training.schedule import epochs_for_budget, loss_weights_from

STOCK_TRAINER = nnUNetTrainerV2_graduallyTransitionFromCEToDice
STOCK_EPOCHS = 1000


class ScaledCEToDiceTrainer(nnUNetTrainerV2_graduallyTransitionFromCEToDice):
    """nnunet's CE-to-Dice trainer with its breakpoints at 50 % and 75 % of max_num_epochs.

    Everything else (network, deep supervision, augmentation, optimiser, poly LR) is the stock
    nnUNetTrainerV2. The network depends only on the plans, so stock nnUNetTrainerV2 rebuilds it.
    `max_num_epochs`, `num_batches_per_epoch` and `num_val_batches_per_epoch` are set by the caller
    right after construction (before initialize()).

    Optional knobs, set the same way:
    - `batch_size_override`: samples per batch instead of the plan's (a GPU runs a small plan's
      batch of 2 no faster than a batch of 8);
    - `base_features_override`: the network's base feature count instead of the plan's (a wider
      network, started from a trained one by app.training.widen);
    - `export_order_z_override`: v1's segmentation_export_params interpolation_order_z in the
      plans (its validation, stock predict and the export all read it there);
    - `schedule_start`: the run covers the CE-to-Dice schedule from this fraction on (0.75: Dice
      only, for fold fine-tunes of a model that ended its schedule in Dice);
    - `time_budget_s`: after `CALIBRATION_EPOCHS` epochs, max_num_epochs is fitted to the wall-clock
      budget once, so that the CE-to-Dice schedule and the poly learning rate still run their full
      course. A run that falls far behind its estimate stops at `OVERRUN_FACTOR` x the budget.

    Every checkpoint has a `.run_state.json` beside it (the fitted epoch count and the budget time
    spent), which `load_checkpoint` restores, so that a resumed run (--continue) keeps the schedule.
    """

    batch_size_override: int | None = None
    base_features_override: int | None = None
    export_order_z_override: int | None = None
    schedule_start: float = 0.0    # the part of the CE-to-Dice schedule this run covers starts here
    time_budget_s: float | None = None
    CALIBRATION_EPOCHS = 3
    OVERRUN_FACTOR = 1.15
    RUN_STATE_SUFFIX = ".run_state.json"   # beside each checkpoint: what a resumed run must keep
    _start_epoch = 0            # the epoch this invocation started at (> 0 when resumed)
    _epochs_fitted = False      # max_num_epochs already fitted to the budget
    _elapsed_before = 0.0       # budget seconds spent by the invocations before this one

    def process_plans(self, plans):
        if self.base_features_override:
            # in the plans themselves, so that checkpoints and the export record the network trained
            plans["base_num_features"] = int(self.base_features_override)
        if self.export_order_z_override is not None:
            # refused before training, not at the export after it
            plans["segmentation_export_params"] = export_params(plans.get("segmentation_export_params"),
                                                                int(self.export_order_z_override))
        super().process_plans(plans)
        if self.batch_size_override:
            self.batch_size = int(self.batch_size_override)

    def save_debug_information(self):
        super().save_debug_information()  # also copies the plans file to plans.pkl, which the export reads
        if self.base_features_override or self.export_order_z_override is not None:
            _write_atomic_bytes(Path(self.output_folder_base) / "plans.pkl", pickle.dumps(self.plans))

    def run_training(self):
        self._budget_start = time.monotonic() - self._elapsed_before
        self._first_epoch_end = None
        self._start_epoch = self.epoch
        return super().run_training()

    def run_state(self) -> dict:
        start = getattr(self, "_budget_start", None)
        return {"max_num_epochs": int(self.max_num_epochs), "epochs_fitted": bool(self._epochs_fitted),
                "budget_elapsed_s": None if start is None else round(time.monotonic() - start, 3)}

    def restore_run_state(self, state: dict) -> None:
        """A resumed run keeps the epoch count fitted to the budget (the poly learning rate and the
        CE-to-Dice breakpoints depend on it) and the budget time already spent."""
        if state.get("epochs_fitted"):
            self.max_num_epochs = int(state["max_num_epochs"])
            self._epochs_fitted = True
        self._elapsed_before = float(state.get("budget_elapsed_s") or 0.0)

    def save_checkpoint(self, fname, save_optimizer=True):
        """Atomic: a job killed mid-write (pre-emption, a time limit) leaves the previous checkpoint
        whole. nnunet writes `fname` and `fname.pkl`; both go to temporary names first."""
        tmp = f"{fname}.partial"
        super().save_checkpoint(tmp, save_optimizer)
        _write_atomic(Path(fname + self.RUN_STATE_SUFFIX), json.dumps(self.run_state()))
        os.replace(tmp + ".pkl", fname + ".pkl")
        os.replace(tmp, fname)

    def load_checkpoint(self, fname, train=True):
        state_file = Path(fname + self.RUN_STATE_SUFFIX)
        if state_file.is_file():
            self.restore_run_state(json.loads(state_file.read_text()))
        return super().load_checkpoint(fname, train)

    def on_epoch_end(self):
        if self.time_budget_s is not None:
            self._fit_epochs_to_budget()
        return super().on_epoch_end()

    def _fit_epochs_to_budget(self):
        now = time.monotonic()
        elapsed = now - self._budget_start
        done = self.epoch + 1
        done_here = done - self._start_epoch
        if self._epochs_fitted:
            if elapsed > self.OVERRUN_FACTOR * self.time_budget_s:
                self.print_to_log_file(f"time budget overrun ({elapsed:.0f} s): stopping after epoch {self.epoch}")
                self.max_num_epochs = done
        elif done_here == 1:
            self._first_epoch_end = now   # the first epoch pays for cudnn autotuning and worker start-up
        elif done_here == self.CALIBRATION_EPOCHS:
            per_epoch = (now - self._first_epoch_end) / (done_here - 1)
            self.max_num_epochs = epochs_for_budget(self.time_budget_s, elapsed, per_epoch, done)
            self._epochs_fitted = True
            self.print_to_log_file(f"time budget {self.time_budget_s:.0f} s: {per_epoch:.2f} s per epoch, "
                                   f"max_num_epochs set to {self.max_num_epochs}")

    def initialize(self, training=True, force_load_plans=False):
        super().initialize(training, force_load_plans)
        if self.schedule_start:
            self.update_loss()   # nnunet starts every run on cross-entropy; this one starts later

    def update_loss(self):
        epoch = min(self.epoch, self.max_num_epochs)
        weight_ce, weight_dice = loss_weights_from(epoch, self.max_num_epochs, self.schedule_start)
        self.print_to_log_file("weight ce", weight_ce, "weight dice", weight_dice)
        loss = DC_and_CE_loss({'batch_dice': self.batch_dice, 'smooth': 1e-5, 'do_bg': False}, {},
                              weight_ce=weight_ce, weight_dice=weight_dice)
        self.loss = MultipleOutputLoss2(loss, self.ds_loss_weights)


def trainer_class_for(epochs: int, scaled: bool = False):
    """nnunet's own class for the stock length, the scaled subclass otherwise (or when asked,
    for a time budget, a batch size, width or export setting other than the plan's, or a later
    schedule start)."""
    return STOCK_TRAINER if epochs == STOCK_EPOCHS and not scaled else ScaledCEToDiceTrainer


def _write_atomic(path: Path, text: str) -> None:
    _write_atomic_bytes(path, text.encode())


def _write_atomic_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_bytes(data)
    os.replace(tmp, path)
