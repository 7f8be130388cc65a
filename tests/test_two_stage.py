"""Two-stage prediction: the region's maths, the windowed export against the whole-volume export,
the predictor with and without a localiser, and the log it writes."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from app.inference.region import crop_box_of_organs, network_window, organ_bounds, region_from_organs
from app.inference.resample import resample_argmax
from app.inference.resample_window import resample_window_argmax
from app.inference.sliding_window import tile_starts
from tests.conftest import REAL_CT, REAL_LABELS, ROOT


def _organs(shape, box):
    organs = np.zeros(shape, dtype=bool)
    organs[box] = True
    return organs


def test_no_organ_means_the_whole_volume():
    region = region_from_organs(np.zeros((10, 10, 10), bool), (100,) * 3, (1.0,) * 3, (50,) * 3, (0, 1, 2),
                                (8,) * 3, 10.0, 0.5)
    assert region.whole and region.fraction == 1.0
    assert region.box == (slice(0, 50),) * 3
    assert "no organ" in region.fallback


def test_margin_is_in_mm_and_maps_through_crop_voxels():
    # localiser voxels 4-5 of 10 cover crop voxels [40, 60); 5 mm at 0.5 mm per crop voxel is 10 voxels
    organs = _organs((10, 10, 10), (slice(4, 6),) * 3)
    box, touching = crop_box_of_organs(organ_bounds(organs), (10, 10, 10), (100, 100, 100), (0.5, 1.0, 2.5), 5.0)
    assert touching == []
    assert box == (slice(30, 70), slice(35, 65), slice(38, 62))


def test_margin_is_clipped_at_the_volume_edge():
    organs = _organs((10, 10, 10), (slice(1, 3), slice(4, 6), slice(7, 9)))
    box, _ = crop_box_of_organs(organ_bounds(organs), (10,) * 3, (100,) * 3, (1.0,) * 3, 30.0)
    assert box == (slice(0, 60), slice(10, 90), slice(40, 100))


def test_organs_touching_the_field_edge_take_the_whole_axis():
    organs = _organs((10, 10, 10), (slice(0, 3), slice(4, 6), slice(4, 6)))
    region = region_from_organs(organs, (100,) * 3, (1.0,) * 3, (100,) * 3, (0, 1, 2), (8,) * 3, 5.0, 0.5)
    assert region.box[0] == slice(0, 100)
    # crop [35, 65) is grid [35, 65), plus one voxel on each side
    assert region.box[1] == slice(34, 66) and region.starts[1] == tuple(tile_starts([8], [32], 0.5)[0])
    assert "axes z" in region.fallback and not region.whole


def test_network_window_follows_the_transpose_and_takes_the_fewer_tiles():
    crop_box = (slice(40, 60), slice(10, 20), slice(0, 100))           # z, y, x in crop voxels
    # network axes are (x, z, y) of the crop, at half the voxels; patch 20, 8, 16; step 0.5; the
    # box gets one grid voxel more on each side (an edge row interpolates from its neighbour)
    window, starts, inside = network_window(crop_box, (100, 100, 100), (50, 50, 50), (2, 0, 1), (20, 8, 16), 0.5)
    assert window[0] == slice(0, 50) and starts[0] == (0, 10, 20, 30)   # x: the whole axis, v1's own tiles
    assert window[1] == slice(19, 31) and starts[1] == (0, 4)           # z: 2 new tiles, not v1's 4 reaching in
    assert window[2] == slice(0, 16) and starts[2] == (0,)              # y: [4, 11) grown to one patch, kept inside
    assert inside == window                                             # new tiles are all that cover their window
    # a grid smaller than the patch: one padded tile, as for the whole volume
    assert network_window(crop_box, (100,) * 3, (10, 50, 50), (0, 1, 2), (16, 8, 8), 0.5)[0][0] == slice(0, 10)


@pytest.mark.parametrize("box, exact, expected", [
    ((5, 95), False, (slice(0, 100), (0, 20, 40, 60), slice(0, 100))),   # new tiles save none: v1's own
    ((45, 55), False, (slice(30, 70), (0,), slice(30, 70))),             # one new tile, not the two reaching in
    ((95, 100), False, (slice(60, 100), (0,), slice(80, 100))),          # v1's last tile; [60, 80) is also
                                                                          # v1's third tile's, left out
    ((45, 55), True, (slice(20, 80), (0, 20), slice(40, 60))),           # exact: v1's two tiles reaching in
])
def test_axis_layout(box, exact, expected):
    from app.inference.region import _axis_layout
    window, starts, inside = _axis_layout(*box, 100, 40, 0.5, exact)
    assert (window, starts, inside) == expected
    assert inside.start <= box[0] and box[1] <= inside.stop   # the box is always exported


def test_v1_tiles_reaching_the_box_give_its_voxels_whole_volume_probabilities(tiny_weights):
    """Where a window keeps the whole volume's own tiles, the region's voxels get exactly the
    probabilities that whole-volume prediction gives them."""
    from app.inference.ensemble import SlidingWindow
    from app.inference.network import load_network
    from app.inference.weights import load_weights
    weights = load_weights(tiny_weights, folds=(0,))
    network = load_network(weights.plan.network, weights.fold_states[0], torch.device("cpu"))
    window = SlidingWindow(weights.plan.patch_size, ())
    data = torch.randn((150, 90, 80), generator=torch.Generator().manual_seed(1))
    options = dict(tta=False, step_size=0.5, network_batch=2, accumulate_on=torch.device("cpu"), autocast=None)
    whole = window.probabilities(data, [network], 5, **options)
    organ_box = [(30, 40), (40, 50), (20, 30)]
    box, starts = [], []
    for (a, b), n, p in zip(organ_box, data.shape, weights.plan.patch_size):
        reaching = [s for s in tile_starts([p], [n], 0.5)[0] if s < b and s + p > a]
        box.append(slice(reaching[0], reaching[-1] + p))
        starts.append([s - reaching[0] for s in reaching])
    box = tuple(box)
    assert any(len(s) < len(tile_starts([p], [n], 0.5)[0])
               for s, n, p in zip(starts, data.shape, weights.plan.patch_size))   # some tiles are left out
    part = window.probabilities(data[box], [network], 5, starts=starts, **options)
    inner = tuple(slice(a - w.start, b - w.start) for (a, b), w in zip(organ_box, box))
    expected = whole[(slice(None), *(slice(a, b) for a, b in organ_box))]
    torch.testing.assert_close(part[(slice(None), *inner)], expected, rtol=1e-5, atol=1e-6)


def _probabilities(shape, seed):
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand((5, 1, 5, 6, 6), generator=generator)
    return torch.softmax(8 * torch.nn.functional.interpolate(coarse.transpose(0, 1), size=shape,
                                                             mode="trilinear")[0], dim=0)


@pytest.mark.parametrize("shape_in, shape_out, separate", [
    ((20, 30, 28), (37, 45, 50), None), ((20, 30, 28), (50, 33, 21), 0), ((12, 30, 28), (12, 30, 28), None),
    ((20, 30, 28), (31, 45, 50), 2), ((20, 30, 28), (31, 45, 50), 1)])
def test_windowed_export_equals_the_whole_export_inside_its_rows(shape_in, shape_out, separate):
    probs = _probabilities(shape_in, seed=sum(shape_out))
    whole = resample_argmax(probs, shape_out, separate)
    full = tuple(slice(0, n) for n in shape_in)
    labels, rows = resample_window_argmax(probs, full, shape_in, shape_out, full, separate)
    assert np.array_equal(labels, whole) and rows == tuple(slice(0, n) for n in shape_out)
    window = (slice(3, 15), slice(5, 27), slice(2, 20))
    inside = (slice(4, 14), slice(5, 25), slice(3, 20))
    labels, rows = resample_window_argmax(probs[(slice(None), *window)].contiguous(), window, shape_in, shape_out,
                                          inside, separate)
    assert labels.shape == tuple(r.stop - r.start for r in rows)
    for r, b, n, m in zip(rows, inside, shape_in, shape_out):   # nearly every row the part determines
        assert r.stop - r.start >= (b.stop - b.start - 2) * m / n - 1
    assert np.array_equal(labels, whole[rows])     # bit for bit, near-ties included


def _with_localiser(source: Path, target: Path) -> Path:
    """A copy of a weights folder with a localiser: its own fold 0 at its own plan (enough to test
    the plumbing with any weights; the shipped localiser is coarser)."""
    from app.inference.weights import LOCALISER_PLANS, LOCALISER_STATE, sha256_of
    shutil.copytree(source, target)
    shutil.copy(target / "plans.json", target / LOCALISER_PLANS)
    shutil.copy(target / "fold_0.safetensors", target / LOCALISER_STATE)
    manifest = json.loads((target / "MANIFEST.json").read_text())
    manifest["files"].update({name: sha256_of(target / name) for name in (LOCALISER_PLANS, LOCALISER_STATE)})
    (target / "MANIFEST.json").write_text(json.dumps(manifest))
    return target


def test_weights_without_a_localiser_predict_as_before(tiny_weights):
    from app.inference.predictor import Predictor
    from tests.conftest import synthetic_ct
    image = synthetic_ct()
    fast = Predictor.from_weights(tiny_weights, device="cpu", mode="fast", progress=False)
    assert fast.localiser is None and fast.weights.localiser is None
    whole = Predictor.from_weights(tiny_weights, device="cpu", mode="fast", roi=False, progress=False)
    assert np.array_equal(sitk.GetArrayFromImage(fast.predict_image(image)),
                          sitk.GetArrayFromImage(whole.predict_image(image)))
    assert fast.last_roi == {}
    with pytest.raises(ValueError, match="localiser"):
        Predictor.from_weights(tiny_weights, device="cpu", mode="fast", roi=True, progress=False)


def test_a_localiser_listed_alone_is_refused(tiny_weights, tmp_path):
    from app.inference.weights import WeightsError, load_weights, sha256_of
    weights = shutil.copytree(tiny_weights, tmp_path / "w")
    shutil.copy(weights / "plans.json", weights / "localiser_plans.json")
    manifest = json.loads((weights / "MANIFEST.json").read_text())
    manifest["files"]["localiser_plans.json"] = sha256_of(weights / "localiser_plans.json")
    (weights / "MANIFEST.json").write_text(json.dumps(manifest))
    with pytest.raises(WeightsError, match="only one of"):
        load_weights(weights)


def _finding(predictor, box=None):
    """Make the predictor's localiser find exactly `box` (localiser-grid slices) or nothing."""
    from app.inference.localiser import Found
    find = predictor.localiser.find

    def fixed(volume, spacing):
        found = find(volume, spacing)
        organs = np.zeros_like(found.organs)
        if box is not None:
            organs[box] = True
        return Found(organs, found.bbox)
    predictor.localiser.find = fixed


