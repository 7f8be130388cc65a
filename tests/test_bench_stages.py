"""bench.stages on a small case: its report says what the issue asks, and our preprocessing and
export agree with v1's own there (speed is measured by the benchmark, not asserted here)."""
from __future__ import annotations

import json
import re

import pytest

from bench.stage_table import stage_table


@pytest.mark.parametrize("order_z", ["0", "1"])  # v1's default export along z, and linear there
def test_bench_stages_last_line_and_agreement(tmp_path, capsys, order_z):
    from bench.stages import main
    assert main(["--size", "96", "80", "30", "--out", str(tmp_path), "--export-order-z", order_z]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    match = re.fullmatch(r"stages_speedup=([0-9.]+) image_max_abs=([0-9.e+-]+) mask_agreement=([0-9.]+)", last)
    assert match, last
    assert float(match.group(2)) <= 1e-3 and float(match.group(3)) >= 0.9999
    report = json.loads((tmp_path / "stages.json").read_text())
    assert min(report["voxels_per_label"].values()) > 100  # the stand-in probabilities make every organ
    assert {"read", "crop", "resample", "normalise", "export_resampling", "argmax", "postprocess",
            "write"} <= report["ours"].keys()


def test_stage_table_accounts_against_the_outside_wall_time():
    records = [{"process_stages": {"interpreter_and_imports": 1.0, "cuda_init": 0.5, "weight_load": 0.5},
                "stages": {"read": 1.0, "network": 4.0}, "ready_at_unix": 1.0}]
    lines = stage_table(records, wall_s=8.0)
    assert "| network | 4.000 | 50.0 % |" in lines
    assert "| unaccounted | 1.000 | 12.5 % |" in lines
