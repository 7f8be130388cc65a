"""One PNG per case: axial, coronal and sagittal slices through the middle of the organs, the CT in
a soft-tissue window, the mask overlaid in one colour per organ, and a legend with the volumes.

Drawn with Pillow only (no matplotlib): nothing is written outside the PNG's own folder, so it
works as any user with HOME unset. The volume is viewed in LPS order, the radiological convention:
axial with anterior up and the patient's right on the image's left, coronal with superior up and
the patient's right on the left, sagittal with superior up and anterior on the left. Every panel
shares one scale in pixels per millimetre, so anisotropic spacing keeps its physical aspect.
"""
from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from app.inference.report import organ_volumes_ml
from app.labels import ORGANS

WINDOW, LEVEL = 400.0, 40.0        # Hounsfield units: the abdominal soft-tissue window
ALPHA = 0.45                       # opacity of the organ colours over the CT
PANEL = 320                        # pixels: each slice is fitted, at one common scale, in a PANEL square
PAD = 16                           # room around each panel for the orientation letters
HEADER = 26                        # title line above the panels
TITLE = 20                         # panel name above each panel
LEGEND = 30                        # legend line below the panels
VIEWS = ("axial", "coronal", "sagittal")
BACKGROUND = (0, 0, 0)
TEXT = (235, 235, 235)
# Orientation letters (top, bottom, left, right) of each view.
LETTERS = {"axial": ("A", "P", "R", "L"), "coronal": ("S", "I", "R", "L"), "sagittal": ("S", "I", "A", "P")}


def canvas_size() -> tuple[int, int]:
    """(width, height) of every preview, whatever the image: 3 panels side by side and a legend."""
    cell = PANEL + 2 * PAD
    return 3 * cell, HEADER + TITLE + cell + LEGEND


@dataclass
class Preview:
    image: "PIL.Image.Image"                      # noqa: F821 (Pillow is imported lazily)
    panels: dict[str, tuple[int, int, int, int]]  # view -> (left, top, right, bottom) of the drawn slice
    slices: dict[str, int]                        # view -> slice index in the LPS-ordered volume
    volumes_ml: dict[str, float]


def write_preview(image: sitk.Image, mask: np.ndarray, path: Path, title: str | None = None) -> None:
    """Write the preview of `image` with `mask` (numpy z, y, x on the image's grid) to `path` (PNG),
    atomically: a reader sees the old file, no file, or the whole new one."""
    path = Path(path)
    preview = render_preview(image, mask, path.stem if title is None else title)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "wb") as handle:  # 0666 less the umask, unlike mkstemp's 0600
            preview.image.save(handle, format="PNG")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def render_preview(image: sitk.Image, mask: np.ndarray, title: str = "") -> Preview:
    from PIL import Image, ImageDraw

    if image.GetDimension() != 3:
        raise ValueError(f"preview needs a 3D image, got {image.GetDimension()}D")
    ct = sitk.GetArrayViewFromImage(image)
    if mask.shape != ct.shape:
        raise ValueError(f"mask shape {mask.shape} differs from the image's {ct.shape} (z, y, x)")
    ct, spacing = to_lps(ct, image)
    labels, _ = to_lps(mask, image)
    center = foreground_center(labels)
    # (ct slice, mask slice, (row spacing, column spacing)) with rows top to bottom, columns left to right.
    cuts = {
        "axial": (ct[center[0]], labels[center[0]], (spacing[1], spacing[2])),
        "coronal": (ct[::-1, center[1]], labels[::-1, center[1]], (spacing[0], spacing[2])),
        "sagittal": (ct[::-1, :, center[2]], labels[::-1, :, center[2]], (spacing[0], spacing[1])),
    }
    extent = max(n * s for n, s in zip(ct.shape, spacing))
    scale = PANEL / extent  # pixels per millimetre, the same for every panel

    width, height = canvas_size()
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font, small = _font(14), _font(12)
    volumes = organ_volumes_ml(mask, image.GetSpacing())
    size_text = "x".join(str(n) for n in image.GetSize())
    spacing_text = "x".join(f"{s:.2f}" for s in image.GetSpacing())
    header = f"{title}  {size_text} voxels  {spacing_text} mm  W{WINDOW:g}/L{LEVEL:g}".strip()
    draw.text((PAD, 5), header, fill=TEXT, font=font)
    panels = {}
    for k, view in enumerate(VIEWS):
        grey, lab, (row_mm, col_mm) = cuts[view]
        w = max(1, round(grey.shape[1] * col_mm * scale))
        h = max(1, round(grey.shape[0] * row_mm * scale))
        left = k * (PANEL + 2 * PAD) + PAD + (PANEL - w) // 2
        top = HEADER + TITLE + PAD + (PANEL - h) // 2
        rgb = overlay(window(grey), lab, (w, h))
        canvas.paste(Image.fromarray(rgb, "RGB"), (left, top))
        panels[view] = (left, top, left + w, top + h)
        cell_left = k * (PANEL + 2 * PAD)
        draw.text((cell_left + PAD, HEADER), f"{view} {center[k] + 1}/{ct.shape[k]}", fill=TEXT, font=font)
        t, b, l, r = LETTERS[view]
        mid_x, mid_y = left + w // 2, top + h // 2
        draw.text((mid_x, top - 2), t, fill=TEXT, font=small, anchor="mb")
        draw.text((mid_x, top + h + 1), b, fill=TEXT, font=small, anchor="mt")
        draw.text((left - 3, mid_y), l, fill=TEXT, font=small, anchor="rm")
        draw.text((left + w + 3, mid_y), r, fill=TEXT, font=small, anchor="lm")
    x, y = PAD, height - LEGEND + 7
    for organ in ORGANS:
        draw.rectangle((x, y, x + 14, y + 14), fill=organ.rgb)
        text = f"{organ.name} {volumes[organ.name]:.0f} ml"
        draw.text((x + 20, y + 7), text, fill=TEXT, font=font, anchor="lm")
        x += 20 + int(draw.textlength(text, font=font)) + 24
    return Preview(canvas, panels, dict(zip(VIEWS, center)), volumes)


