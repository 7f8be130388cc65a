"""The struct-based NIfTI header reader against nibabel's (NIfTI-1 and -2, both byte orders)."""
from __future__ import annotations

import numpy as np
import pytest

from app.inference.nifti import InvalidNifti, _raw_header, check_header


@pytest.mark.parametrize("version,endian,suffix", [(1, "<", ".nii.gz"), (2, "<", ".nii"), (1, ">", ".nii"),
                                                    (2, ">", ".nii.gz")])
def test_raw_header_matches_nibabel(version, endian, suffix, tmp_path):
    import nibabel as nib
    affine = np.array([[-0.8, 0.1, 0, 10], [0, 0.75, 0, -20], [0, 0, 2.5, 30], [0, 0, 0, 1]])
    data = np.arange(7 * 6 * 5, dtype=np.int16).reshape(7, 6, 5)
    cls = nib.Nifti1Image if version == 1 else nib.Nifti2Image
    image = cls(data, affine)
    if endian == ">":
        image = cls(data.astype(">i2"), affine, header=image.header.as_byteswapped(">"))
    path = tmp_path / f"case{suffix}"
    nib.save(image, str(path))
    loaded = nib.load(str(path))
    ours, theirs = _raw_header(path), loaded.header
    assert ours.shape == (7, 6, 5) and ours.bitpix == 16
    assert ours.vox_offset == loaded.dataobj.offset
    np.testing.assert_allclose(ours.pixdim, theirs["pixdim"][1:4], rtol=1e-6)
    assert ours.sform_code == int(theirs["sform_code"])
    np.testing.assert_allclose(ours.sform, theirs.get_sform()[:3], rtol=1e-6)
    check_header(path)  # complete and valid


def test_not_nifti_and_truncated(tmp_path):
    junk = tmp_path / "junk.nii"
    junk.write_bytes(b"\x00" * 600)
    with pytest.raises(InvalidNifti, match="not a NIfTI"):
        check_header(junk)
    import nibabel as nib
    path = tmp_path / "short.nii"
    nib.save(nib.Nifti1Image(np.zeros((20, 20, 20), np.int16), np.eye(4)), str(path))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(InvalidNifti, match="truncated"):
        check_header(path)
