"""DICOM CT series made from the bundled real CT with pydicom, for the DICOM input and DICOM-SEG
tests: each slice is the CT sampled (SimpleITK, linear) on that slice's own plane, so a series
of any geometry (regular, oblique, tilted gantry, uneven spacing) shows the patient where its
headers say, and the NIfTI CT is the oracle."""
from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from conftest import REAL_CT

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


@dataclass
class Geometry:
    """Where a series' slices lie: first slice corner, in-plane axes, pixel spacing (along a row,
    along a column), size (columns, rows) and one position per slice."""
    orientation: tuple[float, ...]
    spacing: tuple[float, float]
    size: tuple[int, int]
    positions: list[np.ndarray] = field(default_factory=list)

    @property
    def row(self) -> np.ndarray:
        return np.array(self.orientation[:3])

    @property
    def column(self) -> np.ndarray:
        return np.array(self.orientation[3:])

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row, self.column)


def ct_image() -> sitk.Image:
    return sitk.ReadImage(str(REAL_CT))


def slab(orientation=AXIAL, heights=None, tilt_degrees: float = 0.0, pixel: float = 3.0) -> Geometry:
    """Slices of `pixel` mm pixels covering the real CT's bounding box in the given orientation;
    `heights` in mm along the normal from the first slice (default: `pixel` mm apart; an axial slab
    of 3 mm is the CT's own 112 slices, voxel for voxel). A tilted gantry shifts each slice along
    the column direction by tan(tilt) times its height; the slices grow to keep the CT in view."""
    ct = ct_image()
    corners = np.array([ct.TransformIndexToPhysicalPoint([int(i * (s - 1)) for i, s in zip(index, ct.GetSize())])
                        for index in np.ndindex(2, 2, 2)])
    geometry = Geometry(orientation, (pixel, pixel), (0, 0))
    axes = np.column_stack([geometry.row, geometry.column, geometry.normal])
    local = corners @ axes
    low, extent = local.min(axis=0), np.ptp(local, axis=0)
    heights = np.arange(int(round(extent[2] / pixel)) + 1) * pixel if heights is None else np.asarray(heights, float)
    shift = np.tan(np.radians(tilt_degrees))
    drift = shift * heights[-1]                       # the last slice's shift along the column direction
    low[1] -= drift
    geometry.size = (int(round(extent[0] / pixel)) + 1, int(round((extent[1] + abs(drift)) / pixel)) + 1)
    geometry.positions = [axes @ low + h * geometry.normal + h * shift * geometry.column for h in heights]
    return geometry


def sample_slices(geometry: Geometry, ct: sitk.Image | None = None) -> list[np.ndarray]:
    """Hounsfield units of the CT on each slice's plane (air outside the CT)."""
    ct = ct or ct_image()
    direction = np.column_stack([geometry.row, geometry.column, geometry.normal]).flatten()
    slices = []
    for position in geometry.positions:
        reference = sitk.Image(geometry.size[0], geometry.size[1], 1, sitk.sitkFloat32)
        reference.SetOrigin(tuple(float(v) for v in position))
        reference.SetSpacing((*geometry.spacing, 1.0))
        reference.SetDirection(tuple(float(v) for v in direction))
        sampled = sitk.Resample(ct, reference, sitk.Transform(), sitk.sitkLinear, -1024.0, sitk.sitkFloat32)
        slices.append(np.rint(sitk.GetArrayFromImage(sampled)[0]).astype(np.int32))
    return slices


@dataclass
class Study:
    patient_id: str = "FLARE-0001"
    study_uid: str = field(default_factory=generate_uid)
    frame_uid: str = field(default_factory=generate_uid)
    study_date: str = "20240131"


