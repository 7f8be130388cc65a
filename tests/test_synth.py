"""Synthetic phantoms: files, geometry, anatomy in patient coordinates, HU overlap, determinism."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    task = out / "Task599_Test"
    res = subprocess.run([sys.executable, "-m", "app", "synth", "--out", str(out / "data"), "--cases", "3",
                          "--seed", "7", "--size", "small", "--nnunet-task", str(task)],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return out / "data", task


def _read(path):
    import SimpleITK as sitk
    img = sitk.ReadImage(str(path))
    return img, sitk.GetArrayFromImage(img)


def test_layout_and_nnunet_task(small_set):
    data, task = small_set
    images = sorted((data / "images").glob("*_0000.nii.gz"))
    labels = sorted((data / "labels").glob("*.nii.gz"))
    assert len(images) == len(labels) == 3
    assert [p.name.replace("_0000", "") for p in images] == [p.name for p in labels]
    ds = json.loads((task / "dataset.json").read_text())
    assert ds["labels"] == {"0": "background", "1": "liver", "2": "kidney", "3": "spleen", "4": "pancreas"}
    assert ds["numTraining"] == 3 and ds["modality"] == {"0": "CT"}
    for entry in ds["training"]:
        name = Path(entry["image"]).name[:-len(".nii.gz")]
        assert (task / "imagesTr" / f"{name}_0000.nii.gz").is_file()
        assert (task / "labelsTr" / f"{name}.nii.gz").is_file()
    assert len(json.loads((data / "cases.json").read_text())) == 3


def test_geometry_labels_and_hu(small_set):
    data, _ = small_set
    for lab_path in sorted((data / "labels").glob("*.nii.gz")):
        lab_img, lab = _read(lab_path)
        img, arr = _read(data / "images" / lab_path.name.replace(".nii.gz", "_0000.nii.gz"))
        assert arr.dtype == np.int16 and lab.dtype == np.uint8
        assert img.GetSize() == lab_img.GetSize()
        assert np.allclose(img.GetSpacing(), lab_img.GetSpacing())
        assert np.allclose(img.GetDirection(), lab_img.GetDirection())
        assert set(np.unique(lab)) == {0, 1, 2, 3, 4}
        vox_ml = np.prod(img.GetSpacing()) / 1000
        vol = {k: (lab == k).sum() * vox_ml for k in range(1, 5)}
        assert 900 < vol[1] < 2600, vol      # liver
        assert 150 < vol[2] < 500, vol       # both kidneys
        assert 50 < vol[3] < 450, vol        # spleen
        assert 20 < vol[4] < 200, vol        # pancreas
        assert arr.min() <= -900 and arr.max() >= 300   # air/lung and bone present
        assert -150 < np.median(arr[lab == 1]) < 160


def _centroid_lps(img, mask):
    idx = np.argwhere(mask)[:, ::-1].mean(0)  # (x, y, z) index order
    return np.array(img.TransformContinuousIndexToPhysicalPoint(idx.tolist()))


def test_anatomy_in_patient_coordinates(small_set):
    data, _ = small_set
    for lab_path in sorted((data / "labels").glob("*.nii.gz")):
        img, lab = _read(lab_path)
        liver, spleen, pancreas = (_centroid_lps(img, lab == k) for k in (1, 3, 4))
        # LPS: +x = patient's left, +y = posterior, +z = superior
        assert liver[0] < spleen[0]              # liver on the right, spleen on the left
        assert spleen[1] > pancreas[1]           # spleen posterior to the pancreas
        kid = np.argwhere(lab == 2)
        pts = np.array([img.TransformIndexToPhysicalPoint([int(i) for i in p[::-1]]) for p in kid[::25]])
        assert (pts[:, 0] < -20).any() and (pts[:, 0] > 20).any()   # one kidney each side


def test_directions_vary_and_spacing_ranges():
    from app.synth.phantom import Anatomy, random_grid
    dirs, sps, szs, sizes = set(), [], [], []
    for i in range(40):
        rng = np.random.default_rng([3, i])
        grid = random_grid(rng, Anatomy(rng), "full")
        dirs.add(tuple(np.sign(np.round(np.diag(grid.direction), 3))))
        sps.append(grid.spacing[0])
        szs.append(grid.spacing[2])
        sizes.append(grid.shape[0])
    assert len(dirs) >= 3
    assert 0.6 <= min(sps) and max(sps) <= 1.0
    assert 1.0 <= min(szs) and max(szs) <= 5.0
    assert max(sizes) <= 512


def test_organs_overlap_in_hu():
    """Per-case organ HU ranges overlap: intensity alone cannot separate the organs."""
    from app.synth.phantom import KCORTEX, LIVER, PANCREAS, SPLEEN, Anatomy
    native = [Anatomy(np.random.default_rng([5, i])) for i in range(60)]
    means = {t: [a.hu[t] for a in native] for t in (LIVER, SPLEEN, PANCREAS, KCORTEX)}
    lo = {t: min(v) for t, v in means.items()}
    hi = {t: max(v) for t, v in means.items()}
    assert lo[LIVER] < hi[SPLEEN] and lo[SPLEEN] < hi[LIVER]
    assert lo[PANCREAS] < hi[LIVER] and lo[SPLEEN] < hi[PANCREAS]


def test_deterministic_per_case():
    from app.synth.phantom import make_case
    a = make_case(11, 2, "small")
    b = make_case(11, 2, "small")
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    c = make_case(11, 3, "small")
    assert a[0].shape != c[0].shape or not np.array_equal(a[1], c[1])
