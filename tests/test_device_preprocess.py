"""Preprocessing in torch (the path that runs where the network runs; here on CPU torch) against
nnU-Net v1's own functions: resample_data_or_seg, skimage's resize as v1 calls it, and
GenericPreprocessor.preprocess_test_case end to end."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from app.inference.device_preprocess import nonzero_bbox_torch, preprocess_on_device
from app.inference.preprocess import preprocess
from app.inference.resample_matrix import resample_image_torch, spline_operator
from app.inference.weights import Plan


@pytest.mark.parametrize("n_in,n_out", [(50, 27), (44, 80), (7, 13), (512, 448), (3, 1), (1, 4)])
def test_spline_operator_is_v1_resize_of_an_identity(n_in, n_out):
    from skimage.transform import resize  # v1's resize_fn for images
    expected = resize(np.eye(n_in), (n_out, n_in), order=3, mode="edge", anti_aliasing=False, clip=False)
    np.testing.assert_allclose(spline_operator(n_in, n_out), expected, rtol=0, atol=1e-12)


CASES = {  # shape, new shape, separate axis (None: one 3-D spline)
    "isotropic_down": ((30, 40, 36), (26, 34, 31), None),
    "isotropic_up": ((20, 24, 22), (30, 36, 40), None),
    "separate_z_up_inplane_down": ((12, 50, 44), (22, 27, 23), 0),
    "separate_z_down_inplane_up": ((50, 30, 32), (30, 41, 45), 0),
    "separate_last_axis": ((40, 30, 12), (28, 21, 20), 2),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_torch_resampling_matches_v1(case):
    from nnunet.preprocessing.preprocessing import resample_data_or_seg
    shape, new_shape, axis = CASES[case]
    rng = np.random.default_rng(sum(shape))
    data = (rng.standard_normal(shape) * 400).astype(np.float32)
    data[:, :3] = 1500.0  # a flat bright band: the clip to the input range matters
    expected = resample_data_or_seg(data[None], np.array(new_shape), False, axis=None if axis is None else [axis],
                                    order=3, do_separate_z=axis is not None, order_z=0)[0]
    ours = resample_image_torch(torch.from_numpy(data), new_shape, axis).numpy()
    assert ours.shape == expected.shape
    # float32 matrix products against v1's float64 zoom: a few float32 ulps of the data's range
    assert np.abs(ours - expected).max() <= 2e-6 * np.abs(expected).max()
    assert ours.max() <= data.max() and ours.min() >= data.min()


def test_nonzero_bbox_counts_nan_and_keeps_all_zero_volumes_whole():
    volume = np.zeros((6, 7, 8), dtype=np.float32)
    assert nonzero_bbox_torch(torch.from_numpy(volume)) == (slice(0, 6), slice(0, 7), slice(0, 8))
    volume[1, 2, 3] = np.nan
    volume[4, 5, 3] = -3.0
    assert nonzero_bbox_torch(torch.from_numpy(volume)) == (slice(1, 5), slice(2, 6), slice(3, 4))


@pytest.mark.parametrize("dtype", [np.int16, np.float32, np.uint16])
def test_crop_on_device_equals_the_numpy_crop(dtype):
    from app.inference.device_preprocess import crop_on_device
    from app.inference.preprocess import crop_to_float32
    volume = np.zeros((9, 11, 13), dtype=dtype)
    volume[2:7, 3:9, 1:12] = np.random.default_rng(1).integers(1, 300, (5, 6, 11)).astype(dtype)
    if dtype == np.float32:
        volume[3, 4, 5] = np.nan
    plan = _plan((1.0, 1.0, 1.0), (2, 0, 1), {"mean": 0.0, "sd": 1.0, "percentile_00_5": 0.0, "percentile_99_5": 1.0})
    ours, bbox = crop_on_device(volume, plan, torch.device("cpu"))
    expected, expected_bbox = crop_to_float32(volume, plan)
    assert bbox == expected_bbox and not np.isnan(expected).any()
    np.testing.assert_array_equal(ours.numpy(), expected)


def _ct_file(path, size_xyz, spacing, dtype, seed, nan=False):
    rng = np.random.default_rng(seed)
    nx, ny, nz = size_xyz
    volume = rng.normal(40, 300, (nz, ny, nx)).clip(-1024, 2000)
    volume[:, :4] = 0           # a zero border: v1 crops it away
    volume[:, :, -3:] = 0
    if nan:
        volume[nz // 2, ny // 2, nx // 3] = np.nan
    image = sitk.GetImageFromArray(volume.astype(dtype))
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return image


PLANS = {  # target spacing (network order), transpose_forward, CT file
    "anisotropic_separate_z_int16": ((2.5, 0.8, 0.8), (0, 1, 2), ((60, 52, 30), (0.7, 0.75, 1.5), np.int16, False)),
    "isotropic_upsampled_float_nan": ((1.5, 1.5, 1.5), (0, 1, 2), ((30, 26, 20), (2.0, 2.2, 1.9), np.float32, True)),
    "transposed_downsampled": ((3.0, 2.0, 2.0), (2, 0, 1), ((40, 36, 24), (1.0, 1.0, 2.4), np.int16, False)),
}


@pytest.mark.parametrize("name", PLANS, ids=list(PLANS))
def test_preprocessing_matches_v1_generic_preprocessor(name, tmp_path):
    from nnunet.preprocessing.preprocessing import GenericPreprocessor

    target, transpose_forward, (size, spacing, dtype, nan) = PLANS[name]
    image = _ct_file(tmp_path / "ct_0000.nii.gz", size, spacing, dtype, seed=len(name), nan=nan)
    intensity = {"mean": 60.0, "sd": 170.0, "percentile_00_5": -900.0, "percentile_99_5": 1200.0}
    v1 = GenericPreprocessor({0: "CT"}, {0: False}, list(transpose_forward), {0: intensity})
    expected, _, properties = v1.preprocess_test_case([str(tmp_path / "ct_0000.nii.gz")], np.array(target))
    plan = _plan(target, transpose_forward, intensity)
    volume = sitk.GetArrayViewFromImage(image)
    spacing_zyx = tuple(reversed(image.GetSpacing()))
    for ours in (preprocess_on_device(volume, spacing_zyx, plan, torch.device("cpu")),
                 preprocess(volume, spacing_zyx, plan)):
        data = ours.data.numpy() if isinstance(ours.data, torch.Tensor) else ours.data
        assert data.shape == expected[0].shape and data.dtype == np.float32
        assert np.abs(data - expected[0]).max() <= 1e-5  # normalised units
        assert [[s.start, s.stop] for s in ours.bbox] == [list(b) for b in properties["crop_bbox"]]


def _plan(target, transpose_forward, intensity) -> Plan:
    return Plan.from_json({
        "format_version": 1,
        "network": {"input_channels": 1, "base_num_features": 4, "num_classes": 5,
                    "pool_op_kernel_sizes": [[2, 2, 2]], "conv_kernel_sizes": [[3, 3, 3]] * 2},
        "patch_size": [16, 16, 16], "target_spacing": list(target),
        "transpose_forward": list(transpose_forward),
        "transpose_backward": [int(i) for i in np.argsort(transpose_forward)],
        "normalization": {"scheme": "CT", "mean": intensity["mean"], "sd": intensity["sd"],
                          "lower": intensity["percentile_00_5"], "upper": intensity["percentile_99_5"]},
        "labels": {"0": "background"},
    })


def test_network_input_padding_same_for_tensor_and_array():
    from app.inference.ensemble import _padded_on
    from app.inference.sliding_window import padding_to_patch
    data = np.random.default_rng(0).standard_normal((5, 9, 12)).astype(np.float32)
    pads = padding_to_patch(data.shape, (8, 8, 16))
    cpu = torch.device("cpu")
    np.testing.assert_array_equal(_padded_on(torch.from_numpy(data), pads, cpu).numpy(), _padded_on(data, pads, cpu).numpy())


def test_network_built_on_meta_and_assigned_equals_a_normal_build():
    from app.inference.network import build_network, load_network
    from app.inference.weights import NetworkSpec
    spec = NetworkSpec(1, 4, 5, ((2, 2, 2), (2, 2, 2)), ((3, 3, 3),) * 3)
    torch.manual_seed(0)
    reference = build_network(spec).eval()
    state = {k: v.clone() for k, v in reference.state_dict().items()}
    loaded = load_network(spec, state, torch.device("cpu"))
    assert not any(p.is_meta for p in loaded.parameters())
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x.contiguous(memory_format=torch.channels_last_3d)), reference(x),
                                   rtol=1e-4, atol=1e-5)


def test_first_argmax_is_numpys_argmax_ties_included():
    from app.inference.resample import first_argmax
    rng = np.random.default_rng(4)
    probs = rng.integers(0, 3, (5, 6, 7, 8)).astype(np.float32)  # many ties
    np.testing.assert_array_equal(first_argmax(torch.from_numpy(probs)).numpy(), probs.argmax(0).astype(np.uint8))
