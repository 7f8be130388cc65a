"""Write evaluation results: the organisers' CSV layout, a mean/sd table and a box plot."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import numpy as np

from app.evaluation.scoring import CaseScore
from app.labels import ORGANS


def csv_columns() -> list[str]:
    """The organisers' column order: Name, then DSC_i and NSD-1mm_i for each label i."""
    columns = ["Name"]
    for organ in ORGANS:
        columns += [f"DSC_{organ.label}", f"NSD-1mm_{organ.label}"]
    return columns


def write_csv(cases: Sequence[CaseScore], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(csv_columns())
        for case in cases:
            row: list[object] = [case.name]
            for organ in ORGANS:
                row += [repr(case.dsc[organ.label]), repr(case.nsd[organ.label])]
            writer.writerow(row)


def organ_statistics(cases: Sequence[CaseScore]) -> list[dict]:
    """Mean and (population) standard deviation per organ and metric over all cases."""
    rows = []
    for organ in ORGANS:
        dsc = np.array([case.dsc[organ.label] for case in cases], dtype=float)
        nsd = np.array([case.nsd[organ.label] for case in cases], dtype=float)
        rows.append({"label": organ.label, "organ": organ.name,
                     "dsc_mean": dsc.mean(), "dsc_sd": dsc.std(),
                     "nsd_mean": nsd.mean(), "nsd_sd": nsd.std(),
                     "volume_ratio": pooled_volume_ratio(cases, organ.label)})
    return rows


def pooled_volume_ratio(cases: Sequence[CaseScore], label: int) -> float:
    """Predicted over reference millilitres, summed over the cases with a prediction (a case weighs
    by its organ's volume); below 1 the masks are smaller than the organs. NaN without a reference."""
    volumes = [case.volume_ml[label] for case in cases if label in case.volume_ml]
    reference = sum(ref for _, ref in volumes)
    return sum(pred for pred, _ in volumes) / reference if reference > 0 else float("nan")


def format_table(cases: Sequence[CaseScore]) -> str:
    rows = organ_statistics(cases)
    lines = [f"{'organ':<12}{'DSC mean':>10}{'sd':>8}{'NSD-1mm mean':>14}{'sd':>8}{'volume ratio':>14}"]
    for row in rows:
        lines.append(f"{row['label']} {row['organ']:<10}{row['dsc_mean']:>10.4f}{row['dsc_sd']:>8.4f}"
                     f"{row['nsd_mean']:>14.4f}{row['nsd_sd']:>8.4f}{row['volume_ratio']:>14.3f}")
    lines.append(f"{'all organs':<12}{np.mean([r['dsc_mean'] for r in rows]):>10.4f}{'':>8}"
                 f"{np.mean([r['nsd_mean'] for r in rows]):>14.4f}")
    lines.append(f"({len(cases)} cases; sd is the population standard deviation over cases; volume ratio:"
                 f" predicted over reference ml, pooled over the cases with a prediction)")
    return "\n".join(lines)


def write_box_plot(cases: Sequence[CaseScore], path: Path) -> None:
    """One box per organ, DSC on the left and NSD at 1 mm on the right."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a display
    import matplotlib.pyplot as plt

    names = [organ.name for organ in ORGANS]
    figure, axes = plt.subplots(1, 2, figsize=(10, 4.5), sharey=True)
    for axis, metric, title in ((axes[0], "dsc", "DSC"), (axes[1], "nsd", "NSD at 1 mm")):
        values = [[getattr(case, metric)[organ.label] for case in cases] for organ in ORGANS]
        axis.boxplot(values, showmeans=True)
        axis.set_xticks(range(1, len(names) + 1), names)
        axis.set_title(f"{title} ({len(cases)} cases)")
        axis.set_ylim(-0.02, 1.02)
        axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
