"""Lesions, organ vessels, distractors and absent organs: what DSC alone does not show.

Scored from the full structure maps that `python -m app synth --structures` writes beside the
FLARE labels (`structures/<name>.nii.gz` and `structures/roles.json`, which gives each
lesion, organ-vessel and distractor structure its id, its FLARE label and its role):
- recall per lesion kind: the share of its voxels labelled as its organ (a lesion counts as its
  organ), pooled over the cases; the same per organ-vessel kind;
- distractor false positives: the share of distractor voxels (masses, nodes, cysts and fluid
  outside the organs, labelled background) labelled as any organ, pooled and per kind;
- absent organs: for each case and organ the reference lacks, the predicted volume in ml.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.labels import ORGANS

ROLES_FILE = "roles.json"
ABSENT_ORGAN_LIMIT_ML = 5.0


@dataclass
class Tally:
    hits: int = 0
    total: int = 0

    def add(self, hits: int, total: int) -> None:
        self.hits += int(hits)
        self.total += int(total)

    @property
    def share(self) -> float:
        return self.hits / self.total if self.total else float("nan")


@dataclass
class PathologyScores:
    lesion: dict[str, Tally] = field(default_factory=dict)      # kind -> labelled as its organ
    vessel: dict[str, Tally] = field(default_factory=dict)      # kind -> labelled as its organ
    distractor: dict[str, Tally] = field(default_factory=dict)  # kind -> labelled as any organ
    absent_ml: list[tuple[str, str, float]] = field(default_factory=list)  # (case, organ, predicted ml)

    def pooled(self, group: str) -> float:
        tallies = getattr(self, group).values()
        total = sum(t.total for t in tallies)
        return sum(t.hits for t in tallies) / total if total else float("nan")

    @property
    def absent_max_ml(self) -> float:
        return max((ml for _, _, ml in self.absent_ml), default=0.0)


def read_roles(structures_dir: Path) -> dict[str, dict]:
    path = Path(structures_dir) / ROLES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: --structures takes the structures/ folder that "
                                f"`python -m app synth --structures` writes")
    return json.loads(path.read_text())


def score_case_pathology(scores: PathologyScores, case: str, structures: np.ndarray, gt: np.ndarray,
                         pred: np.ndarray, roles: dict[str, dict], voxel_ml: float) -> None:
    """Add one case's lesions, vessels, distractors and absent organs to `scores`."""
    groups = {"lesion": scores.lesion, "vessel": scores.vessel, "distractor": scores.distractor}
    for kind, entry in roles.items():
        where = structures == entry["id"]
        total = int(where.sum())
        if not total:
            continue
        if entry["role"] == "distractor":
            hits = int((pred[where] > 0).sum())
        else:
            hits = int((pred[where] == entry["flare"]).sum())
        groups[entry["role"]].setdefault(kind, Tally()).add(hits, total)
    for organ in ORGANS:
        if not (gt == organ.label).any():
            scores.absent_ml.append((case, organ.name, float((pred == organ.label).sum()) * voxel_ml))


def format_pathology(scores: PathologyScores) -> str:
    lines = ["lesions (share of voxels labelled as their organ):"]
    lines += [f"  {kind:28s} {t.share:.3f}  ({t.total} voxels)" for kind, t in sorted(scores.lesion.items())]
    lines += ["organ vessels (share labelled as their organ):"]
    lines += [f"  {kind:28s} {t.share:.3f}  ({t.total} voxels)" for kind, t in sorted(scores.vessel.items())]
    lines += ["distractors (share labelled as any organ):"]
    lines += [f"  {kind:28s} {t.share:.3f}  ({t.total} voxels)" for kind, t in sorted(scores.distractor.items())]
    lines += ["organs the reference lacks (predicted ml):"]
    lines += [f"  {case}: {organ} {ml:.1f} ml{'  OVER ' + str(ABSENT_ORGAN_LIMIT_ML) if ml > ABSENT_ORGAN_LIMIT_ML else ''}"
              for case, organ, ml in scores.absent_ml] or ["  none"]
    lines.append(f"lesion_recall={scores.pooled('lesion'):.4f} vessel_recall={scores.pooled('vessel'):.4f} "
                 f"distractor_fp={scores.pooled('distractor'):.4f} absent_organ_max_ml={scores.absent_max_ml:.1f}")
    return "\n".join(lines)