def test_a_localiser_that_finds_nothing_falls_back_to_the_whole_volume(tiny_weights, tmp_path, monkeypatch):
    from app.config import PredictConfig
    from app.inference.localiser import LocaliserStage
    from app.inference.runner import run_predict
    from tests.conftest import synthetic_ct
    weights = _with_localiser(tiny_weights, tmp_path / "w")
    (tmp_path / "in").mkdir()
    sitk.WriteImage(synthetic_ct(), str(tmp_path / "in" / "case_0000.nii.gz"))
    original = LocaliserStage.find
    monkeypatch.setattr(LocaliserStage, "find", lambda self, volume, spacing: _nothing(original(self, volume, spacing)))
    code = run_predict(PredictConfig(weights_dir=weights, device="cpu", mode="fast", progress=False),
                       tmp_path / "in", tmp_path / "out")
    assert code == 0
    record = json.loads((tmp_path / "out" / "predict_log.jsonl").read_text().splitlines()[-1])
    assert record["two_stage"] is True and "localiser" in record["stages"]
    roi = record["roi"]
    assert roi["localiser_s"] > 0 and "no organ" in roi["fallback"]
    assert roi["region_fraction"] == 1.0 and roi["network_passes_saved"] == 0
    assert roi["network_passes_whole_volume"] == record["network_passes"] > 0


