"""The one registry of output classes: FLARE21 label values, names, preview colours and the
SNOMED CT concept each is coded with in DICOM-SEG (a name in pydicom's codes.SCT dictionary)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Organ:
    label: int
    name: str
    rgb: tuple[int, int, int]
    snomed: str      # pydicom.sr.codedict.codes.SCT.<snomed>, e.g. Liver is SCT 10200004
    count: int = 1   # how many a patient has: one label covers both kidneys


ORGANS: tuple[Organ, ...] = (
    Organ(1, "liver", (220, 80, 60), "Liver"),
    Organ(2, "kidney", (250, 200, 40), "Kidney", count=2),
    Organ(3, "spleen", (60, 120, 230), "Spleen"),
    Organ(4, "pancreas", (80, 200, 110), "Pancreas"),
)
LABELS: dict[int, str] = {organ.label: organ.name for organ in ORGANS}
PAIRED: dict[int, int] = {organ.label: organ.count for organ in ORGANS if organ.count > 1}
NUM_CLASSES = len(ORGANS) + 1  # background included
