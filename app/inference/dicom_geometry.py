"""One DICOM CT series as a volume on a regular grid, or one clear error for that series.

The slices are ordered by their position along the slice normal (from Image Orientation and
Image Position (Patient)), and the stack is checked before its geometry is trusted:

- regular (one orientation, one step along the normal, no in-plane shift): read as it is; every
  voxel is a source pixel, so the DICOM-SEG's frames are the source slices;
- uneven slice spacing, and a tilted gantry (slices shifted in their plane along the stack):
  resampled onto a regular grid along the normal (linear between neighbouring slices), so the
  volume is where the patient was;
- mixed orientations, two slices at one position, missing slices (a gap of a whole number of
  steps) and irregular in-plane shifts: rejected, since no single grid holds them truthfully.

The pixels are read by SimpleITK's series reader (GDCM: every transfer syntax it knows, the
rescale slope and intercept); the geometry is set here from the headers, not taken from ITK,
which assumes a regular, untilted stack.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from app.inference.io import CaseError

ORIENTATION_TOLERANCE = 1e-3   # direction cosines that differ by less are one orientation
POSITION_TOLERANCE = 0.1       # largest drift from a regular stack, as a fraction of the step
MISSING_SHARE = 0.25           # a whole-step gap in fewer than this share of the steps is a missing slice


@dataclass(frozen=True)
class Stack:
    """The sorted slices of one series and how they lie."""
    files: tuple[Path, ...]      # sorted along the normal
    headers: tuple               # pydicom headers, same order
    row: np.ndarray              # direction along a row (increasing column index), LPS
    column: np.ndarray           # direction down a column (increasing row index), LPS
    normal: np.ndarray
    heights: np.ndarray          # position of each slice along the normal, ascending, mm
    shifts: np.ndarray           # (n, 2) in-plane shift of each slice from the first, along row and column, mm
    spacing: tuple[float, float]  # (along row, along column), mm


@dataclass
class DicomVolume:
    image: sitk.Image            # the CT on its regular grid
    stack: Stack
    resampled: str | None        # why the grid is not the source slices' own, None when it is


def read_series(files: tuple[Path, ...], label: str) -> DicomVolume:
    stack = sort_stack(files, label)
    pixels = _read_pixels(stack, label)
    why = resampling_reason(stack, label)
    if why is None:
        image = sitk.GetImageFromArray(pixels)
        image.SetOrigin(_floats(stack.headers[0].ImagePositionPatient))
        image.SetSpacing((*stack.spacing, float(_regular_step(stack.heights))))
        image.SetDirection(_floats(np.column_stack([stack.row, stack.column, stack.normal]).flatten()))
        return DicomVolume(image, stack, None)
    return DicomVolume(restack(pixels, stack), stack, why)


def sort_stack(files: tuple[Path, ...], label: str) -> Stack:
    import pydicom
    headers = [pydicom.dcmread(path, stop_before_pixels=True) for path in files]
    for header in headers:
        if int(header.get("NumberOfFrames", 1) or 1) > 1:
            raise CaseError(f"{label}: a multi-frame (enhanced) CT image; export the series as one image per slice")
        for tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
            if header.get(tag) is None:
                raise CaseError(f"{label}: {Path(header.filename).name} has no {tag}; its place in space is unknown")
    orientations = np.array([_floats(h.ImageOrientationPatient) for h in headers])
    if np.abs(orientations - orientations[0]).max() > ORIENTATION_TOLERANCE:
        kinds = len({tuple(np.round(o, 3)) for o in orientations})
        raise CaseError(f"{label}: mixed orientations ({kinds} different Image Orientation (Patient) values "
                        "in one series); export each orientation as its own series")
    row, column = orientations[0][:3], orientations[0][3:]
    normal = np.cross(row, column)
    positions = np.array([_floats(h.ImagePositionPatient) for h in headers])
    heights = positions @ normal
    order = np.argsort(heights, kind="stable")
    positions, heights = positions[order], heights[order]
    offsets = positions - positions[0]
    shifts = np.column_stack([offsets @ row, offsets @ column])
    spacings = {tuple(round(float(v), 4) for v in h.PixelSpacing) for h in headers}
    sizes = {(int(h.Rows), int(h.Columns)) for h in headers}
    if len(spacings) > 1 or len(sizes) > 1:
        raise CaseError(f"{label}: slices of different sizes or pixel spacings ({sorted(sizes)}, {sorted(spacings)})")
    row_spacing, column_spacing = next(iter(spacings))  # DICOM: between rows, then between columns
    return Stack(tuple(files[i] for i in order), tuple(headers[i] for i in order), row, column, normal,
                 heights, shifts, (column_spacing, row_spacing))


def resampling_reason(stack: Stack, label: str) -> str | None:
    """None for a regular stack; why it is resampled; or a CaseError for what is rejected."""
    steps = np.diff(stack.heights)
    if np.any(steps < 1e-3):
        where = stack.heights[1:][steps < 1e-3][0]
        raise CaseError(f"{label}: two slices at one position ({where:.2f} mm along the normal); "
                        "several phases or acquisitions in one series cannot be stacked")
    reasons = []
    step = float(np.median(steps))
    if not _is_regular(stack.heights):
        _reject_missing_slices(steps, step, stack.heights, label)
        reasons.append(f"uneven slice spacing ({steps.min():.2f} to {steps.max():.2f} mm)")
    shift = np.linalg.norm(stack.shifts, axis=1)
    if shift.max() > POSITION_TOLERANCE * min(stack.spacing):
        slope = np.linalg.lstsq((stack.heights - stack.heights[0])[:, None], stack.shifts, rcond=None)[0]
        residual = np.abs(stack.shifts - (stack.heights - stack.heights[0])[:, None] * slope).max()
        if residual > POSITION_TOLERANCE * min(stack.spacing) * 5:
            raise CaseError(f"{label}: the slices shift in their plane irregularly (by up to {shift.max():.1f} mm, "
                            f"{residual:.1f} mm off a straight line); not a tilted gantry, cannot be stacked")
        tilt = np.degrees(np.arctan(np.linalg.norm(slope)))
        reasons.append(f"tilted gantry ({tilt:.1f} degrees)")
    return ", ".join(reasons) or None


def _is_regular(heights: np.ndarray) -> bool:
    n = len(heights)
    step = (heights[-1] - heights[0]) / (n - 1)
    drift = np.abs(heights - (heights[0] + step * np.arange(n))).max()
    return drift <= POSITION_TOLERANCE * step


def _regular_step(heights: np.ndarray) -> float:
    return (heights[-1] - heights[0]) / (len(heights) - 1)


def _reject_missing_slices(steps: np.ndarray, step: float, heights: np.ndarray, label: str) -> None:
    """Gaps of 2, 3, ... steps where every other step is regular: slices are missing (a transfer
    that stopped short, a deleted file). Filling them in would invent anatomy."""
    ratios = steps / step
    regular = np.abs(ratios - 1) <= POSITION_TOLERANCE
    gaps = ~regular
    whole = np.all(np.abs(ratios[gaps] - np.round(ratios[gaps])) <= POSITION_TOLERANCE) and np.all(ratios[gaps] > 1.5)
    if gaps.any() and whole and gaps.mean() < MISSING_SHARE:
        first = int(np.flatnonzero(gaps)[0])
        missing = int(np.round(ratios[gaps]).sum() - gaps.sum())
        raise CaseError(f"{label}: {missing} missing slice(s) (first gap {steps[first]:.2f} mm after "
                        f"{heights[first]:.2f} mm along the normal, step {step:.2f} mm); the series is incomplete")


def restack(pixels: np.ndarray, stack: Stack) -> sitk.Image:
    """The stack on a regular grid: axes along the rows, the columns and the normal, the median
    step along the normal, and an in-plane extent that holds every slice. Each output slice is
    interpolated between the two source slices around its height, at their shifted position;
    voxels that no slice covers are air (the series' lowest value)."""
    from scipy import ndimage
    heights, shifts = stack.heights, stack.shifts
    count = int(round((heights[-1] - heights[0]) / float(np.median(np.diff(heights))))) + 1
    targets = np.linspace(heights[0], heights[-1], count)
    spacing = np.array(stack.spacing)
    low = np.floor(shifts.min(axis=0) / spacing)            # in pixels, along row and column
    extent = np.ceil(shifts.max(axis=0) / spacing) - low
    rows, columns = pixels.shape[1] + int(extent[1]), pixels.shape[2] + int(extent[0])
    fill = float(pixels.min())
    out = np.empty((count, rows, columns), np.float32)
    for k, height in enumerate(targets):
        j = int(np.clip(np.searchsorted(heights, height, side="right") - 1, 0, len(heights) - 2))
        t = float(np.clip((height - heights[j]) / (heights[j + 1] - heights[j]), 0.0, 1.0))
        blended = (1 - t) * pixels[j].astype(np.float32) + t * pixels[j + 1].astype(np.float32)
        shift = ((1 - t) * shifts[j] + t * shifts[j + 1]) / spacing   # where this height's slice lies, pixels
        offset = (low[1] - shift[1], low[0] - shift[0])              # output (row, column) -> source
        out[k] = ndimage.affine_transform(blended, np.ones(2), offset=offset, output_shape=(rows, columns),
                                          order=1, cval=fill)
    image = sitk.GetImageFromArray(out)
    origin = _floats(stack.headers[0].ImagePositionPatient)
    corner = np.array(origin) + low[0] * spacing[0] * stack.row + low[1] * spacing[1] * stack.column
    image.SetOrigin(_floats(corner + (targets[0] - heights[0]) * stack.normal))
    image.SetSpacing((*stack.spacing, float(targets[1] - targets[0])))
    image.SetDirection(_floats(np.column_stack([stack.row, stack.column, stack.normal]).flatten()))
    return image


def _read_pixels(stack: Stack, label: str) -> np.ndarray:
    """(slices, rows, columns) in the stack's order, rescaled to Hounsfield units by GDCM."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(path) for path in stack.files])
    warnings = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # ITK's own spacing warnings: checked above instead
    try:
        image = reader.Execute()
    except RuntimeError as err:
        last = str(err).strip().splitlines()[-1] if str(err).strip() else "unreadable"
        raise CaseError(f"{label}: cannot read the pixel data ({last})") from None
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(warnings)
    pixels = sitk.GetArrayFromImage(image)
    if pixels.shape[0] != len(stack.files) or image.GetNumberOfComponentsPerPixel() != 1:
        raise CaseError(f"{label}: read {pixels.shape} from {len(stack.files)} files; one grey slice per file expected")
    return pixels


def _floats(values) -> tuple[float, ...]:
    return tuple(float(v) for v in values)
