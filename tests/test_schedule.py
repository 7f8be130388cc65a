"""The CE-to-Dice schedule: nnunet's breakpoints at 1000 epochs, scaled ones for short runs,
and the loss stays wrapped for deep supervision after every update."""
import pytest

from app.training.schedule import breakpoints, loss_weights


@pytest.mark.parametrize("epoch,expected", [(0, (2, 0)), (500, (2, 0)), (625, (1, 1)), (750, (0, 2)),
                                            (1000, (0, 2))])
def test_stock_length(epoch, expected):
    assert loss_weights(epoch, 1000) == pytest.approx(expected)


def test_matches_nnunet_formula_everywhere_at_1000():
    for e in range(0, 1001):
        if e <= 500:
            ref = (2, 0)
        elif e <= 750:
            ref = (2 - 2 / 250 * (e - 500), 2 / 250 * (e - 500))
        else:
            ref = (0, 2)
        assert loss_weights(e, 1000) == pytest.approx(ref)


@pytest.mark.parametrize("epoch,expected", [(0, (2, 0)), (20, (2, 0)), (25, (1, 1)), (30, (0, 2)),
                                            (40, (0, 2)), (22, (1.6, 0.4))])
def test_short_run_scaled(epoch, expected):
    assert breakpoints(40) == (20, 30)
    assert loss_weights(epoch, 40) == pytest.approx(expected)


def test_weights_sum_to_two_and_are_monotone():
    prev_dice = 0.0
    for e in range(0, 31):
        ce, dice = loss_weights(e, 30)
        assert ce + dice == pytest.approx(2.0)
        assert dice >= prev_dice
        prev_dice = dice


def test_invalid_epochs():
    with pytest.raises(ValueError):
        loss_weights(11, 10)
    with pytest.raises(ValueError):
        loss_weights(0, 0)


@pytest.mark.parametrize("start,epoch,expected", [
    (0.0, 5, (2, 0)),          # the whole schedule: as loss_weights
    (0.75, 0, (0, 2)),         # a fine-tune after a finished schedule: Dice from its first epoch
    (0.75, 40, (0, 2)),
    (0.5, 0, (2, 0)),          # from the hand-over's start: CE first, Dice by the half-way epoch
    (0.5, 10, (1, 1)),         # effective epoch 20 + 10 = 25 of 40: half-way through 20-30
    (0.5, 20, (0, 2)),
])
def test_a_run_can_cover_the_schedule_from_a_later_point(start, epoch, expected):
    from app.training.schedule import loss_weights_from

    assert loss_weights_from(epoch, 40, start) == pytest.approx(expected)


def test_the_start_fraction_must_leave_some_schedule():
    from app.training.schedule import loss_weights_from

    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="start_fraction"):
            loss_weights_from(0, 40, bad)


def test_loss_stays_wrapped_for_deep_supervision():
    pytest.importorskip("nnunet")
    from nnunet.training.loss_functions.deep_supervision import MultipleOutputLoss2
    from nnunet.training.loss_functions.dice_loss import DC_and_CE_loss

    from app.training.trainer import STOCK_TRAINER, ScaledCEToDiceTrainer, trainer_class_for

    assert trainer_class_for(1000) is STOCK_TRAINER
    assert trainer_class_for(40) is ScaledCEToDiceTrainer
    assert issubclass(ScaledCEToDiceTrainer, STOCK_TRAINER)

    t = ScaledCEToDiceTrainer.__new__(ScaledCEToDiceTrainer)  # no plans needed for update_loss
    t.batch_dice = True
    t.ds_loss_weights = [0.53, 0.27, 0.13, 0.07, 0.0]
    t.max_num_epochs = 40
    t.print_to_log_file = lambda *a, **k: None
    for epoch in range(0, 41):
        t.epoch = epoch
        t.update_loss()
        assert isinstance(t.loss, MultipleOutputLoss2)
        assert list(t.loss.weight_factors) == t.ds_loss_weights
        inner = t.loss.loss
        assert isinstance(inner, DC_and_CE_loss)
        assert (inner.weight_ce, inner.weight_dice) == pytest.approx(loss_weights(epoch, 40))


