"""`evaluate` against an independent implementation: DeepMind's surface-distance package, driven
the way the FLARE21 organisers' evaluation script drives it (nibabel arrays, ground-truth spacing,
their empty-mask rules). Our evaluator shares only the surfel-area lookup table with it."""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from app.evaluation import cli, report, scoring
from app.evaluation.surface import dice, normalized_surface_dice
from app.labels import ORGANS

# The package uses scipy's deprecated ndimage.filters/morphology namespaces.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
surface_distance_metrics = pytest.importorskip("surface_distance.metrics")

EXAMPLE_LABELS = Path(__file__).parent / "data" / "example_flare_labels.nii.gz"
TOLERANCE = 1e-6


# -- the independent reference ---------------------------------------------------------------
def reference_scores(gt_path: Path, pred_path: Path) -> tuple[dict, dict]:
    """The organisers' per-case loop, with the surface-distance package doing the geometry."""
    gt_nii = nib.load(str(gt_path))
    spacing = gt_nii.header.get_zooms()
    gt_data = np.uint8(gt_nii.get_fdata())
    seg_data = nib.load(str(pred_path)).get_fdata()
    dsc, nsd = {}, {}
    for label in range(1, 5):
        gt_mask, seg_mask = gt_data == label, seg_data == label
        if gt_mask.sum() == 0 and seg_mask.sum() == 0:
            dsc[label], nsd[label] = 1.0, 1.0
        elif gt_mask.sum() == 0 or seg_mask.sum() == 0:
            # GT empty: the organisers' rule. Prediction empty: what the package returns
            # (all distances infinite); numpy 2 lacks the np.Inf it would use to say so.
            dsc[label], nsd[label] = 0.0, 0.0
        else:
            distances = surface_distance_metrics.compute_surface_distances(gt_mask, seg_mask, spacing)
            dsc[label] = surface_distance_metrics.compute_dice_coefficient(gt_mask, seg_mask)
            nsd[label] = surface_distance_metrics.compute_surface_dice_at_tolerance(distances, 1)
    return dsc, nsd


# -- fixtures ------------------------------------------------------------------------------------
def affine_for(spacing, origin=(-100.0, 20.0, 50.0), flip=(-1, -1, 1)) -> np.ndarray:
    affine = np.diag([f * s for f, s in zip(flip, spacing)] + [1.0])
    affine[:3, 3] = origin
    return affine


def save_labels(path: Path, labels: np.ndarray, affine: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.Nifti1Image(labels.astype(np.uint8), affine).to_filename(str(path))
    return path


def random_blob(rng, shape, fraction, smooth=2.0) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.random(shape), smooth)
    return field > np.quantile(field, 1.0 - fraction)


def random_label_pair(rng, shape=(36, 44, 28)) -> tuple[np.ndarray, np.ndarray]:
    """Ground truth and a disturbed prediction, each with labels 1-4 as random blobs."""
    gt = np.zeros(shape, np.uint8)
    pred = np.zeros(shape, np.uint8)
    for organ in ORGANS:
        blob = random_blob(rng, shape, fraction=0.06)
        gt[blob] = organ.label
        moved = ndimage.shift(blob.astype(float), rng.integers(-1, 2, size=3), order=0) > 0.5
        noisy = moved ^ (random_blob(rng, shape, fraction=0.02, smooth=1.0) & ndimage.binary_dilation(moved))
        pred[noisy] = organ.label
    return gt, pred


def assert_case_matches_reference(case: scoring.CaseScore, gt_path: Path, pred_path: Path):
    ref_dsc, ref_nsd = reference_scores(gt_path, pred_path)
    for organ in ORGANS:
        assert case.dsc[organ.label] == pytest.approx(ref_dsc[organ.label], abs=TOLERANCE), organ.name
        assert case.nsd[organ.label] == pytest.approx(ref_nsd[organ.label], abs=TOLERANCE), organ.name


# -- agreement with the reference ----------------------------------------------------------------
@pytest.mark.parametrize("seed,spacing", [(0, (0.8, 1.1, 2.5)), (1, (2.0, 0.6, 0.75)),
                                          (2, (0.5, 0.5, 1.0)), (3, (1.37, 0.93, 3.1))])
