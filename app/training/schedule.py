"""The CE-to-Dice loss schedule of nnUNetTrainerV2_graduallyTransitionFromCEToDice.

At 1000 epochs (nnU-Net v1's stock length) it is exactly nnunet's: CE only up to epoch 500, a
linear hand-over until 750, Dice only after that. Shorter runs scale both breakpoints to 50 % and
75 % of max_epochs. Pure Python: no torch or nnunet import.
"""
from __future__ import annotations

CE_END_FRACTION = 0.5      # CE only until here
DICE_START_FRACTION = 0.75  # Dice only from here
TOTAL_WEIGHT = 2.0


def breakpoints(max_epochs: int) -> tuple[float, float]:
    if max_epochs <= 0:
        raise ValueError(f"max_epochs must be positive, got {max_epochs}")
    return CE_END_FRACTION * max_epochs, DICE_START_FRACTION * max_epochs


def loss_weights(epoch: float, max_epochs: int) -> tuple[float, float]:
    """(weight_ce, weight_dice) used after `epoch` (nnunet's update_loss is called with the epoch
    that just finished)."""
    if epoch < 0 or epoch > max_epochs:
        raise ValueError(f"invalid epoch {epoch} for a run of {max_epochs} epochs")
    b1, b2 = breakpoints(max_epochs)
    if epoch <= b1:
        return TOTAL_WEIGHT, 0.0
    if epoch <= b2:
        frac = (epoch - b1) / (b2 - b1)
        return TOTAL_WEIGHT - TOTAL_WEIGHT * frac, TOTAL_WEIGHT * frac
    return 0.0, TOTAL_WEIGHT


def loss_weights_from(epoch: int, max_epochs: int, start_fraction: float = 0.0) -> tuple[float, float]:
    """`loss_weights` for a run whose epochs cover only the schedule's part from `start_fraction`
    on: a fine-tune of a model that finished its own schedule continues where it ended (0.75:
    Dice only) instead of going back to cross-entropy."""
    if not 0.0 <= start_fraction < 1.0:
        raise ValueError(f"start_fraction must be in [0, 1), got {start_fraction}")
    return loss_weights(start_fraction * max_epochs + (1.0 - start_fraction) * epoch, max_epochs)


def epochs_for_budget(budget_s: float, elapsed_s: float, seconds_per_epoch: float, epochs_done: int) -> int:
    """Total epochs that fit a wall-clock budget, given the time spent so far and the measured
    seconds per epoch (never fewer than the epochs already done)."""
    if budget_s <= 0 or seconds_per_epoch <= 0:
        raise ValueError(f"budget and epoch time must be positive, got {budget_s}, {seconds_per_epoch}")
    remaining = max(0.0, budget_s - elapsed_s)
    return epochs_done + int(remaining // seconds_per_epoch)
