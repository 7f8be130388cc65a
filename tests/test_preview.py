"""The PNG preview: size, panels, colours where the organs are, CT greys elsewhere, orientation."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from app.labels import ORGANS
from app.preview import BACKGROUND, blend, canvas_size, render_preview, to_lps, window, write_preview
from conftest import REAL_CT, REAL_LABELS, ROOT

COLOUR = {organ.name: organ.rgb for organ in ORGANS}
SOFT = 40  # HU: the window's level, a mid grey


def phantom(size=(60, 50, 20), spacing=(1.5, 1.5, 4.0)):
    """Soft tissue in air, with a 'liver' block at the patient's right and front and a 'spleen'
    block at the patient's left and back. Identity direction: x runs to the left, y to the back."""
    nx, ny, nz = size
    ct = np.full((nz, ny, nx), -1000, np.int16)
    ct[2:-2, 5:-5, 5:-5] = SOFT
    mask = np.zeros(ct.shape, np.uint8)
    mask[4:16, 10:22, 10:25] = 1   # right (small x), anterior (small y)
    mask[4:16, 30:40, 38:50] = 3   # left, posterior
    image = sitk.GetImageFromArray(ct)
    image.SetSpacing(spacing)
    image.SetOrigin((-40.0, -30.0, 10.0))
    return image, mask


def panel_pixels(preview, view):
    left, top, right, bottom = preview.panels[view]
    return np.asarray(preview.image)[top:bottom, left:right]


def colour_mask(pixels, rgb, tolerance=1):
    return (np.abs(pixels.astype(int) - np.asarray(rgb)) <= tolerance).all(axis=-1)