def test_random_blobs_anisotropic_match_reference(tmp_path, seed, spacing):
    rng = np.random.default_rng(seed)
    gt, pred = random_label_pair(rng)
    gt_path = save_labels(tmp_path / "gt" / "case.nii.gz", gt, affine_for(spacing))
    pred_path = save_labels(tmp_path / "pred" / "case.nii.gz", pred, affine_for(spacing))
    case = scoring.score_case(gt_path, pred_path)
    assert_case_matches_reference(case, gt_path, pred_path)
    assert 0.0 < min(case.nsd.values()) < 1.0  # a real test, not trivially 0 or 1


def test_binary_masks_match_reference_directly():
    rng = np.random.default_rng(7)
    for spacing in [(1.0, 1.0, 1.0), (0.7, 0.7, 2.5), (3.0, 0.4, 1.2)]:
        gt = random_blob(rng, (30, 30, 30), 0.1)
        pred = random_blob(rng, (30, 30, 30), 0.1) | ndimage.binary_erosion(gt)
        distances = surface_distance_metrics.compute_surface_distances(gt, pred, spacing)
        for tolerance in (0.5, 1.0, 2.0, 5.0):
            expected = surface_distance_metrics.compute_surface_dice_at_tolerance(distances, tolerance)
            assert normalized_surface_dice(gt, pred, spacing, tolerance) == pytest.approx(expected, abs=TOLERANCE)
        assert dice(gt, pred) == pytest.approx(surface_distance_metrics.compute_dice_coefficient(gt, pred))


def perturbed_prediction(labels: np.ndarray) -> np.ndarray:
    """A plausible imperfect segmentation: eroded liver, shifted spleen, dilated kidney, half pancreas."""
    pred = np.zeros_like(labels)
    pred[ndimage.binary_erosion(labels == 1)] = 1
    pred[ndimage.binary_dilation(labels == 2) & (pred == 0)] = 2
    pred[np.roll(labels == 3, shift=(1, 0, -1), axis=(0, 1, 2)) & (pred == 0)] = 3
    pancreas = labels == 4
    pancreas[:, :, : int(np.median(np.nonzero(pancreas)[2]))] = False
    pred[pancreas & (pred == 0)] = 4
    return pred


@pytest.mark.parametrize("spacing", [None, (0.78, 0.85, 2.5)])
def test_real_ct_labels_match_reference(tmp_path, spacing):
    image = nib.load(str(EXAMPLE_LABELS))
    labels = np.asanyarray(image.dataobj).astype(np.uint8)
    affine = image.affine if spacing is None else affine_for(spacing, origin=image.affine[:3, 3])
    gt_path = save_labels(tmp_path / "gt" / "example.nii.gz", labels, affine)
    pred_path = save_labels(tmp_path / "pred" / "example.nii.gz", perturbed_prediction(labels), affine)
    case = scoring.score_case(gt_path, pred_path)
    assert_case_matches_reference(case, gt_path, pred_path)
    assert all(0.3 < value < 1.0 for value in case.dsc.values())


def test_identical_masks_score_one(tmp_path):
    labels = np.asanyarray(nib.load(str(EXAMPLE_LABELS)).dataobj)
    dsc, nsd = scoring.score_masks(labels, labels.copy(), (0.8, 0.8, 2.5))
    assert set(dsc.values()) == {1.0} and set(nsd.values()) == {1.0}


# -- FLARE's empty-mask rules ----------------------------------------------------------------------
def test_empty_mask_rules():
    empty = np.zeros((10, 10, 10), bool)
    blob = empty.copy()
    blob[3:6, 3:7, 4:6] = True
    spacing = (0.8, 0.8, 2.0)
    assert dice(empty, empty) == 1.0 and normalized_surface_dice(empty, empty, spacing) == 1.0
    assert dice(empty, blob) == 0.0 and normalized_surface_dice(empty, blob, spacing) == 0.0
    assert dice(blob, empty) == 0.0 and normalized_surface_dice(blob, empty, spacing) == 0.0