def _nothing(found):
    from app.inference.localiser import Found
    return Found(np.zeros_like(found.organs), found.bbox)


@pytest.mark.parametrize("mode", ["accurate", "fast"])
def test_exact_tiles_give_the_whole_volume_mask_inside_the_region(tiny_weights, tmp_path, mode, monkeypatch):
    """With nnU-Net's own tiles, the two-stage mask equals the whole-volume mask voxel for voxel
    where it is computed, and is background elsewhere. (Compared before postprocessing: a random
    network's components cross the region's edge, so which is largest may differ there.)"""
    from app.inference import predictor as predictor_module
    from app.inference.predictor import Predictor
    from app.inference.stages import StageTimer
    from tests.conftest import synthetic_ct
    monkeypatch.setattr(predictor_module, "keep_largest_components", lambda mask, *rules: mask)
    weights = _with_localiser(tiny_weights, tmp_path / "w")
    image = synthetic_ct(size=(300, 280, 200), spacing=(1.1, 1.1, 3.0))   # 330 x 308 x 600 mm: 3 tiles in z
    options = dict(device="cpu", mode=mode, folds=(0,), progress=False, roi_tiles="exact")
    two = Predictor.from_weights(weights, roi=True, **options)
    _finding(two, (slice(1, 4), slice(20, 30), slice(25, 35)))   # near one end of z, in the middle in-plane
    mask_two = two.predict_array(image, StageTimer())
    mask_whole = Predictor.from_weights(weights, roi=False, **options).predict_array(image, StageTimer())
    roi = two.last_roi
    assert roi["network_passes_saved"] > 0 and roi["fallback"] is None
    box = tuple(slice(a, b) for a, b in roi["output_box"])
    assert np.array_equal(mask_two[box], mask_whole[box])
    outside = np.ones(mask_two.shape, bool)
    outside[box] = False
    assert not mask_two[outside].any()
    assert mask_two[box].any() and mask_whole[outside].any()   # the comparison is not between empty masks


