"""DICOM series in, DICOM-SEG out, end to end: the SEG read back with pydicom (frame by frame, in
patient coordinates) and highdicom equals the NIfTI mask of the same run, references the right
source instances, and passes dciodvfy (Debian's dicom3tools); awkward series give a correct
volume or one error line, and every other case is still written."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from app import __version__
from app.config import DEFAULT_WEIGHTS
from conftest import REAL_LABELS, ROOT, dice_per_label, synthetic_ct
from dicom_helpers import (Study, read_headers, sample_slices, seg_against_nifti, slab, write_series,
                           zip_folder)
from hardening_helpers import assert_one_error, predict

SNOMED = {1: ("10200004", "liver"), 2: ("64033007", "kidney"), 3: ("78961009", "spleen"), 4: ("15776009", "pancreas")}


def validator_errors(dciodvfy: str, path) -> list[str]:
    run = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, check=False)
    lines = (run.stdout + run.stderr).splitlines()
    assert any("Segmentation" in line for line in lines), lines  # it read the file as a Segmentation
    return [line for line in lines if line.startswith("Error")]


def _series(folder, geometry, number, description, study, **options):
    return write_series(folder, geometry, sample_slices(geometry), study, number, description, **options)


def _on_grid(mask: sitk.Image, reference: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.Resample(mask, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0))


@pytest.fixture(scope="module")
def real_weights_run(tmp_path_factory):
    """The demo weights (fold 0, no TTA) on a folder holding a study (a scout and the real CT as a
    regular axial series) and a .zip of the same CT from a 15-degree tilted gantry."""
    root = tmp_path_factory.mktemp("dicom_real")
    study = Study(patient_id="FLARE-0001")
    regular = _series(root / "in" / "study", slab(), 3, "Abdomen 3mm", study)
    _series(root / "in" / "study", slab(heights=[0.0]), 1, "Scout", study,
            image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))
    tilted = _series(root / "tilt" / "series", slab(tilt_degrees=15), 4, "Abdomen tilted", study)
    zip_folder(root / "tilt", root / "in" / "tilted.zip")
    result = predict(root / "in", root / "out", DEFAULT_WEIGHTS, output_format="both")
    return root / "out", result, regular, tilted


def test_regular_series_gives_a_seg_equal_to_the_nifti_mask_referencing_each_slice(real_weights_run, dciodvfy):
    out, result, regular, _ = real_weights_run
    assert result.code == 0, result.text
    assert "note: skipping study: series 1 'Scout': a localiser (scout) image, not a volume" in result.out
    name = "FLARE-0001_20240131_3_Abdomen_3mm"
    frames = seg_against_nifti(out / f"{name}.seg.dcm", out / f"{name}.nii.gz")
    assert all(frames.voxels.get(label, 0) > 1000 for label in (1, 2, 3)), frames.voxels  # real organs
    sources = {h.SOPInstanceUID: np.array(h.ImagePositionPatient, float) for h in read_headers(regular)}
    assert len(frames.sources) == len(frames.positions) and all(frames.sources)
    for uid, position in zip(frames.sources, frames.positions):
        assert np.allclose(sources[uid], position, atol=1e-4), "a frame references another slice than its own"
    seg = pydicom.dcmread(out / f"{name}.seg.dcm")
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == read_headers(regular[:1])[0].SeriesInstanceUID
    assert {item.ReferencedSOPInstanceUID for item in referenced.ReferencedInstanceSequence} == set(sources)
    assert validator_errors(dciodvfy, out / f"{name}.seg.dcm") == []


def test_seg_read_back_with_highdicom_has_the_organs_coded_and_the_demo_weights_named(real_weights_run):
    import highdicom as hd
    out, *_ = real_weights_run
    seg = hd.seg.segread(out / "FLARE-0001_20240131_3_Abdomen_3mm.seg.dcm")
    assert "demo weights" in seg.SeriesDescription and seg.Modality == "SEG" and seg.PatientID == "FLARE-0001"
    for number, (code, name) in SNOMED.items():
        description = seg.get_segment_description(number)
        assert (description.segmented_property_type.value, description.segmented_property_type.scheme_designator) == (code, "SCT")
        assert description.segment_label == name
        algorithm = description.algorithm_identification[0]
        assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("FLARE21 nnU-Net v1 organs", __version__)
    volume = seg.get_volume(combine_segments=True, relabel=False)
    nifti = sitk.ReadImage(str(out / "FLARE-0001_20240131_3_Abdomen_3mm.nii.gz"))
    # highdicom's volume (slices, rows, columns) in LPS, put on the NIfTI's grid, is the NIfTI mask
    image = sitk.GetImageFromArray(volume.array.astype(np.uint8))
    affine = volume.affine
    image.SetSpacing([float(np.linalg.norm(affine[:3, i])) for i in (2, 1, 0)])
    image.SetOrigin([float(v) for v in affine[:3, 3]])
    image.SetDirection([float(v) for v in (affine[:3, [2, 1, 0]] / np.linalg.norm(affine[:3, [2, 1, 0]], axis=0)).flatten()])
    assert np.array_equal(_on_grid(image, nifti), sitk.GetArrayFromImage(nifti))


def test_tilted_gantry_zip_gives_a_resampled_seg_that_finds_the_organs_where_they_are(real_weights_run, dciodvfy):
    out, result, _, tilted = real_weights_run
    name = "FLARE-0001_20240131_4_Abdomen_tilted"
    assert f"note: {name}: tilted gantry (15.0 degrees); resampled onto a regular grid" in result.out
    frames = seg_against_nifti(out / f"{name}.seg.dcm", out / f"{name}.nii.gz")
    seg = pydicom.dcmread(out / f"{name}.seg.dcm")
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == read_headers(tilted[:1])[0].SeriesInstanceUID
    assert len(frames.positions) > 0
    assert validator_errors(dciodvfy, out / f"{name}.seg.dcm") == []
    # The oracle: the reference labels of the real CT, in patient space. A mask on ITK's own
    # (untilted) reading of this series lies up to 90 mm off and fails this.
    reference = sitk.ReadImage(str(REAL_LABELS))
    dice = dice_per_label(_on_grid(sitk.ReadImage(str(out / f"{name}.nii.gz")), reference), sitk.GetArrayFromImage(reference))
    regular = dice_per_label(_on_grid(sitk.ReadImage(str(out / "FLARE-0001_20240131_3_Abdomen_3mm.nii.gz")), reference),
                             sitk.GetArrayFromImage(reference))
    # the tilted series' mask finds the organs about as well as the regular series' mask does
    # (resampling the tilt costs a little), whatever the weights' own accuracy on this CT; a mask
    # 90 mm off would score near 0 for the liver
    assert dice[1] > 0.6, (dice, regular)
    assert all(dice[k] >= regular[k] - 0.1 for k in (1, 2, 3)), (dice, regular)


def test_awkward_series_give_a_volume_or_one_error_and_the_rest_is_written(tiny_weights, tmp_path, dciodvfy):
    study, inputs = Study(patient_id="P2"), tmp_path / "in"
    heights = np.concatenate([np.arange(0, 150, 6.0), 144 + np.arange(1, 20) * 9.0])
    _series(inputs / "uneven", slab(heights=heights, pixel=6.0), 2, "Uneven", study)
    missing = _series(inputs / "missing", slab(pixel=6.0), 3, "Missing", study)
    missing[25].unlink()
    geometry = slab(pixel=6.0)
    oblique = (1.0, 0.0, 0.0, 0.0, np.cos(0.3), -np.sin(0.3))
    _series(inputs / "mixed", geometry, 4, "Mixed", study,
            orientations=[oblique if k in (5, 6) else geometry.orientation for k in range(len(geometry.positions))])
    corrupt = _series(inputs / "corrupt", slab(pixel=6.0), 5, "Corrupt", study)
    corrupt[10].write_bytes(corrupt[10].read_bytes()[:3000])  # header whole, pixel data cut short
    _series(inputs / "mr", slab(pixel=6.0), 6, "T2", study, modality="MR")
    sitk.WriteImage(synthetic_ct(size=(40, 36, 10)), str(inputs / "nifti_0000.nii.gz"))

    result = predict(inputs, tmp_path / "out", tiny_weights, output_format="both")
    assert result.code == 1, result.text
    assert len(result.errors) == 3, result.err
    assert_one_error(result, "P2_20240131_3_Missing", "1 missing slice(s)", "incomplete")
    assert_one_error(result, "P2_20240131_4_Mixed", "mixed orientations")
    assert_one_error(result, "P2_20240131_5_Corrupt", "cannot read the pixel data")
    assert "note: skipping mr: series 6 'T2': modality MR, not CT" in result.out
    assert "note: P2_20240131_2_Uneven: uneven slice spacing (6.00 to 9.00 mm); resampled" in result.out
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith((".", "predict_log"))) == [
        "P2_20240131_2_Uneven.nii.gz", "P2_20240131_2_Uneven.seg.dcm", "nifti.nii.gz"]
    frames = seg_against_nifti(out / "P2_20240131_2_Uneven.seg.dcm", out / "P2_20240131_2_Uneven.nii.gz")
    steps = np.diff(np.unique(np.round(frames.positions[:, 2], 3)))
    assert np.allclose(steps, steps[0], atol=1e-3) and 6.0 < steps[0] < 9.0, steps  # one regular step
    assert "demo weights" not in pydicom.dcmread(out / "P2_20240131_2_Uneven.seg.dcm").SeriesDescription
    assert validator_errors(dciodvfy, out / "P2_20240131_2_Uneven.seg.dcm") == []
    assert not list((out / ".partial").iterdir())

    again = predict(inputs, tmp_path / "out", tiny_weights, output_format="both")  # resumes: written cases kept
    assert "skip  P2_20240131_2_Uneven: mask exists" in again.out and len(again.errors) == 3


def test_dicom_seg_of_a_nifti_input_is_one_error_before_any_work(tiny_weights, tmp_path, capsys):
    from app.cli import main
    inputs = tmp_path / "in"
    inputs.mkdir()
    sitk.WriteImage(synthetic_ct(size=(40, 36, 10)), str(inputs / "case_0000.nii.gz"))
    code = main(["predict", "-i", str(inputs), "-o", str(tmp_path / "out"), "--weights", str(tiny_weights),
                 "--output-format", "dicom-seg", "--device", "cpu", "--quiet"])
    assert code == 1
    error = capsys.readouterr().err
    assert "ERROR case: case_0000.nii.gz: a DICOM-SEG needs a DICOM series as input" in error
    assert "loaded folds" not in error
    assert not any(p.suffix in (".gz", ".dcm") for p in (tmp_path / "out").iterdir())


def test_nifti_runs_import_no_dicom_code(tiny_weights, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    sitk.WriteImage(synthetic_ct(size=(40, 36, 10)), str(inputs / "case_0000.nii.gz"))
    script = ("import sys; from pathlib import Path; from app.config import PredictConfig; "
              "from app.inference.runner import run_predict; "
              f"code = run_predict(PredictConfig(weights_dir=Path({str(tiny_weights)!r}), folds=(0,), tta=False, "
              f"device='cpu', progress=False), Path({str(inputs)!r}), Path({str(tmp_path / 'out')!r})); "
              "print(code, sorted(m for m in sys.modules if m.split('.')[0] in ('highdicom', 'pydicom') "
              "or m.startswith('app.inference.dicom')))")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False, cwd=ROOT)
    assert run.stdout.strip().splitlines()[-1] == "0 []", run.stdout + run.stderr


def test_dciodvfy_flags_a_seg_without_its_segments(real_weights_run, dciodvfy, tmp_path):
    """The validator check above can fail: a SEG stripped of its Segment Sequence is an error."""
    out, *_ = real_weights_run
    seg = pydicom.dcmread(out / "FLARE-0001_20240131_3_Abdomen_3mm.seg.dcm")
    del seg.SegmentSequence
    seg.save_as(tmp_path / "broken.seg.dcm")
    assert validator_errors(dciodvfy, tmp_path / "broken.seg.dcm")


def test_a_failed_seg_write_leaves_nothing_where_it_would_be_read(tmp_path, monkeypatch):
    from app.inference.dicom_geometry import read_series
    from app.inference.dicom_seg import SegInfo, write_seg
    volume = read_series(tuple(_series(tmp_path / "s", slab(pixel=6.0), 3, "A", Study())), "series 3")
    mask = np.zeros(sitk.GetArrayViewFromImage(volume.image).shape, np.uint8)
    mask[20:30, 20:30, 20:30] = 1

    def half_then_fail(self, path, *args, **kwargs):
        with open(path, "wb") as handle:
            handle.write(b"\0" * 1000)
        raise OSError("disk full")

    monkeypatch.setattr(pydicom.dataset.Dataset, "save_as", half_then_fail)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(OSError, match="disk full"):
        write_seg(mask, volume.image, list(volume.stack.headers), SegInfo("fast", (0,), False), out / "a.seg.dcm")
    assert not (out / "a.seg.dcm").exists() and not list((out / ".partial").iterdir())
    monkeypatch.undo()
    write_seg(mask, volume.image, list(volume.stack.headers), SegInfo("fast", (0,), False), out / "a.seg.dcm")
    assert pydicom.dcmread(out / "a.seg.dcm").SeriesDescription == "Organs (fast)"
