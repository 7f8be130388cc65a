"""DICOM-SEG out, with highdicom: one segment per organ of app/labels.py, coded in SNOMED CT,
referencing the source series, written atomically like the NIfTI masks.

The mask is handed to highdicom as a Volume on the case's grid (patient coordinates, LPS). For a
regular series that grid is the source slices' own, and highdicom references each frame's source
CT image; for a resampled series (uneven spacing, tilted gantry) each frame carries its own
position and the SEG references the source series as a whole.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from app import __version__
from app.inference.io import write_atomically
from app.labels import ORGANS

ALGORITHM_NAME = "FLARE21 nnU-Net v1 organs"
MANUFACTURER = "FLARE21 organ segmentation"
SERIES_NUMBER_OFFSET = 1000     # the SEG's series number: the source's plus this
MAX_LO = 64                     # a DICOM LO value's length


@dataclass(frozen=True)
class SegInfo:
    """What the SEG says about how it was made."""
    mode: str                   # accurate | fast
    folds: tuple[int, ...]
    demo_weights: bool          # the bundled demo weights (synthetic phantoms), not for clinical use
    weights_id: str = ""        # the weights' source model, as MANIFEST.json names it

    def series_description(self) -> str:
        text = f"Organs ({self.mode})" + (", demo weights" if self.demo_weights else "")
        return text[:MAX_LO]


def segment_descriptions(info: SegInfo) -> list:
    import highdicom as hd
    from pydicom.sr.codedict import codes
    algorithm = hd.AlgorithmIdentificationSequence(
        name=ALGORITHM_NAME, family=codes.cid7162.ArtificialIntelligence, version=__version__,
        source=info.weights_id[:MAX_LO] or None,
        parameters={"mode": info.mode, "folds": " ".join(map(str, info.folds)),
                    "weights": "demo weights" if info.demo_weights else "trained weights"})
    return [hd.seg.SegmentDescription(
        segment_number=organ.label, segment_label=organ.name,
        segmented_property_category=codes.cid7150.AnatomicalStructure,
        segmented_property_type=getattr(codes.SCT, organ.snomed),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm,
        display_color=hd.color.CIELabColor.from_rgb(*organ.rgb)) for organ in ORGANS]


def build_seg(mask: np.ndarray, grid: sitk.Image, sources: list, info: SegInfo):
    """The Segmentation dataset of `mask` ((z, y, x) labels on `grid`) for the source CT headers."""
    import highdicom as hd
    first = sources[0]
    volume = hd.Volume(np.ascontiguousarray(mask, dtype=np.uint8), slice_affine(grid), "PATIENT",
                       frame_of_reference_uid=first.FrameOfReferenceUID)
    return hd.seg.Segmentation(
        source_images=sources, pixel_array=volume, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segment_descriptions(info),
        series_instance_uid=hd.UID(), series_number=_series_number(first), sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer=MANUFACTURER, manufacturer_model_name=ALGORITHM_NAME,
        software_versions=__version__, device_serial_number="none",
        series_description=info.series_description(), content_label="ORGANS",
        content_description=("Automatic organ segmentation" + (", demo weights" if info.demo_weights else ""))[:MAX_LO])


def slice_affine(grid: sitk.Image) -> np.ndarray:
    """The 4 x 4 map from (slice, row, column) indices, numpy's (z, y, x) order, to patient (LPS)
    millimetres: frames are the grid's slices, as in the source series."""
    direction = np.array(grid.GetDirection()).reshape(3, 3) * np.array(grid.GetSpacing())
    affine = np.eye(4)
    affine[:3, :3] = direction[:, ::-1]
    affine[:3, 3] = grid.GetOrigin()
    return affine


def write_seg(mask: np.ndarray, grid: sitk.Image, sources: list, info: SegInfo, path: Path) -> None:
    seg = build_seg(mask, grid, sources, info)
    write_atomically(path, lambda tmp: seg.save_as(tmp, enforce_file_format=True))


def _series_number(source) -> int:
    try:
        return int(source.get("SeriesNumber") or 0) + SERIES_NUMBER_OFFSET
    except (TypeError, ValueError):
        return SERIES_NUMBER_OFFSET