def test_png_has_the_expected_size_and_three_panels(tmp_path):
    image, mask = phantom()
    path = tmp_path / "case_001.png"
    write_preview(image, mask, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case_001.png"]  # no temporary left
    with Image.open(path) as png:
        assert png.format == "PNG" and png.mode == "RGB"
        assert png.size == canvas_size()
        pixels = np.asarray(png)
    preview = render_preview(image, mask, "case_001")
    assert np.array_equal(pixels, np.asarray(preview.image))
    boxes = [preview.panels[v] for v in ("axial", "coronal", "sagittal")]
    width, height = canvas_size()
    for left, top, right, bottom in boxes:
        assert 0 <= left < right <= width and 0 <= top < bottom <= height
    assert boxes[0][2] <= boxes[1][0] and boxes[1][2] <= boxes[2][0]  # side by side, no overlap


def test_organ_colours_where_the_mask_has_organs_and_ct_greys_elsewhere():
    image, mask = phantom()
    preview = render_preview(image, mask)
    grey = int(window(np.array([SOFT]))[0])
    assert grey in (127, 128)
    liver, spleen = blend(grey, COLOUR["liver"]), blend(grey, COLOUR["spleen"])
    for view in ("axial", "coronal", "sagittal"):
        pixels = panel_pixels(preview, view)
        is_liver, is_spleen = colour_mask(pixels, liver), colour_mask(pixels, spleen)
        is_grey = (pixels[..., 0] == pixels[..., 1]) & (pixels[..., 1] == pixels[..., 2])
        assert is_liver.any() or is_spleen.any(), view
        assert (is_liver | is_spleen | is_grey).all(), view  # nothing but organ colours and greys
        for organ in ("kidney", "pancreas"):  # absent from the mask, absent from the panels
            assert not colour_mask(pixels, blend(grey, COLOUR[organ]), 3).any()
        assert (pixels[is_grey][:, 0] == 0).any()  # air is black
        assert (pixels[is_grey][:, 0] == grey).any()  # soft tissue is the window's mid grey
    # The legend shows every organ's colour in full.
    legend = np.asarray(preview.image)[-30:]
    for rgb in COLOUR.values():
        assert colour_mask(legend, rgb, 0).any()


def test_radiological_orientation():
    """Axial: anterior up, the patient's right on the image's left. Coronal: superior up."""
    image, mask = phantom()
    preview = render_preview(image, mask)
    grey = int(window(np.array([SOFT]))[0])
    axial = panel_pixels(preview, "axial")
    rows_l, cols_l = np.nonzero(colour_mask(axial, blend(grey, COLOUR["liver"])))
    rows_s, cols_s = np.nonzero(colour_mask(axial, blend(grey, COLOUR["spleen"])))
    assert cols_l.mean() < axial.shape[1] / 2 < cols_s.mean()  # liver (patient's right) on the left
    assert rows_l.mean() < rows_s.mean()                        # liver (anterior) above
    coronal = panel_pixels(preview, "coronal")
    rows, _ = np.nonzero(colour_mask(coronal, blend(grey, COLOUR["liver"])))
    # The organs fill z 4..15 of 20 slices (z runs inferior to superior): nearer the top.
    assert rows.mean() < coronal.shape[0] / 2


def test_same_physical_content_gives_the_same_preview_whatever_the_voxel_order():
    image, mask = phantom()
    labels = sitk.GetImageFromArray(mask)
    labels.CopyInformation(image)
    first = render_preview(image, mask)
    for flip, order in (((True, True, False), (0, 1, 2)), ((False, True, True), (2, 0, 1))):
        other = sitk.PermuteAxes(sitk.Flip(image, flip), order)
        other_labels = sitk.PermuteAxes(sitk.Flip(labels, flip), order)
        assert other.GetDirection() != image.GetDirection()
        # The LPS view is exactly what SimpleITK's DICOMOrient gives.
        view, spacing = to_lps(sitk.GetArrayViewFromImage(other), other)
        oriented = sitk.DICOMOrient(other, "LPS")
        assert np.array_equal(view, sitk.GetArrayViewFromImage(oriented))
        assert np.allclose(spacing, oriented.GetSpacing()[::-1])
        again = render_preview(other, sitk.GetArrayFromImage(other_labels))
        assert again.panels == first.panels and again.slices == first.slices
        for view in again.panels:  # the header differs: it gives the stored size and spacing
            assert np.array_equal(panel_pixels(again, view), panel_pixels(first, view))


def test_physical_aspect_ratio():
    image, mask = phantom(size=(80, 80, 10), spacing=(0.8, 0.8, 8.0))  # 64 x 64 x 80 mm
    preview = render_preview(image, np.zeros_like(mask))
    sizes = {v: (r - l, b - t) for v, (l, t, r, b) in preview.panels.items()}
    assert sizes["axial"][0] == sizes["axial"][1]
    for view in ("coronal", "sagittal"):  # 80 mm high, 64 mm wide
        width, height = sizes[view]
        assert height / width == pytest.approx(80 / 64, rel=0.02)
    assert sizes["axial"][0] == sizes["coronal"][0]  # one scale for every panel


def test_empty_mask_shows_the_middle_of_the_volume(tmp_path):
    image, mask = phantom()
    empty = np.zeros_like(mask)
    write_preview(image, empty, tmp_path / "empty.png")
    preview = render_preview(image, empty)
    assert preview.slices == {"axial": 10, "coronal": 25, "sagittal": 30}
    assert all(v == 0 for v in preview.volumes_ml.values())
    for view in preview.panels:
        pixels = panel_pixels(preview, view)
        assert (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all()


def test_mask_of_another_shape_is_refused(tmp_path):
    image, mask = phantom()
    with pytest.raises(ValueError, match="mask shape"):
        write_preview(image, mask[:-1], tmp_path / "bad.png")
    assert not list(tmp_path.iterdir())


def test_works_without_home_as_any_user(tmp_path):
    """No HOME and no writable cwd: Pillow only, nothing written beside the PNG."""
    script = ("import numpy as np, SimpleITK as sitk, sys; from pathlib import Path;"
              "from app.preview import write_preview;"
              "im = sitk.GetImageFromArray(np.zeros((4, 5, 6), np.int16));"
              "write_preview(im, np.zeros((4, 5, 6), np.uint8), Path(sys.argv[1]));"
              "assert 'matplotlib' not in sys.modules")
    env = {k: v for k, v in os.environ.items() if k not in ("HOME", "MPLCONFIGDIR", "XDG_CACHE_HOME")}
    env["PYTHONPATH"] = str(ROOT)
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run([sys.executable, "-c", script, str(out / "p.png")], env=env, cwd="/", check=True, timeout=60)
    assert [p.name for p in out.iterdir()] == ["p.png"]


@pytest.mark.skipif(not REAL_CT.exists(), reason="example CT missing")
def test_real_example_liver_on_the_left_and_pancreas_in_front_of_the_kidneys():
    image = sitk.ReadImage(str(REAL_CT))
    mask = sitk.GetArrayFromImage(sitk.ReadImage(str(REAL_LABELS)))
    preview = render_preview(image, mask)
    axial = panel_pixels(preview, "axial").astype(int)
    width = axial.shape[1]

    def where(name):
        # Blended over any grey g: pixel - ALPHA*rgb is grey; find pixels whose offset matches.
        from app.preview import ALPHA
        rest = axial - ALPHA * np.asarray(COLOUR[name])
        spread = rest.max(axis=-1) - rest.min(axis=-1)
        return np.nonzero(spread <= 1.0)

    rows_l, cols_l = where("liver")
    rows_s, cols_s = where("spleen")
    rows_p, _ = where("pancreas")
    rows_k, _ = where("kidney")
    assert len(cols_l) > 1000 and len(cols_s) > 100 and len(rows_p) > 20 and len(rows_k) > 100
    assert cols_l.mean() < width / 2 < cols_s.mean()  # liver on the image's left: radiological
    assert rows_p.mean() < rows_k.mean()              # pancreas in front of the kidneys: anterior up
    assert tuple(np.asarray(preview.image)[2, 2]) == BACKGROUND
