"""A phantom and a real CT side by side (one above the other) in one PNG, to look at realism."""
from __future__ import annotations

from pathlib import Path

import SimpleITK as sitk

from app.preview import render_preview
from app.synth.phantom import Phantom


def side_by_side(ph: Phantom, real_ct: str | Path, real_labels: str | Path, out_png: str | Path) -> None:
    from PIL import Image

    real = sitk.ReadImage(str(real_ct))
    real_mask = sitk.GetArrayFromImage(sitk.ReadImage(str(real_labels)))
    title = f"phantom ({ph.info['phase']}, {ph.info['field']}, synthetic)"
    top = render_preview(ph.grid.image(ph.image), ph.labels, title).image
    bottom = render_preview(real, real_mask, "real CT (reference labels)").image
    canvas = Image.new("RGB", (top.width, top.height + bottom.height))
    canvas.paste(top, (0, 0))
    canvas.paste(bottom, (0, top.height))
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_png.with_name(f".{out_png.name}.tmp")
    canvas.save(tmp, format="PNG")
    tmp.replace(out_png)
