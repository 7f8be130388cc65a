"""A 512 x 512 x 1000 int16 CT (about 500 MB of voxels): predict.sh writes a complete mask on
its grid with a bounded peak memory. Marked `slow`; it runs in `make test` all the same. The
tiny plan's 5 mm spacing keeps the network part small: the cost is read, resample, export."""
from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import ROOT
from hardening_helpers import FAST_ARGS, assert_complete_gzip_nifti, predict_env, same_grid


def _register_slow_marker() -> None:
    """Register `slow` from here (no conftest or ini change): pytest otherwise warns."""
    config = getattr(pytest.mark, "_config", None)
    if config is not None and not any(line.startswith("slow") for line in config.getini("markers")):
        config.addinivalue_line("markers", "slow: a large volume; seconds to minutes")


_register_slow_marker()
pytestmark = pytest.mark.slow

SIZE = (512, 512, 1000)              # x, y, z
PEAK_RSS_LIMIT_BYTES = 6 * 1024**3   # the CT is 0.5 GB as int16, 1 GB as float32
# Peak resident memory of the predict process, read by a parent that does nothing else.
MEASURE = ("import resource, subprocess, sys\n"
           "code = subprocess.call(sys.argv[1:])\n"
           "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
           "sys.exit(code)\n")


def _write_large_ct(path) -> sitk.Image:
    """Mostly air with a body block and two brighter blocks: built in place as int16, written
    with fast compression."""
    nx, ny, nz = SIZE
    volume = np.full((nz, ny, nx), -1000, dtype=np.int16)
    volume[80:920, 96:416, 64:448] = -80
    volume[300:520, 150:300, 100:250] = 60
    volume[600:700, 250:330, 300:380] = 250
    image = sitk.GetImageFromArray(volume)
    del volume
    image.SetSpacing((0.78, 0.78, 1.0))
    image.SetOrigin((-200.0, -180.0, -500.0))
    writer = sitk.ImageFileWriter()
    writer.SetFileName(str(path))
    writer.SetUseCompression(True)
    writer.SetCompressionLevel(1)
    writer.Execute(image)
    return image


def test_512x512x1000_volume_memory_bounded_and_mask_complete(tiny_weights, tmp_path):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    start = time.perf_counter()
    _write_large_ct(inputs / "large_0000.nii.gz")
    written = time.perf_counter()
    command = [sys.executable, "-c", MEASURE, "sh", str(ROOT / "predict.sh"),
               "--device", "cpu", "--quiet", *FAST_ARGS]
    result = subprocess.run(command, env=predict_env(inputs, outputs, tiny_weights), capture_output=True,
                            text=True, timeout=900, check=False)
    ran = time.perf_counter()
    assert result.returncode == 0, result.stdout + result.stderr
    peak_kb = int(result.stderr.rsplit("PEAK_RSS_KB", 1)[1].split()[0])
    print(f"write {written - start:.1f} s, predict {ran - written:.1f} s, peak RSS {peak_kb / 1024**2:.2f} GB")
    assert peak_kb * 1024 < PEAK_RSS_LIMIT_BYTES, f"peak RSS {peak_kb / 1024**2:.2f} GB"

    mask_path = outputs / "large.nii.gz"
    assert_complete_gzip_nifti(mask_path)
    mask = sitk.ReadImage(str(mask_path))
    assert mask.GetPixelID() == sitk.sitkUInt8
    assert same_grid(_grid_of(mask), _grid_of(inputs / "large_0000.nii.gz"))
    assert set(np.unique(sitk.GetArrayViewFromImage(mask)).tolist()) <= set(range(5))


def _grid_of(source) -> sitk.Image:
    """An image with the grid of `source` (an image, or a file read header-only) and no voxels
    to speak of: size is compared separately by same_grid, so it is carried in the size."""
    if not isinstance(source, sitk.Image):
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(source))
        reader.ReadImageInformation()
        source = reader
    grid = sitk.Image([1, 1, 1], sitk.sitkUInt8)
    grid.SetSpacing(source.GetSpacing())
    grid.SetOrigin(source.GetOrigin())
    grid.SetDirection(source.GetDirection())
    size = tuple(source.GetSize())
    assert size == SIZE, f"size {size}, expected {SIZE}"
    return grid