def _dice(a, b):
    return 2 * np.logical_and(a, b).sum() / max(1, a.sum() + b.sum())


def test_two_stage_against_whole_volume_on_the_real_ct():
    """The shipped demo weights and their localiser on the bundled CT: the region holds every
    reference organ voxel, and the two-stage mask agrees with whole-volume prediction by the same
    folds (equal where the region is the whole grid, as it is for the demo plan's large patch)."""
    from app.inference import io
    from app.inference.localiser import region_for
    from app.inference.orientation import reorient
    from app.inference.predictor import Predictor
    from app.inference.stages import StageTimer
    weights = ROOT / "weights"
    image = sitk.ReadImage(str(REAL_CT))
    two = Predictor.from_weights(weights, device="cpu", mode="fast", progress=False)
    assert two.localiser is not None, "the demo weights ship a localiser"
    oriented = reorient(image, two.plan.training_orientation)
    volume, spacing = io.image_array(oriented), io.spacing_zyx(oriented)
    case = two.preprocess(volume, spacing, StageTimer())
    region = region_for(two.localiser.find(volume, spacing), case, two.plan, two.config.roi_margin_mm,
                        two.mode.step_size, exact=False)
    reference = sitk.GetArrayFromImage(reorient(sitk.ReadImage(str(REAL_LABELS)), two.plan.training_orientation))
    organs = reference[case.bbox] > 0
    assert organs[region.crop_box].sum() == organs.sum() > 0
    assert region.crop_box[1] != slice(0, organs.shape[1]) or region.crop_box[2] != slice(0, organs.shape[2])
    mask_two = two.predict_array(image, StageTimer())
    whole = Predictor.from_weights(weights, device="cpu", mode="fast", roi=False, progress=False)
    mask_whole = whole.predict_array(image, StageTimer())
    if two.last_roi["region_fraction"] == 1.0:
        assert np.array_equal(mask_two, mask_whole)
    for label in (1, 2, 3, 4):
        assert _dice(mask_two == label, mask_whole == label) >= 0.9, label


