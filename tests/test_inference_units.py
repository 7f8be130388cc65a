"""The inference path's pieces against nnU-Net v1's own functions (the oracle)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from app.inference.postprocess import keep_largest_components
from app.inference.resample import resample_argmax, resample_image, separate_z_axis
from app.inference.sliding_window import flip_sets, gaussian_importance, padding_to_patch, tile_starts


@pytest.mark.parametrize("patch,shape,step", [((64, 64, 64), (67, 64, 73), 0.5), ((48, 96, 80), (200, 96, 311), 0.5),
                                              ((32, 32, 32), (32, 150, 33), 0.7), ((80, 192, 160), (134, 379, 458), 0.5)])
def test_tile_starts_match_v1(patch, shape, step):
    from nnunet.network_architecture.neural_network import SegmentationNetwork
    assert tile_starts(patch, shape, step) == SegmentationNetwork._compute_steps_for_sliding_window(patch, shape, step)


@pytest.mark.parametrize("patch", [(64, 64, 64), (48, 96, 80), (80, 192, 160)])
def test_gaussian_matches_v1(patch):
    from nnunet.network_architecture.neural_network import SegmentationNetwork
    expected = SegmentationNetwork._get_gaussian(patch, 1.0 / 8)
    np.testing.assert_allclose(gaussian_importance(patch), expected, rtol=1e-5, atol=1e-7)


def test_padding_matches_batchgenerators():
    from batchgenerators.augmentations.utils import pad_nd_image
    data = np.ones((1, 3, 70, 21), dtype=np.float32)
    padded, slicer = pad_nd_image(data, (32, 64, 64), "constant", {"constant_values": 0}, True)
    ours = padding_to_patch(data.shape[1:], (32, 64, 64))
    assert [s.start for s in slicer[1:]] == [before for before, _ in ours]
    assert padded.shape[1:] == tuple(s + b + a for s, (b, a) in zip(data.shape[1:], ours))


def test_flip_sets():
    assert len(flip_sets((0, 1, 2), True)) == 8 and flip_sets((0, 1, 2), False) == [()]
    assert sorted(flip_sets((1, 2), True)) == [(), (1,), (1, 2), (2,)]


@pytest.mark.parametrize("shape,spacing,target", [
    ((20, 50, 44), (4.5, 0.8, 0.8), (2.5, 1.5, 1.5)),   # separate z along axis 0
    ((30, 40, 36), (3.0, 3.0, 3.0), (3.5, 3.5, 3.5)),   # isotropic, downsampling
    ((30, 40, 36), (3.0, 3.0, 3.0), (2.0, 2.5, 2.0)),   # isotropic, upsampling
    ((40, 30, 12), (0.7, 0.7, 5.0), (1.0, 1.0, 3.0)),   # separate axis 2
])
def test_image_resampling_matches_v1(shape, spacing, target):
    from nnunet.preprocessing.preprocessing import resample_patient
    rng = np.random.default_rng(0)
    data = (rng.standard_normal(shape) * 300).astype(np.float32)
    new_shape = np.round(np.array(spacing) / np.array(target) * np.array(shape)).astype(int)
    expected, _ = resample_patient(data[None], None, np.array(spacing), np.array(target), 3, 0,
                                   force_separate_z=None, order_z_data=0, order_z_seg=0)
    ours = resample_image(data, new_shape, separate_z_axis(spacing, target))
    np.testing.assert_allclose(ours, expected[0], rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("axis", [None, 0, 2])
def test_probability_resampling_matches_v1(axis):
    from nnunet.preprocessing.preprocessing import resample_data_or_seg
    rng = np.random.default_rng(1)
    probs = torch.softmax(torch.from_numpy(rng.standard_normal((5, 17, 23, 19)).astype(np.float32) * 3), 0)
    new_shape = (40, 31, 50)
    expected = resample_data_or_seg(probs.numpy(), new_shape, False, axis=None if axis is None else [axis],
                                    order=1, do_separate_z=axis is not None, order_z=0).argmax(0)
    ours = resample_argmax(probs, new_shape, axis, max_chunk_bytes=5 * 31 * 50 * 4 * 7)  # several chunks
    assert (ours == expected).mean() > 0.9999


@pytest.mark.parametrize("axis, new_shape", [(0, (40, 31, 50)), (2, (40, 31, 50)),
                                             (0, (9, 31, 50))])   # thick slices: fewer along z
def test_linear_along_the_separate_axis_is_v1s_order_z_1(axis, new_shape):
    """Plans whose segmentation_export_params ask for interpolation_order_z 1: v1 resamples each
    slice linearly, then linearly along the separate axis, which the export does as 3-D linear."""
    from nnunet.preprocessing.preprocessing import resample_data_or_seg
    rng = np.random.default_rng(3)
    probs = torch.softmax(torch.from_numpy(rng.standard_normal((5, 17, 23, 19)).astype(np.float32) * 3), 0)
    expected = resample_data_or_seg(probs.numpy(), new_shape, False, axis=[axis], order=1, do_separate_z=True,
                                    order_z=1).argmax(0)
    nearest = resample_data_or_seg(probs.numpy(), new_shape, False, axis=[axis], order=1, do_separate_z=True,
                                   order_z=0).argmax(0)
    ours = resample_argmax(probs, new_shape, None, max_chunk_bytes=5 * 31 * 50 * 4 * 7)
    assert (ours == expected).mean() > 0.9999
    assert (nearest != expected).mean() > 0.05  # the setting matters on these probabilities


def test_largest_component_matches_v1():
    from nnunet.postprocessing.connected_components import remove_all_but_the_largest_connected_component
    rng = np.random.default_rng(2)
    mask = (rng.random((30, 40, 50)) < 0.3).astype(np.uint8) * rng.integers(1, 5, (30, 40, 50)).astype(np.uint8)
    expected, _, _ = remove_all_but_the_largest_connected_component(mask.copy(), [1, 2, 4], (1.0, 1.0, 1.0))
    ours = keep_largest_components(mask.copy(), [1, 2, 4])
    np.testing.assert_array_equal(ours, expected)
    assert (ours == 3).sum() == (mask == 3).sum()  # a label not listed is untouched


@pytest.mark.parametrize("max_batch", [1, 3, 8, 64])
def test_predict_tiles_equals_one_flip_at_a_time(max_batch):
    """However the flipped samples are split into network calls, the result is v1's loop: each
    tile, each flip, each fold run alone, the flip undone, folds summed, flips averaged."""
    from app.inference.network import predict_tiles

    torch.manual_seed(0)
    networks = [torch.nn.Sequential(torch.nn.Conv3d(1, 3, 3, padding=1), torch.nn.Conv3d(3, 3, 1)).eval()
                for _ in range(2)]
    tiles = torch.randn(2, 1, 6, 8, 10)
    flips = flip_sets((0, 1, 2), True)
    got = predict_tiles(networks, tiles, flips, None, max_batch)
    expected = torch.zeros(2, 3, 6, 8, 10)
    with torch.no_grad():
        for t in range(2):
            for f in flips:
                x = torch.flip(tiles[t:t + 1], [a + 2 for a in f]) if f else tiles[t:t + 1]
                for net in networks:
                    p = torch.softmax(net(x), 1)
                    expected[t] += (torch.flip(p, [a + 2 for a in f]) if f else p)[0]
    torch.testing.assert_close(got, expected / len(flips), rtol=1e-5, atol=1e-6)


def test_memory_format_by_device():
    from app.inference.network import memory_format

    assert memory_format(torch.device("cpu")) == torch.channels_last_3d
    assert memory_format(torch.device("cuda")) == torch.contiguous_format


def test_default_network_batch():
    from app.inference.predictor import default_network_batch

    assert default_network_batch(torch.device("cuda"), True) == 2
    assert default_network_batch(torch.device("cpu"), True) == 8
    assert default_network_batch(torch.device("cpu"), False) == 1


def _keep_n_largest_scipy(mask, label, n):
    """An independent rule: scipy's face-connected components, the n largest (ties kept)."""
    from scipy import ndimage
    components, count = ndimage.label(mask == label)
    if count == 0:
        return mask
    sizes = ndimage.sum(np.ones_like(components), components, index=np.arange(1, count + 1))
    threshold = np.sort(sizes)[-min(n, count)]
    out = mask.copy()
    for index, size in enumerate(sizes, start=1):
        if size < threshold:
            out[components == index] = 0
    return out


