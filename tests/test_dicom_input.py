"""DICOM input without the network: finding and naming series, skipping what is not a CT volume,
and each awkward geometry giving either the CT where the patient was (the NIfTI CT is the
oracle, sampled in patient coordinates) or one clear error."""
from __future__ import annotations

import shutil
import zipfile

import numpy as np
import pytest
import SimpleITK as sitk

from app.inference.dicom_geometry import read_series
from app.inference.dicom_input import find_series
from app.inference.io import CaseError
from dicom_helpers import Study, ct_image, slab, sample_slices, write_series, zip_folder



def _rotation(z_degrees: float, x_degrees: float) -> np.ndarray:
    z, x = np.radians(z_degrees), np.radians(x_degrees)
    about_z = np.array([[np.cos(z), -np.sin(z), 0], [np.sin(z), np.cos(z), 0], [0, 0, 1]])
    about_x = np.array([[1, 0, 0], [0, np.cos(x), -np.sin(x)], [0, np.sin(x), np.cos(x)]])
    return about_z @ about_x


OBLIQUE = tuple(float(v) for v in np.concatenate([_rotation(20, 25)[:, 0], _rotation(20, 25)[:, 1]]))


def _series(folder, geometry, number=3, description="Abdomen", study=None, **options):
    return write_series(folder, geometry, sample_slices(geometry), study or Study(), number, description, **options)


def _read(paths, label="series"):
    return read_series(tuple(paths), label)


def _difference_to_ct(image: sitk.Image) -> np.ndarray:
    """|volume - CT| in HU at every voxel of the volume's grid that lies inside the CT."""
    ct = ct_image()
    oracle = sitk.GetArrayFromImage(sitk.Resample(ct, image, sitk.Transform(), sitk.sitkLinear, np.nan, sitk.sitkFloat32))
    inside = np.isfinite(oracle)
    assert inside.mean() > 0.3, "the volume's grid misses most of the CT"
    return np.abs(sitk.GetArrayFromImage(image).astype(np.float32)[inside] - oracle[inside])


def test_regular_series_is_the_ct_voxel_for_voxel(tmp_path):
    volume = _read(_series(tmp_path / "s", slab()))
    assert volume.resampled is None
    assert volume.image.GetSize() == ct_image().GetSize() and volume.image.GetSpacing() == (3.0, 3.0, 3.0)
    assert _difference_to_ct(volume.image).max() <= 0.5
    assert [h.ImagePositionPatient[2] for h in volume.stack.headers] == sorted(h.ImagePositionPatient[2] for h in volume.stack.headers)


def test_oblique_series_is_read_on_its_own_planes(tmp_path):
    geometry = slab(OBLIQUE, pixel=6.0)
    paths = _series(tmp_path / "s", geometry)
    volume = _read(paths[::-1])  # file order does not matter
    assert volume.resampled is None
    direction = np.array(volume.image.GetDirection()).reshape(3, 3)
    assert np.allclose(direction[:, 0], geometry.row, atol=1e-6) and np.allclose(direction[:, 1], geometry.column, atol=1e-6)
    assert np.allclose(volume.image.GetOrigin(), geometry.positions[0], atol=1e-4)
    difference = _difference_to_ct(volume.image)  # voxels at the CT's very edge may fall either side of it
    assert np.quantile(difference, 0.999) <= 0.5 and difference.mean() < 0.3


def test_tilted_gantry_is_resampled_where_the_patient_was(tmp_path):
    paths = _series(tmp_path / "s", slab(tilt_degrees=15, pixel=6.0))
    volume = _read(paths)
    assert volume.resampled == "tilted gantry (15.0 degrees)"
    direction = np.array(volume.image.GetDirection()).reshape(3, 3)
    assert np.allclose(direction, np.eye(3), atol=1e-6), "the grid is square to the slices"
    error = _difference_to_ct(volume.image)
    # ITK's own reading puts every slice at the first one's in-plane place: far off the CT
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(p) for p in volume.stack.files])
    naive = _difference_to_ct(reader.Execute())
    assert np.median(error) < 15 and np.mean(error) < 40, (np.median(error), np.mean(error))
    assert np.mean(naive) > 3 * np.mean(error), (np.mean(naive), np.mean(error))


def test_uneven_spacing_is_resampled_to_a_regular_step(tmp_path):
    heights = np.concatenate([np.arange(0, 150, 6.0), 144 + np.arange(1, 20) * 9.0])
    volume = _read(_series(tmp_path / "s", slab(heights=heights, pixel=6.0)))
    assert volume.resampled.startswith("uneven slice spacing (6.00 to 9.00 mm)")
    spacing = volume.image.GetSpacing()
    assert spacing[2] == pytest.approx((heights[-1] - heights[0]) / (volume.image.GetSize()[2] - 1))
    assert np.allclose(volume.image.GetOrigin(), slab(heights=heights, pixel=6.0).positions[0], atol=1e-4)
    error = _difference_to_ct(volume.image)
    assert np.median(error) < 15 and np.mean(error) < 40, (np.median(error), np.mean(error))


def test_a_missing_slice_is_one_clear_error(tmp_path):
    paths = _series(tmp_path / "s", slab(pixel=6.0))
    paths[20].unlink()
    with pytest.raises(CaseError, match=r"1 missing slice\(s\) .*step 6.00 mm.*incomplete"):
        _read(paths[:20] + paths[21:], "series 3 'Abdomen'")


