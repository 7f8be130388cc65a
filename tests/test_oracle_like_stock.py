"""Every comparison with stock nnU-Net v1 runs ours with stock's postprocessing: stock applies no
two-kidney rule, so a comparison with the rule on our side measures the rule, not the port
(bench.real_scale gave dice_vs_stock 0.92 that way). Cheap: the commands are built, not run."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from app.inference.cli import add_arguments, config_from_args
from app.oracle import OURS_AS_STOCK


def predict_config(predict_args: list[str]):
    """The PredictConfig that `python -m app predict` would build from these arguments."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return config_from_args(parser.parse_args(["-i", "in", "-o", "out", *predict_args]))


def after_predict_sh(argv: list[str]) -> list[str]:
    """predict.sh passes what follows it on to `python -m app predict`."""
    index = next(i for i, a in enumerate(argv) if a.endswith("predict.sh"))
    return argv[index + 1:]


def test_the_flag_means_nnunets_rules_alone():
    assert predict_config(list(OURS_AS_STOCK)).paired_organs is False
    assert predict_config([]).paired_organs is True  # the product keeps its rule


def test_bench_run_and_gpu_compare_with_stock_postprocessing():
    from bench.run import ours_command
    for extra in ([], ["--mode", "fast", "--device", "cpu"], ["--folds", "0"]):
        assert predict_config(after_predict_sh(ours_command(extra))).paired_organs is False


def test_real_scale_compares_with_stock_postprocessing(tmp_path: Path):
    from bench.real_scale import ours_command
    argv = ours_command(tmp_path / "weights", tmp_path / "in", tmp_path / "out")
    predict_args = argv[argv.index("predict") + 1:]
    assert predict_config(predict_args).paired_organs is False


@pytest.mark.parametrize("module", ["bench.run", "bench.gpu", "bench.real_scale"])
def test_benches_build_our_side_through_the_checked_command(module):
    """No oracle bench starts predict by a command of its own that the tests above do not see."""
    source = Path(__import__(module, fromlist=["_"]).__file__).read_text()
    assert source.count('"predict.sh"') + source.count('"predict",') <= 1, module
    assert "ours_command(" in source