def test_epochs_for_budget():
    from app.training.schedule import epochs_for_budget

    # 3 epochs done in 30 s at 10 s each: 570 s left hold 57 more
    assert epochs_for_budget(600, 30, 10, 3) == 60
    assert epochs_for_budget(600, 700, 10, 3) == 3       # already over: never fewer than done
    assert epochs_for_budget(600, 0, 7, 0) == 85
    with pytest.raises(ValueError):
        epochs_for_budget(600, 0, 0, 1)


def test_trainer_fits_epochs_to_its_time_budget(monkeypatch):
    """With a fake clock: epoch 0 (warm-up) takes 20 s, later ones 5 s. After the calibration
    epochs the run is fitted to the budget once; a run that then falls far behind stops."""
    pytest.importorskip("nnunet")
    import app.training.trainer as trainer_module
    from app.training.trainer import ScaledCEToDiceTrainer

    clock = {"now": 0.0}
    monkeypatch.setattr(trainer_module.time, "monotonic", lambda: clock["now"])
    monkeypatch.setattr(trainer_module.STOCK_TRAINER, "on_epoch_end", lambda self: True)
    t = ScaledCEToDiceTrainer.__new__(ScaledCEToDiceTrainer)
    t.print_to_log_file = lambda *a, **k: None
    t.time_budget_s, t.max_num_epochs = 300.0, 1000
    t._budget_start, t._first_epoch_end = 0.0, None
    for epoch, seconds in enumerate([20, 5, 5]):
        clock["now"] += seconds
        t.epoch = epoch
        t.on_epoch_end()
    # 30 s spent, 5 s per epoch: 3 done + 270 / 5
    assert t.max_num_epochs == 3 + 54
    for epoch in range(3, 20):             # epochs suddenly take 40 s
        clock["now"] += 40
        t.epoch = epoch
        t.on_epoch_end()
        if clock["now"] > 1.15 * 300:
            break
    assert t.max_num_epochs == t.epoch + 1 < 57


def test_parallel_config_round_trip(tmp_path):
    from app.training.parallel import config_from_json, config_to_json
    from app.training.pipeline import TrainConfig

    cfg = TrainConfig(task_dir=tmp_path / "Task1_X", work_dir=tmp_path / "w", out=None, folds=(0, 3),
                      time_budget_s=90.0, batch_size=8, data_description={"kind": "phantoms"},
                      fold_init=tmp_path / "m.model")
    back = config_from_json(config_to_json(cfg))
    assert back == cfg
    assert isinstance(back.fold_init, type(tmp_path)) and back.out is None


def test_parallel_folds_spread_over_gpus(tmp_path, monkeypatch):
    """With several GPUs, fold i's process sees only GPU i mod count; with one, the environment
    is left alone."""
    import json
    import subprocess

    import torch

    import app.training.parallel as parallel
    from app.training.pipeline import TrainConfig

    seen = {}

    class FakeProcess:
        def __init__(self, argv, env, **_):
            seen[int(argv[-2])] = env.get("CUDA_VISIBLE_DEVICES")
            (tmp_path / argv[-1]).write_text(json.dumps({"fold": int(argv[-2])}))
            self.returncode = 0

        def wait(self):
            return 0

    monkeypatch.setattr(parallel, "unpack_once", lambda plans_file: None)
    monkeypatch.setattr(parallel, "split_once", lambda plans_file, work: None)
    monkeypatch.setattr(subprocess, "Popen", FakeProcess)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    cfg = TrainConfig(task_dir=tmp_path / "Task1_X", work_dir=tmp_path / "w", out=None, folds=(0, 1, 2, 3, 4))
    for count, expected in ((2, ["0", "1", "0", "1", "0"]), (1, [None] * 5)):
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        results = parallel.train_folds_in_parallel(cfg, tmp_path / "plans.pkl", None, lambda m: None)
        assert [r["fold"] for r in results] == [0, 1, 2, 3, 4]
        assert [seen[f] for f in range(5)] == expected