def test_mixed_orientations_are_one_clear_error(tmp_path):
    geometry = slab(pixel=6.0)
    orientations = [OBLIQUE if k % 7 == 3 else geometry.orientation for k in range(len(geometry.positions))]
    paths = _series(tmp_path / "s", geometry, orientations=orientations)
    with pytest.raises(CaseError, match="mixed orientations .2 different"):
        _read(paths)


def test_two_slices_at_one_position_are_one_clear_error(tmp_path):
    geometry = slab(pixel=6.0)
    geometry.positions[11] = geometry.positions[10]
    with pytest.raises(CaseError, match="two slices at one position"):
        _read(_series(tmp_path / "s", geometry))


def test_irregular_in_plane_shifts_are_one_clear_error(tmp_path):
    geometry = slab(pixel=6.0)
    geometry.positions[30] = geometry.positions[30] + np.array([12.0, 0.0, 0.0])
    with pytest.raises(CaseError, match="shift in their plane irregularly"):
        _read(_series(tmp_path / "s", geometry))


def test_series_are_found_named_and_skipped_with_reasons(tmp_path):
    study = Study(patient_id="PAT 7/x", study_date="20230405")
    folder = tmp_path / "in" / "study"
    geometry = slab(pixel=6.0)
    first = _series(folder / "ct", geometry, 3, "Abdomen 6mm", study)[0]
    _series(folder / "ct_again", geometry, 3, "Abdomen 6mm", study)        # the same name: gets a suffix
    scout = slab(heights=[0.0], pixel=6.0)
    _series(folder, scout, 1, "Topogram", study, image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))
    _series(folder / "mr", geometry, 5, "T1", study, modality="MR")
    _series(folder / "thin", slab(heights=[0, 6, 12], pixel=6.0), 6, "Bolus", study)
    (folder / "notes.txt").write_text("not DICOM")
    (folder / "broken.dcm").write_bytes(first.read_bytes()[:600])  # cut inside its header
    empty = tmp_path / "in" / "empty"
    empty.mkdir()
    found = find_series([folder.parent / "study", empty], lambda: None, {"example"})
    names = [name for name, _, _ in found.series]
    assert names[0] == "PAT_7_x_20230405_3_Abdomen_6mm" and names[1].startswith("PAT_7_x_20230405_3_Abdomen_6mm_")
    assert len(names) == 2 and len(set(names)) == 2
    assert all(len(series.files) == len(geometry.positions) for _, series, _ in found.series)
    reasons = sorted(why for _, why in found.skipped)
    assert len(reasons) == 4, reasons
    assert any("series 1 'Topogram': a localiser" in r for r in reasons)
    assert any("series 5 'T1': modality MR, not CT" in r for r in reasons)
    assert any("series 6 'Bolus': 3 slice position(s): too thin" in r for r in reasons)
    assert any("1 unreadable DICOM file(s), first broken.dcm" in r for r in reasons)
    assert found.not_dicom == [empty] and not found.failed


def test_a_zip_of_series_is_unpacked_and_a_bad_zip_fails_alone(tmp_path):
    folder = tmp_path / "export" / "series"
    _series(folder, slab(pixel=6.0), 8, "Venous")
    archive = zip_folder(tmp_path / "export", tmp_path / "export.zip")
    broken = tmp_path / "broken.zip"
    broken.write_bytes(archive.read_bytes()[:2000])
    scratch = []

    def unpack_folder():
        scratch.append(tmp_path / f"unpacked{len(scratch)}")
        scratch[-1].mkdir()
        return scratch[-1]

    found = find_series([broken, archive], unpack_folder, set())
    assert [name for name, _, _ in found.series] == ["FLARE-0001_20240131_8_Venous"]
    assert all(scratch[-1] in path.parents for path in found.series[0][1].files)
    assert [name for name, _ in found.failed] == ["broken"] and "cannot read the .zip file" in found.failed[0][1]
    with zipfile.ZipFile(archive) as handle:
        assert len(handle.namelist()) == len(found.series[0][1].files)
    shutil.rmtree(scratch[-1])


def test_a_folder_of_one_series_files_is_one_case_and_nifti_folders_list_as_before(tmp_path):
    import contextlib
    from app.inference.runner import list_inputs
    inputs = tmp_path / "in"
    _series(inputs, slab(pixel=6.0), 7, "Loose files")
    (inputs / "readme.txt").write_text("exported by a PACS")
    with contextlib.ExitStack() as scratch:
        listing = list_inputs(inputs, scratch)
    assert [case.name for case in listing.cases] == ["FLARE-0001_20240131_7_Loose_files"]
    assert len(listing.cases[0].series.files) == len(slab(pixel=6.0).positions)
    assert [(path.name, why) for path, why in listing.skipped] == [("readme.txt", "not a NIfTI file (.nii or .nii.gz) nor DICOM")]
    nifti = tmp_path / "nifti"
    nifti.mkdir()
    (nifti / "b_0000.nii.gz").write_bytes(b"")
    (nifti / "a_0000.nii.gz").write_bytes(b"")
    with contextlib.ExitStack() as scratch:
        listing = list_inputs(nifti, scratch)
    assert [(case.name, case.path.name, case.series) for case in listing.cases] == [
        ("a", "a_0000.nii.gz", None), ("b", "b_0000.nii.gz", None)]
