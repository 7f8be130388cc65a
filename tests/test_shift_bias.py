"""bench.shift_bias renders the generator's own phantom, and a variant changes only the image."""
import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from app.synth.phantom import make_phantom
from bench.shift_bias import VARIANTS, render_variant, score, summary_row


def test_as_drawn_is_the_generators_phantom():
    image, labels, _ = render_variant(7, 1, VARIANTS["as drawn"][0], "small")
    phantom = make_phantom(7, 1, "small")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), phantom.image)
    np.testing.assert_array_equal(labels, phantom.labels)
    assert image.GetSpacing() == tuple(float(v) for v in phantom.grid.spacing)


def test_a_blurrier_variant_keeps_the_anatomy_and_softens_the_image():
    sharp, labels, look = render_variant(7, 1, VARIANTS["as drawn"][0], "small")
    blurred, labels_b, look_b = render_variant(7, 1, VARIANTS["blur +1.5 mm"][0], "small")
    np.testing.assert_array_equal(labels, labels_b)
    assert look_b.psf_mm == look.psf_mm + 1.5
    a, b = (sitk.GetArrayFromImage(x).astype(np.float32) for x in (sharp, blurred))
    # the liver's edge is less steep (gradients smoothed over a voxel, so that noise, drawn after
    # the blur, does not dominate), and the image's mean stays
    edge = ndimage.binary_dilation(labels == 1) & ~ndimage.binary_erosion(labels == 1)
    steep = [ndimage.gaussian_gradient_magnitude(x, 1.0)[edge].mean() for x in (a, b)]
    assert steep[1] < 0.95 * steep[0]
    assert abs(b.mean() - a.mean()) < 5


def test_score_counts_volumes_and_dice():
    ref = np.zeros((4, 4, 4), np.uint8)
    ref[:2] = 1
    pred = np.zeros_like(ref)
    pred[:1] = 1
    s = score(pred, ref, spacing=(10.0, 5.0, 10.0))      # 0.5 ml a voxel
    assert s.dsc[1] == 2 * 16 / (16 + 32) and s.volume_ml[1] == (8.0, 16.0)
    assert s.dsc[2] == 1.0 and s.volume_ml[2] == (0.0, 0.0)


def test_summary_ratio_weighs_cases_by_volume_not_voxel_count():
    coarse_ref = np.zeros((2, 2, 2), np.uint8)
    coarse_ref[:] = 1                                   # 8 voxels of 1 ml: predicted all
    fine_ref = np.ones((4, 4, 4), np.uint8)             # 64 voxels of 0.125 ml: predicted half
    fine_pred = fine_ref.copy()
    fine_pred[:2] = 0
    scores = [score(coarse_ref, coarse_ref, (10.0, 10.0, 10.0)), score(fine_pred, fine_ref, (5.0, 5.0, 5.0))]
    liver_cell = summary_row("x", scores).split("|")[2]
    assert "(0.75)" in liver_cell                       # (8 + 4) / (8 + 8) ml; by voxels it would be 0.56