def test_paired_organ_keeps_its_two_largest_components():
    """The kidney label keeps two components (one per kidney), the other listed labels one; the
    result equals an independent scipy implementation on a fragmented random mask."""
    from app.inference.postprocess import component_rules
    rng = np.random.default_rng(3)
    mask = (rng.random((30, 40, 50)) < 0.3).astype(np.uint8) * rng.integers(1, 5, (30, 40, 50)).astype(np.uint8)
    labels, counts = component_rules([1, 3])
    assert labels == (1, 3, 2) and counts == {2: 2}
    expected = _keep_n_largest_scipy(_keep_n_largest_scipy(_keep_n_largest_scipy(mask, 1, 1), 3, 1), 2, 2)
    np.testing.assert_array_equal(keep_largest_components(mask.copy(), labels, counts), expected)
    # two kidneys and a small false positive far away: both kidneys stay, the false positive goes
    kidneys = np.zeros((20, 40, 60), np.uint8)
    kidneys[5:15, 10:25, 5:15] = 2
    kidneys[5:15, 10:25, 40:52] = 2
    kidneys[17:19, 35:38, 28:31] = 2
    kept = keep_largest_components(kidneys.copy(), *component_rules([1, 3]))
    assert (kept == 2).sum() == (kidneys == 2).sum() - 18 and kept[18, 36, 29] == 0
    # where postprocessing.json keeps one kidney component, or the rule is off, nnU-Net's rule alone
    assert component_rules([1, 2, 3]) == ((1, 2, 3), {})
    assert component_rules([1, 3], paired_organs=False) == ((1, 3), {})