def test_stray_localiser_pieces_are_dropped_and_organs_kept():
    from app.inference.localiser import without_strays
    labels = np.zeros((20, 20, 20), dtype=np.uint8)
    labels[2:12, 2:12, 2:12] = 1        # a liver of 1000 voxels
    labels[15:17, 15:17, 15:17] = 1     # a stray of 8 (under 10 %)
    labels[2:7, 14:19, 2:7] = 2         # two kidneys of 125 and 8 voxels (an atrophic one): both kept
    labels[16:18, 2:4, 14:16] = 2
    labels[10, 17, 17] = 2              # a third kidney piece of 1 voxel, under 10 %: dropped
    labels[19, 0, 0] = 3                # a one-voxel spleen is that organ's largest piece: kept
    organs = without_strays(labels)
    assert organs.sum() == 1000 + 125 + 8 + 1
    assert not organs[10, 17, 17]
    assert not organs[15:17, 15:17, 15:17].any()


def test_two_stage_options_from_the_command_line():
    import argparse
    from app.inference.cli import add_arguments, config_from_args
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    base = ["-i", "in", "-o", "out"]
    config = config_from_args(parser.parse_args(base + ["--roi", "--roi-margin-mm", "12", "--roi-tiles", "exact"]))
    assert (config.roi, config.roi_margin_mm, config.roi_tiles) == (True, 12.0, "exact")
    assert config.resolved_mode().roi is True and config.resolved_mode().name == "accurate"
    fast = config_from_args(parser.parse_args(base + ["--mode", "fast"]))
    assert fast.roi is None and fast.resolved_mode().roi is True
    # the tiling each mode takes: accurate keeps nnU-Net's own tiles, fast the fewest
    assert fast.resolved_mode().roi_tiles == "fewest"
    assert config_from_args(parser.parse_args(base + ["--roi"])).resolved_mode().roi_tiles == "exact"
    assert config_from_args(parser.parse_args(base + ["--mode", "fast", "--no-roi"])).resolved_mode().roi is False
    with pytest.raises(SystemExit):
        parser.parse_args(base + ["--roi", "--no-roi"])
    with pytest.raises(ValueError, match="margin"):
        config_from_args(parser.parse_args(base + ["--roi-margin-mm", "-1"])).resolved_mode()


def test_a_localiser_of_another_orientation_is_refused(tiny_weights, tmp_path):
    from app.inference.weights import LOCALISER_PLANS, WeightsError, load_weights, sha256_of
    weights = _with_localiser(tiny_weights, tmp_path / "w")
    plans = json.loads((weights / LOCALISER_PLANS).read_text())
    plans["training_orientation"] = "RAS" if plans.get("training_orientation") != "RAS" else "LPS"
    (weights / LOCALISER_PLANS).write_text(json.dumps(plans))
    manifest = json.loads((weights / "MANIFEST.json").read_text())
    manifest["files"][LOCALISER_PLANS] = sha256_of(weights / LOCALISER_PLANS)
    (weights / "MANIFEST.json").write_text(json.dumps(manifest))
    with pytest.raises(WeightsError, match="orientation"):
        load_weights(weights)


def test_exporting_folds_again_drops_a_stale_localiser(tiny_v1_model, tmp_path):
    from app.weights_export import LOCALISER_FILES, export_model_folder
    out = export_model_folder(tiny_v1_model, tmp_path / "w")
    for name in LOCALISER_FILES:
        (out / name).write_text("from an earlier export")
    export_model_folder(tiny_v1_model, out)
    assert not any((out / name).exists() for name in LOCALISER_FILES)
    assert not set(LOCALISER_FILES) & set(json.loads((out / "MANIFEST.json").read_text())["files"])


def test_the_localiser_is_read_only_when_two_stages_run(tiny_weights, tmp_path):
    from app.inference.predictor import Predictor
    weights = _with_localiser(tiny_weights, tmp_path / "w")
    one_stage = Predictor.from_weights(weights, device="cpu", mode="accurate", progress=False)
    assert one_stage.localiser is None and one_stage.weights.localiser is None
    two_stages = Predictor.from_weights(weights, device="cpu", mode="fast", progress=False)
    assert two_stages.localiser is not None and two_stages.weights.localiser is not None
    assert set(two_stages.weights.localiser.state) == set(one_stage.weights.fold_states[0])