def write_series(folder: Path, geometry: Geometry, slices: list[np.ndarray], study: Study, number: int,
                 description: str, modality: str = "CT", image_type=("ORIGINAL", "PRIMARY", "AXIAL"),
                 orientations=None) -> list[Path]:
    """One file per slice, CT Image Storage, stored as unsigned values with a -2048 intercept."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid()
    paths = []
    for k, (position, pixels) in enumerate(zip(geometry.positions, slices)):
        orientation = geometry.orientation if orientations is None else orientations[k]
        ds = _slice_dataset(study, series_uid, number, description, modality, image_type, k)
        ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in orientation]
        ds.PixelSpacing = [f"{geometry.spacing[1]:.6f}", f"{geometry.spacing[0]:.6f}"]
        ds.SliceThickness = "3"
        ds.Rows, ds.Columns = pixels.shape
        ds.PixelData = np.clip(pixels + 2048, 0, 65535).astype(np.uint16).tobytes()
        path = folder / f"{number:03d}_{k:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _slice_dataset(study: Study, series_uid: str, number: int, description: str, modality: str,
                   image_type, k: int) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Flare", study.patient_id, "19600101", "O"
    ds.StudyInstanceUID, ds.StudyDate, ds.StudyTime, ds.StudyID = study.study_uid, study.study_date, "101500", "1"
    ds.AccessionNumber, ds.ReferringPhysicianName, ds.StudyDescription = "A1", "", "Abdomen"
    ds.SeriesInstanceUID, ds.SeriesNumber, ds.SeriesDescription = series_uid, number, description
    ds.Modality, ds.Manufacturer, ds.FrameOfReferenceUID = modality, "Test", study.frame_uid
    ds.PositionReferenceIndicator, ds.ImageType, ds.InstanceNumber = "", list(image_type), k + 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-2048", "1", "HU"
    ds.KVP, ds.AcquisitionNumber = "120", 1
    return ds


def zip_folder(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as handle:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                handle.write(path, path.relative_to(folder.parent))
    return archive


def read_headers(paths) -> list[Dataset]:
    return [pydicom.dcmread(path, stop_before_pixels=True) for path in paths]


@dataclass
class SegFrames:
    """A DICOM-SEG read back frame by frame with pydicom."""
    positions: np.ndarray        # (frames, 3) Image Position (Patient)
    segments: np.ndarray         # (frames,) segment number
    sources: list[str]           # the SOP Instance UID each frame was derived from ("" if none)
    voxels: dict[int, int]       # segment number -> pixels set over all frames


def seg_against_nifti(seg_path: Path, nifti_path: Path) -> SegFrames:
    """Assert that every frame of the SEG is, pixel for pixel in patient coordinates, its segment
    of the NIfTI mask, and that no NIfTI voxel of a label is missing from the SEG's frames."""
    import nibabel as nib
    seg = pydicom.dcmread(seg_path)
    frames = seg.pixel_array.reshape(int(seg.NumberOfFrames), seg.Rows, seg.Columns)
    shared = seg.SharedFunctionalGroupsSequence[0]
    orientation = np.array(shared.PlaneOrientationSequence[0].ImageOrientationPatient, float)
    between_rows, between_columns = (float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing)
    nifti = nib.load(str(nifti_path))
    labels = np.asanyarray(nifti.dataobj)
    to_voxel = np.linalg.inv(nifti.affine)
    rows, columns = np.meshgrid(np.arange(seg.Rows), np.arange(seg.Columns), indexing="ij")
    offsets = (columns[..., None] * between_columns * orientation[:3] + rows[..., None] * between_rows * orientation[3:])
    positions, segments, sources, voxels = [], [], [], {}
    for frame, item in zip(frames, seg.PerFrameFunctionalGroupsSequence):
        position = np.array(item.PlanePositionSequence[0].ImagePositionPatient, float)
        number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        ras = (position + offsets) * np.array([-1.0, -1.0, 1.0])
        index = ras @ to_voxel[:3, :3].T + to_voxel[:3, 3]
        assert np.abs(index - np.rint(index)).max() < 1e-3, "SEG pixels are not on the NIfTI's voxel centres"
        i, j, k = np.rint(index).astype(int).transpose(2, 0, 1)
        assert (i >= 0).all() and (j >= 0).all() and (k >= 0).all()
        expected = labels[i, j, k] == number
        assert np.array_equal(frame.astype(bool), expected), f"frame at {position} segment {number} differs"
        positions.append(position)
        segments.append(number)
        derivation = item.get("DerivationImageSequence") or []
        sources.append(str(derivation[0].SourceImageSequence[0].ReferencedSOPInstanceUID) if derivation else "")
        voxels[number] = voxels.get(number, 0) + int(frame.sum())
    for number in (1, 2, 3, 4):
        count = voxels.get(number, 0)
        assert count == int((labels == number).sum()), f"segment {number}: {count} SEG pixels, NIfTI has more"
    return SegFrames(np.array(positions), np.array(segments), sources, voxels)