def to_lps(array: np.ndarray, image: sitk.Image) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A view (no copy) of a numpy (z, y, x) array of `image` with its axes permuted and flipped so
    that they run inferior->superior, anterior->posterior and right->left (what DICOMOrient("LPS")
    gives, up to the nearest axis for oblique images), and the spacing along those axes."""
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)  # column j: index axis j
    physical = _nearest_axes(direction)  # physical[j]: physical axis (0 L, 1 P, 2 S) of index axis j
    spacing_xyz = image.GetSpacing()
    order, flips, spacing = [], [], []
    for out_axis in range(3):  # numpy axes of the result: S, P, L
        j = physical.index(2 - out_axis)
        order.append(2 - j)
        flips.append(direction[2 - out_axis, j] < 0)
        spacing.append(float(spacing_xyz[j]))
    view = np.transpose(array, order)
    for axis, flip in enumerate(flips):
        if flip:
            view = np.flip(view, axis)
    return view, tuple(spacing)


def _nearest_axes(direction: np.ndarray) -> list[int]:
    """For each index axis, the physical axis it is closest to, as a permutation."""
    weight = np.abs(direction)
    physical = [-1, -1, -1]
    for _ in range(3):  # the strongest remaining pairing first: unambiguous even when oblique
        row, col = np.unravel_index(np.argmax(weight), weight.shape)
        physical[col] = int(row)
        weight[row, :] = -1
        weight[:, col] = -1
    return physical


def foreground_center(labels: np.ndarray) -> tuple[int, int, int]:
    """The slices through the centroid of the organs (labels > 0), moved to the nearest slice that
    shows an organ when the centroid falls between them; the middle of the volume if there are none."""
    foreground = labels > 0
    total = int(np.count_nonzero(foreground))
    if total == 0:
        return tuple(n // 2 for n in labels.shape)
    center = []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        counts = np.count_nonzero(foreground, axis=others)
        index = np.arange(labels.shape[axis])
        middle = float(np.dot(index, counts)) / total
        # Organs on both sides of an empty middle (liver and spleen): the nearest slice with organs.
        center.append(int(index[counts > 0][np.argmin(np.abs(index[counts > 0] - middle))]))
    return tuple(center)


def window(values: np.ndarray, width: float = WINDOW, level: float = LEVEL) -> np.ndarray:
    """Hounsfield units to uint8 grey: level - width/2 is black, level + width/2 is white."""
    low = level - width / 2
    grey = (np.asarray(values, dtype=np.float32) - low) * (255.0 / width)
    return np.clip(np.rint(grey), 0, 255).astype(np.uint8)


def overlay(grey: np.ndarray, labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """RGB (h, w, 3) of `grey` resized to `size` (w, h) with the organs blended in their colours;
    the labels are resized with nearest neighbour, so no mixed colours appear at the edges."""
    from PIL import Image
    grey = np.asarray(Image.fromarray(np.ascontiguousarray(grey), "L").resize(size, Image.Resampling.BILINEAR))
    lab = np.asarray(Image.fromarray(np.ascontiguousarray(labels.astype(np.uint8)), "L")
                     .resize(size, Image.Resampling.NEAREST))
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    for organ in ORGANS:
        where = lab == organ.label
        if where.any():
            rgb[where] = (1 - ALPHA) * rgb[where] + ALPHA * np.asarray(organ.rgb, dtype=np.float32)
    return np.rint(rgb).astype(np.uint8)


def blend(grey: int, rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """The colour an organ takes over a CT grey value in the preview."""
    return tuple(int(np.rint((1 - ALPHA) * grey + ALPHA * c)) for c in rgb)


def _font(size: int):
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=size)  # Pillow's bundled FreeType font
    except (TypeError, OSError, ImportError):    # old Pillow or no FreeType: the bitmap font
        return ImageFont.load_default()
