"""Trainer classes (imports nnunet and torch: training only, never the inference path)."""
from __future__ import annotations

from nnunet.training.loss_functions.deep_supervision import MultipleOutputLoss2
from nnunet.training.loss_functions.dice_loss import DC_and_CE_loss
from nnunet.training.network_training.nnUNet_variants.loss_function.nnUNetTrainerV2_graduallyTransitionFromCEToDice import (  # noqa: E501
    nnUNetTrainerV2_graduallyTransitionFromCEToDice,
)

from app.training.schedule import loss_weights

STOCK_TRAINER = nnUNetTrainerV2_graduallyTransitionFromCEToDice
STOCK_EPOCHS = 1000


class ScaledCEToDiceTrainer(nnUNetTrainerV2_graduallyTransitionFromCEToDice):
    """nnunet's CE-to-Dice trainer with its breakpoints at 50 % and 75 % of max_num_epochs.

    Everything else (network, deep supervision, augmentation, optimiser, poly LR) is the stock
    nnUNetTrainerV2. The network depends only on the plans, so stock nnUNetTrainerV2 rebuilds it.
    `max_num_epochs`, `num_batches_per_epoch` and `num_val_batches_per_epoch` are set by the caller
    right after construction (before initialize()).
    """

    def update_loss(self):
        epoch = min(self.epoch, self.max_num_epochs)
        weight_ce, weight_dice = loss_weights(epoch, self.max_num_epochs)
        self.print_to_log_file("weight ce", weight_ce, "weight dice", weight_dice)
        loss = DC_and_CE_loss({'batch_dice': self.batch_dice, 'smooth': 1e-5, 'do_bg': False}, {},
                              weight_ce=weight_ce, weight_dice=weight_dice)
        self.loss = MultipleOutputLoss2(loss, self.ds_loss_weights)


def trainer_class_for(epochs: int):
    """nnunet's own class for the stock length, the scaled subclass otherwise."""
    return STOCK_TRAINER if epochs == STOCK_EPOCHS else ScaledCEToDiceTrainer
