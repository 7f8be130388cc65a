"""Cases in, masks out: listing the input folder, reading CTs, and atomic mask writes.
DICOM series are listed and read by dicom_input.py, and DICOM-SEG written by dicom_seg.py."""
from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import SimpleITK as sitk

NIFTI_SUFFIX = re.compile(r"\.nii(\.gz)?$", re.IGNORECASE)
CHANNEL_SUFFIX = re.compile(r"_0000$")
PARTIAL_DIR = ".partial"  # hidden: organisers score only *.nii.gz files in the output folder itself


class CaseError(RuntimeError):
    """This one case cannot be processed; the message says why. Other cases go on."""


@dataclass(frozen=True)
class Case:
    name: str        # output name without extension, `_0000` removed
    path: Path       # the NIfTI file; for a DICOM series, the folder or .zip it came from
    series: Any = None  # dicom_input.DicomSeries for a DICOM series, None for a NIfTI file


@dataclass(frozen=True)
class Listing:
    cases: list[Case]
    skipped: list[tuple[Path, str]]  # (path, why) for things that are not cases
    failed: list[tuple[str, str]]    # (case name, error): two inputs that would write the same mask, ...


def case_name(path: Path) -> str:
    return CHANNEL_SUFFIX.sub("", NIFTI_SUFFIX.sub("", path.name))


def list_cases(input_dir: Path) -> Listing:
    """Every *.nii.gz / *.nii file is a case, sorted by name; anything else is skipped with a note
    (the runner first looks for DICOM series in folders, .zip and other files: dicom_input.py)."""
    cases: list[Case] = []
    skipped: list[tuple[Path, str]] = []
    by_name: dict[str, Case] = {}
    failed: list[tuple[str, str]] = []
    for path in sorted(input_dir.iterdir(), key=lambda p: p.name):
        if path.is_dir():
            skipped.append((path, "a folder with no DICOM files"))
        elif not NIFTI_SUFFIX.search(path.name):
            skipped.append((path, "not a NIfTI file (.nii or .nii.gz) nor DICOM"))
        else:
            case = Case(case_name(path), path)
            if case.name in by_name:
                failed.append((case.name, f"{path.name}: same case name {case.name!r} as {by_name[case.name].path.name}"))
                continue
            by_name[case.name] = case
            cases.append(case)
    return Listing(cases, skipped, failed)


def output_path(output_dir: Path, case: Case) -> Path:
    return output_dir / f"{case.name}.nii.gz"


def seg_output_path(output_dir: Path, case: Case) -> Path:
    return output_dir / f"{case.name}.seg.dcm"


@dataclass
class CaseImage:
    """A CT as read. `affine` is set only for a sheared NIfTI grid, which SimpleITK cannot hold:
    then `image` is its nearest orthonormal grid, and the mask is written with the affine."""
    image: sitk.Image
    affine: np.ndarray | None = None


def read_image(path: Path) -> CaseImage:
    from app.inference.nifti import InvalidNifti, check_header, read_sheared
    try:
        check_header(path)
        return CaseImage(sitk.ReadImage(str(path)))
    except InvalidNifti as err:
        raise CaseError(f"cannot read {path.name}: {err}") from None
    except RuntimeError as err:
        message = str(err)
        if "orthonormal" in message:
            try:
                return CaseImage(*read_sheared(path))
            except InvalidNifti as inner:
                raise CaseError(f"cannot read {path.name}: {inner}") from None
        last_line = message.strip().splitlines()[-1] if message.strip() else "unreadable"
        raise CaseError(f"cannot read {path.name}: not a readable NIfTI image ({last_line})") from None


def image_array(image: sitk.Image) -> np.ndarray:
    """Voxels in numpy (z, y, x) order, a view on the image's own buffer in its own pixel type:
    conversion to float32 waits until after cropping, to keep memory low on large volumes."""
    return sitk.GetArrayViewFromImage(image)


def spacing_zyx(image: sitk.Image) -> tuple[float, ...]:
    return tuple(float(s) for s in reversed(image.GetSpacing()))


def check_output_dir(output_dir: Path) -> None:
    """Create the folder, and prove it is writable before any work is done."""
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        probe = output_dir / f".write-test-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise PermissionError(f"output folder {output_dir} is not writable: {err.strerror or err}") from None


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """`write(tmp)` writes the whole file to a temporary name in the hidden .partial/ folder, then
    an atomic rename puts it at `path`: a run killed at any moment never leaves a partial output
    where it would be scored or read."""
    partial_dir = path.parent / PARTIAL_DIR
    partial_dir.mkdir(exist_ok=True)
    tmp = partial_dir / f"{uuid.uuid4().hex}-{path.name}"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_mask(mask: np.ndarray, reference: CaseImage, path: Path) -> None:
    """Write a uint8 mask on the reference's grid, atomically."""
    def write(tmp: Path) -> None:
        if reference.affine is not None:
            from app.inference.nifti import write_with_affine
            write_with_affine(mask, reference.affine, tmp)
        else:
            image = sitk.GetImageFromArray(mask.astype(np.uint8, copy=False))
            image.CopyInformation(reference.image)
            sitk.WriteImage(image, str(tmp), True)
    write_atomically(path, write)


def remove_stale_partials(output_dir: Path, older_than_s: float = 3600.0) -> None:
    """Temporary files left by a killed earlier run. Only old ones: shards running side by side
    share the folder, and a fresh file may be another worker's write in progress."""
    import time
    partial_dir = output_dir / PARTIAL_DIR
    if not partial_dir.is_dir():
        return
    cutoff = time.time() - older_than_s
    for leftover in partial_dir.iterdir():
        try:
            if leftover.stat().st_mtime < cutoff:
                leftover.unlink()
        except OSError:
            pass  # gone already, or not ours to remove
