"""Score a folder of predicted masks against a folder of ground-truth masks, case by case.

Follows the organisers' evaluation: files are read with nibabel, arrays compared voxel by voxel,
the spacing taken from the ground-truth header, every label of app.labels scored separately.
Unlike the organisers' script, a prediction on a different voxel grid is refused (it would be
scored against the wrong anatomy) and a missing prediction scores 0 instead of crashing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from app.evaluation.surface import dice, normalized_surface_dice
from app.labels import ORGANS

if TYPE_CHECKING:
    from app.evaluation.pathology import PathologyScores

NIFTI_SUFFIX = ".nii.gz"
NSD_TOLERANCE_MM = 1.0
# Grids must agree to well below a voxel; float32 headers written by different tools differ
# by ~1e-5 mm, a real mismatch (flip, crop, resample) by a voxel or more.
AFFINE_TOLERANCE_MM = 1e-3


class GeometryMismatchError(ValueError):
    """A prediction does not lie on its ground truth's voxel grid."""


@dataclass
class CaseScore:
    name: str  # the file name, as in the organisers' CSV
    dsc: dict[int, float] = field(default_factory=dict)
    nsd: dict[int, float] = field(default_factory=dict)
    missing: bool = False  # no prediction for this ground-truth case: scores are 0
    # per label: (predicted ml, reference ml); empty for a missing prediction
    volume_ml: dict[int, tuple[float, float]] = field(default_factory=dict)


@dataclass
class FolderScores:
    cases: list[CaseScore]
    missing: list[str]  # ground-truth cases without a prediction
    unmatched: list[str]  # predictions without a ground truth (ignored)
    pathology: "PathologyScores | None" = None  # with structure maps: lesions, distractors, absent organs


def score_masks(gt: np.ndarray, pred: np.ndarray, spacing) -> tuple[dict, dict]:
    """Per-label DSC and NSD at 1 mm of two label arrays on the same grid."""
    dsc, nsd = {}, {}
    for organ in ORGANS:
        gt_organ, pred_organ = gt == organ.label, pred == organ.label
        dsc[organ.label] = dice(gt_organ, pred_organ)
        nsd[organ.label] = normalized_surface_dice(gt_organ, pred_organ, spacing, NSD_TOLERANCE_MM)
    return dsc, nsd


def _load(path: Path):
    import nibabel  # lazily: `python -m app` must not pay for it in other commands

    try:
        image = nibabel.load(str(path))
        return image, np.asanyarray(image.dataobj)
    except Exception as error:
        raise ValueError(f"cannot read {path}: {error}") from error


def _describe_grid(image) -> str:
    zooms = tuple(round(float(z), 4) for z in image.header.get_zooms()[:3])
    origin = tuple(round(float(v), 3) for v in image.affine[:3, 3])
    return f"shape {tuple(image.shape)}, spacing {zooms}, origin {origin}"


def check_same_geometry(gt_path: Path, gt_image, pred_path: Path, pred_image) -> None:
    same_shape = tuple(gt_image.shape) == tuple(pred_image.shape)
    if same_shape and np.allclose(gt_image.affine, pred_image.affine, rtol=0,
                                  atol=AFFINE_TOLERANCE_MM):
        return
    what = "shape" if not same_shape else "voxel-to-world affine"
    raise GeometryMismatchError(
        f"geometry mismatch ({what} differs): prediction {pred_path} has "
        f"{_describe_grid(pred_image)}; ground truth {gt_path} has {_describe_grid(gt_image)}. "
        f"The mask must lie on exactly the input image's voxel grid.\n"
        f"  prediction affine:\n{np.array2string(pred_image.affine, precision=4)}\n"
        f"  ground-truth affine:\n{np.array2string(gt_image.affine, precision=4)}")


def score_case(gt_path: Path, pred_path: Path, on_arrays=None) -> CaseScore:
    """DSC and NSD of one case; `on_arrays(gt, pred, spacing)` sees the arrays once loaded."""
    gt_image, gt = _load(gt_path)
    pred_image, pred = _load(pred_path)
    check_same_geometry(gt_path, gt_image, pred_path, pred_image)
    spacing = tuple(float(z) for z in gt_image.header.get_zooms()[:3])
    dsc, nsd = score_masks(gt, pred, spacing)
    if on_arrays is not None:
        on_arrays(gt, pred, spacing)
    return CaseScore(gt_path.name, dsc, nsd, volume_ml=mask_volumes_ml(gt, pred, spacing))


def mask_volumes_ml(gt: np.ndarray, pred: np.ndarray, spacing) -> dict[int, tuple[float, float]]:
    """Per label: (predicted ml, reference ml). Their ratio says whether masks are trimmed or swollen,
    which DSC alone does not."""
    voxel_ml = float(np.prod(spacing)) / 1000.0
    return {organ.label: (float(np.count_nonzero(pred == organ.label)) * voxel_ml,
                          float(np.count_nonzero(gt == organ.label)) * voxel_ml) for organ in ORGANS}


def _pathology_scorer(structures_dir: Path, name: str, scores, roles):
    """`on_arrays` for score_case: lesion recall, distractors and absent organs of one case."""
    from app.evaluation.pathology import score_case_pathology

    def on_arrays(gt, pred, spacing):
        path = structures_dir / name
        image, structures = _load(path)
        if tuple(image.shape) != tuple(gt.shape):
            raise GeometryMismatchError(f"structure map {path} has shape {tuple(image.shape)}, "
                                        f"the ground truth {tuple(gt.shape)}")
        voxel_ml = float(np.prod(spacing)) / 1000.0
        score_case_pathology(scores, name[:-len(NIFTI_SUFFIX)], structures, gt, pred, roles, voxel_ml)
    return on_arrays


def _nifti_names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.is_file() and p.name.endswith(NIFTI_SUFFIX)}


def score_folder(pred_dir: Path, gt_dir: Path, progress=None, structures_dir: Path | None = None) -> FolderScores:
    """Score every `<name>.nii.gz` of gt_dir against the same name in pred_dir; with
    `structures_dir` (phantoms' full label maps) also lesions, distractors and absent organs."""
    for label, folder in (("prediction", pred_dir), ("ground-truth", gt_dir)):
        if not folder.is_dir():
            raise FileNotFoundError(f"{label} folder not found: {folder}")
    gt_names = sorted(_nifti_names(gt_dir))
    if not gt_names:
        raise FileNotFoundError(f"no {NIFTI_SUFFIX} ground-truth files in {gt_dir}")
    pred_names = _nifti_names(pred_dir)
    pathology, roles = None, None
    if structures_dir is not None:
        from app.evaluation.pathology import PathologyScores, read_roles
        pathology, roles = PathologyScores(), read_roles(structures_dir)
    cases, missing = [], []
    for name in gt_names:
        if name not in pred_names:
            missing.append(name)
            zeros = {organ.label: 0.0 for organ in ORGANS}
            cases.append(CaseScore(name, dict(zeros), dict(zeros), missing=True))
        else:
            hook = None if pathology is None else _pathology_scorer(Path(structures_dir), name, pathology, roles)
            cases.append(score_case(gt_dir / name, pred_dir / name, hook))
        if progress is not None:
            progress(cases[-1])
    unmatched = sorted(pred_names - set(gt_names))
    return FolderScores(cases, missing, unmatched, pathology)