def test_organ_absent_in_both_scores_one_and_false_positive_scores_zero(tmp_path):
    gt = np.zeros((20, 20, 20), np.uint8)
    gt[5:12, 5:12, 5:12] = 1
    pred = gt.copy()
    pred[15:18, 15:18, 15:18] = 3  # spleen predicted where the ground truth has none
    affine = affine_for((1.0, 1.0, 1.0))
    case = scoring.score_case(save_labels(tmp_path / "g" / "c.nii.gz", gt, affine),
                              save_labels(tmp_path / "p" / "c.nii.gz", pred, affine))
    assert case.dsc == {1: 1.0, 2: 1.0, 3: 0.0, 4: 1.0}
    assert case.nsd == {1: 1.0, 2: 1.0, 3: 0.0, 4: 1.0}


# -- folder handling and the command -------------------------------------------------------------
def evaluate(tmp_path, *extra) -> int:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), *extra])
    return cli.run(args)


def make_two_cases(tmp_path, with_second_prediction=True):
    rng = np.random.default_rng(11)
    affine = affine_for((0.8, 0.9, 2.0))
    for name in ("case_a", "case_b"):
        gt, pred = random_label_pair(rng, shape=(24, 26, 18))
        save_labels(tmp_path / "gt" / f"{name}.nii.gz", gt, affine)
        if name == "case_a" or with_second_prediction:
            save_labels(tmp_path / "pred" / f"{name}.nii.gz", pred, affine)


