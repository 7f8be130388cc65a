"""What SimpleITK reads too kindly, checked from the NIfTI header itself:

- a truncated file or a header with missing voxel data (ITK fills the gap with zeros);
- zero, negative or NaN spacing (ITK reads them as 1 or as their absolute value);
- a sheared (non-orthogonal) grid, which ITK refuses although the file is valid: it is read
  with nibabel, predicted on its nearest orthonormal grid, and the mask is written back with
  the input's own affine, so it lies on exactly the input's voxels.
"""
from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


class InvalidNifti(ValueError):
    """The file is not a complete, valid NIfTI volume; the message says why."""


def _uncompressed_length(path: Path) -> int:
    """Bytes a .gz file inflates to; raises InvalidNifti when the stream ends early."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    total = 0
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            try:
                total += len(inflater.decompress(block))
            except zlib.error as err:
                raise InvalidNifti(f"corrupt gzip data ({err})") from None
            if inflater.eof:
                break
    if not inflater.eof:
        raise InvalidNifti("truncated: the gzip stream ends early")
    return total


@dataclass(frozen=True)
class RawHeader:
    shape: tuple[int, ...]
    bitpix: int
    vox_offset: int
    pixdim: tuple[float, float, float]
    sform_code: int
    sform: np.ndarray  # 3 x 4


# (sizeof_hdr, int type, float type, offsets of dim, bitpix, pixdim, vox_offset, sform_code, srow_x)
_LAYOUTS = {348: ("h", "f", 40, 72, 76, 108, 254, 280), 540: ("q", "d", 16, 14, 104, 168, 348, 400)}


def _raw_header(path: Path) -> RawHeader:
    """The header exactly as stored (NIfTI-1 or -2, either byte order), parsed with struct:
    nibabel's loader would quietly turn a zero spacing into 1, and importing it costs start-up."""
    import gzip
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read(540)
    except (OSError, EOFError) as err:
        raise InvalidNifti(f"not a readable NIfTI file ({err})") from None
    for order in "<>":
        size = struct.unpack_from(order + "i", raw)[0] if len(raw) >= 4 else 0
        if size in _LAYOUTS and len(raw) >= size:
            break
    else:
        raise InvalidNifti("not a NIfTI file (no valid header)")
    dim_t, float_t, dim_at, bitpix_at, pixdim_at, offset_at, sform_at, srow_at = _LAYOUTS[size]
    dims = struct.unpack_from(f"{order}8{dim_t}", raw, dim_at)
    if not 1 <= dims[0] <= 7:
        raise InvalidNifti(f"invalid header: {dims[0]} dimensions")
    offset = struct.unpack_from(order + float_t if size == 348 else order + "q", raw, offset_at)[0]
    code_t = "h" if size == 348 else "i"
    return RawHeader(
        shape=tuple(int(d) for d in dims[1:1 + dims[0]]),
        bitpix=struct.unpack_from(order + "h", raw, bitpix_at)[0],
        vox_offset=int(offset),
        pixdim=struct.unpack_from(f"{order}3{float_t}", raw, pixdim_at + struct.calcsize(float_t)),
        sform_code=struct.unpack_from(order + code_t, raw, sform_at)[0],
        sform=np.array(struct.unpack_from(f"{order}12{float_t}", raw, srow_at)).reshape(3, 4),
    )


def check_header(path: Path) -> None:
    """Completeness and spacing, before SimpleITK reads the voxels."""
    header = _raw_header(path)
    spacing = [float(v) for v in header.pixdim]
    if not all(math.isfinite(s) and s > 0 for s in spacing):
        raise InvalidNifti(f"invalid voxel spacing {tuple(spacing)} in the header; every spacing must be a positive number")
    if header.sform_code > 0:
        norms = np.linalg.norm(header.sform[:, :3], axis=0)
        if not np.all(np.isfinite(norms)) or np.any(norms <= 0):
            raise InvalidNifti(f"invalid sform: voxel axis lengths {tuple(np.round(norms, 4))}")
    needed = header.vox_offset + int(np.prod(header.shape)) * header.bitpix // 8
    length = _uncompressed_length(path) if path.name.lower().endswith(".gz") else path.stat().st_size
    if length < needed:
        raise InvalidNifti(f"truncated: {length} bytes of image data and header, {needed} expected for {header.shape}")


def read_sheared(path: Path) -> tuple[sitk.Image, np.ndarray]:
    """A NIfTI whose voxel axes are not orthogonal: the voxels on the nearest orthonormal grid
    (same spacing and origin) for prediction, and the file's affine for writing the mask."""
    import nibabel as nib
    image = nib.load(str(path))
    affine = image.affine
    columns = affine[:3, :3]
    spacing = np.linalg.norm(columns, axis=0)
    u, _, vt = np.linalg.svd(columns / spacing)
    direction = RAS_TO_LPS @ (u @ vt)
    data = np.asanyarray(image.dataobj)
    if data.ndim != 3:
        raise InvalidNifti(f"a {data.ndim}D image; a 3D CT volume is expected")
    itk = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    itk.SetSpacing([float(s) for s in spacing])
    itk.SetDirection([float(v) for v in direction.flatten()])
    itk.SetOrigin([float(v) for v in RAS_TO_LPS @ affine[:3, 3]])
    return itk, affine


def write_with_affine(mask_zyx: np.ndarray, affine: np.ndarray, path: Path) -> None:
    import nibabel as nib
    image = nib.Nifti1Image(np.ascontiguousarray(mask_zyx.transpose(2, 1, 0)).astype(np.uint8), affine)
    image.set_sform(affine, code=1)
    image.set_qform(None, code=0)
    nib.save(image, str(path))
