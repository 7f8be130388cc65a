"""What the user sees and what is kept: one line per case, predict_log.jsonl, a final summary."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from app.labels import ORGANS

LOG_NAME = "predict_log.jsonl"


@dataclass
class CaseReport:
    case: str
    status: str                              # ok | failed | skipped
    seconds: float = 0.0
    device: str = ""
    shape: tuple[int, ...] = ()
    spacing: tuple[float, ...] = ()
    stages: dict[str, float] = field(default_factory=dict)
    volumes_ml: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    network_passes: int = 0                  # tiles x flips x folds
    roi: dict = field(default_factory=dict)  # two-stage prediction: localiser time, region, passes saved, fallback
    gpu: dict = field(default_factory=dict)

    def line(self) -> str:
        if self.status == "failed":
            return f"ERROR {self.case}: {self.error}"
        if self.status == "skipped":
            return f"skip  {self.case}: {self.error}"
        shape = "x".join(str(s) for s in self.shape)
        spacing = "x".join(f"{s:.2f}" for s in self.spacing)
        return f"done  {self.case}  shape {shape}  spacing {spacing} mm  {self.device}  {self.seconds:.1f} s"


def organ_volumes_ml(mask: np.ndarray, spacing_xyz: tuple[float, ...]) -> dict[str, float]:
    voxel_ml = float(np.prod(spacing_xyz)) / 1000.0
    counts = np.bincount(mask.ravel(), minlength=len(ORGANS) + 1)
    return {organ.name: round(float(counts[organ.label]) * voxel_ml, 1) for organ in ORGANS}


def log_path(output_dir: Path, shard: tuple[int, int] | None = None) -> Path:
    """predict_log.jsonl; one file per shard, since appends from several machines to one file on a
    network file system are not atomic."""
    if shard is None:
        return output_dir / LOG_NAME
    return output_dir / f"predict_log.shard-{shard[0]}-of-{shard[1]}.jsonl"


def append_log(output_dir: Path, report: CaseReport, process: dict, shard: tuple[int, int] | None = None) -> None:
    """One JSON line per case, appended with a single write: organisers start one container
    per case, so every earlier line must survive."""
    record = {**asdict(report), **report.gpu, **process}
    record.pop("gpu")
    payload = (json.dumps(record, default=_jsonable) + "\n").encode()
    fd = os.open(log_path(output_dir, shard), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, payload)
    finally:
        os.close(fd)


def _jsonable(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return str(value)


def summary_table(reports: list[CaseReport]) -> str:
    names = [organ.name for organ in ORGANS]
    header = f"{'case':<28}{'status':<8}" + "".join(f"{n + ' ml':>13}" for n in names) + f"{'seconds':>10}  device"
    rows = [header, "-" * len(header)]
    for r in reports:
        vols = "".join(f"{r.volumes_ml.get(n, float('nan')):>13.1f}" if r.volumes_ml else f"{'-':>13}" for n in names)
        rows.append(f"{r.case[:27]:<28}{r.status:<8}{vols}{r.seconds:>10.1f}  {r.device or '-'}")
    ok = sum(r.status == "ok" for r in reports)
    failed = sum(r.status == "failed" for r in reports)
    rows.append(f"{ok} written, {failed} failed, {len(reports) - ok - failed} skipped")
    return "\n".join(rows)