def test_cli_writes_csv_with_organisers_columns_and_png(tmp_path, capsys):
    make_two_cases(tmp_path)
    assert evaluate(tmp_path, "--csv", str(tmp_path / "out" / "scores.csv"),
                    "--plot", str(tmp_path / "out" / "box.png")) == 0
    with open(tmp_path / "out" / "scores.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    expected_columns = ["Name"] + [f"{m}_{i}" for i in range(1, 5) for m in ("DSC", "NSD-1mm")]
    assert list(rows[0].keys()) == expected_columns
    assert [row["Name"] for row in rows] == ["case_a.nii.gz", "case_b.nii.gz"]
    for row in rows:
        ref_dsc, ref_nsd = reference_scores(tmp_path / "gt" / row["Name"], tmp_path / "pred" / row["Name"])
        for label in range(1, 5):
            assert float(row[f"DSC_{label}"]) == pytest.approx(ref_dsc[label], abs=TOLERANCE)
            assert float(row[f"NSD-1mm_{label}"]) == pytest.approx(ref_nsd[label], abs=TOLERANCE)
    png = (tmp_path / "out" / "box.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    printed = capsys.readouterr().out
    assert "DSC mean" in printed and "pancreas" in printed


def test_missing_prediction_is_reported_and_scores_zero(tmp_path, capsys):
    make_two_cases(tmp_path, with_second_prediction=False)
    save_labels(tmp_path / "pred" / "stray.nii.gz", np.zeros((4, 4, 4)), np.eye(4))
    assert evaluate(tmp_path, "--csv", str(tmp_path / "scores.csv")) == 0
    captured = capsys.readouterr()
    assert "case_b.nii.gz" in captured.err and "no prediction" in captured.err
    assert "stray.nii.gz" in captured.err  # predictions without ground truth are named, not scored
    rows = {row["Name"]: row for row in csv.DictReader(open(tmp_path / "scores.csv", newline=""))}
    assert set(rows) == {"case_a.nii.gz", "case_b.nii.gz"}
    assert all(float(value) == 0.0 for key, value in rows["case_b.nii.gz"].items() if key != "Name")
    assert float(rows["case_a.nii.gz"]["DSC_1"]) > 0


def test_shape_mismatch_names_both_files(tmp_path, capsys):
    save_labels(tmp_path / "gt" / "c.nii.gz", np.zeros((10, 10, 10)), affine_for((1, 1, 1)))
    save_labels(tmp_path / "pred" / "c.nii.gz", np.zeros((10, 10, 9)), affine_for((1, 1, 1)))
    with pytest.raises(scoring.GeometryMismatchError) as error:
        scoring.score_folder(tmp_path / "pred", tmp_path / "gt")
    message = str(error.value)
    assert str(tmp_path / "gt" / "c.nii.gz") in message and str(tmp_path / "pred" / "c.nii.gz") in message
    assert "shape" in message
    assert evaluate(tmp_path) == 2
    assert "geometry mismatch" in capsys.readouterr().err


def test_affine_mismatch_is_an_error_but_float_noise_is_not(tmp_path):
    labels = np.zeros((10, 10, 10))
    labels[2:5, 2:5, 2:5] = 1
    gt_path = save_labels(tmp_path / "gt" / "c.nii.gz", labels, affine_for((0.8, 0.8, 2.0)))
    flipped = affine_for((0.8, 0.8, 2.0), flip=(1, -1, 1))
    pred_path = save_labels(tmp_path / "pred" / "c.nii.gz", labels, flipped)
    with pytest.raises(scoring.GeometryMismatchError, match="affine"):
        scoring.score_case(gt_path, pred_path)
    noisy = affine_for((0.8, 0.8, 2.0))
    noisy[:3, 3] += 2e-5
    save_labels(pred_path, labels, noisy)
    assert scoring.score_case(gt_path, pred_path).dsc[1] == 1.0


def test_missing_folders_and_empty_ground_truth_are_clear_errors(tmp_path, capsys):
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    assert evaluate(tmp_path) == 2
    assert "no .nii.gz ground-truth files" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="prediction folder not found"):
        scoring.score_folder(tmp_path / "nowhere", tmp_path / "gt")


def test_table_mean_and_sd():
    cases = [scoring.CaseScore("a", {1: 0.9, 2: 1, 3: 1, 4: 0.5}, {1: 0.8, 2: 1, 3: 1, 4: 0.4}),
             scoring.CaseScore("b", {1: 0.7, 2: 1, 3: 1, 4: 0.7}, {1: 0.6, 2: 1, 3: 1, 4: 0.2})]
    stats = {row["organ"]: row for row in report.organ_statistics(cases)}
    assert stats["liver"]["dsc_mean"] == pytest.approx(0.8)
    assert stats["liver"]["dsc_sd"] == pytest.approx(0.1)
    assert stats["pancreas"]["nsd_mean"] == pytest.approx(0.3)
    assert "0.8000" in report.format_table(cases)


def test_volume_ratio_is_pooled_over_millilitres_of_cases_with_a_prediction(tmp_path):
    """A trimmed liver in a coarse case and a swollen one in a fine case: the ratio weighs each case
    by its reference millilitres, not by its voxel count; a missing prediction does not enter it."""
    shape = (20, 20, 20)
    gt = np.zeros(shape, np.uint8)
    gt[2:12, 2:12, 2:12] = 1                  # 1000 voxels of liver
    trimmed, swollen = gt.copy(), gt.copy()
    trimmed[2:12, 2:12, 2:7] = 0              # 500 voxels left
    swollen[12:14, 2:12, 2:12] = 1            # 1200 voxels
    coarse, fine = (2.0, 2.0, 2.0), (1.0, 1.0, 1.0)   # 8 ul and 1 ul a voxel
    for name, spacing, pred in (("coarse.nii.gz", coarse, trimmed), ("fine.nii.gz", fine, swollen)):
        save_labels(tmp_path / "gt" / name, gt, affine_for(spacing))
        save_labels(tmp_path / "pred" / name, pred, affine_for(spacing))
    save_labels(tmp_path / "gt" / "unpredicted.nii.gz", gt, affine_for(fine))
    result = scoring.score_folder(tmp_path / "pred", tmp_path / "gt")
    coarse_case = next(case for case in result.cases if case.name == "coarse.nii.gz")
    assert coarse_case.volume_ml[1] == pytest.approx((4.0, 8.0))
    expected = (500 * 8 + 1200 * 1) / (1000 * 8 + 1000 * 1)
    assert report.pooled_volume_ratio(result.cases, 1) == pytest.approx(expected)
    assert np.isnan(report.pooled_volume_ratio(result.cases, 2))   # no kidney in any reference
    assert f"{expected:.3f}" in report.format_table(result.cases)
