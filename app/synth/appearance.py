"""How one phantom looks on the scanner: attenuation per structure, texture, bias, noise, blur.

Drawn per case, so the network learns shape and context rather than one table of intensities:
- a contrast phase (native, late arterial, portal venous, delayed), HU per tissue from literature
  ranges for it (so the organs overlap in HU as real soft tissue does), a global calibration
  offset and a small offset per structure;
- fatty pancreas, fatty liver and osteoporotic (fatty) marrow for a share of cases;
- for a share of cases, SynthSeg-style random contrast: every soft-tissue structure gets an
  independent random HU (air, fat, lung, gas and bone keep theirs, so the body still reads as CT);
- a smooth additive bias field, soft-tissue texture, correlated noise at varied levels, in-plane
  blur and a slice profile.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.synth.shapes import (
    AIR, CORTEX, GAS, HU_FIXED, HU_RANGES, LIVER, LUNG, MARROW, N_TISSUES, ORAL, PANCREAS, SUBFAT, TABLE,
    TEXTURED, URINE, VFAT, Wave,
)
from app.synth.structures import TISSUE_OF

PHASES = ("native", "arterial", "portal", "delayed")
PHASE_P = (0.3, 0.17, 0.43, 0.1)
RANDOM_CONTRAST_P = 0.2
FATTY_PANCREAS_DROP_HU = (15.0, 50.0)   # fatty infiltration of the pancreas
STEATOSIS_DROP_HU = (20.0, 55.0)        # hepatic steatosis
FATTY_DROP_HU = max(FATTY_PANCREAS_DROP_HU[1], STEATOSIS_DROP_HU[1])
# tissues that keep realistic HU under random contrast: what makes any CT look like a CT
KEEP_UNDER_RANDOM = (AIR, GAS, LUNG, SUBFAT, VFAT, CORTEX, MARROW, ORAL, TABLE)


@dataclass
class Appearance:
    phase: str
    random_contrast: bool
    structure_hu: np.ndarray        # per structure id
    textured: np.ndarray            # per structure id
    texture: Wave
    texture_amp: float
    bias: Wave
    bias_amp: float
    noise_hu: float
    noise_corr: float               # in-plane correlation of the noise, voxels
    psf_mm: float                   # in-plane blur
    slice_sigma: float              # slice profile, in slices
    calibration_hu: float = 0.0     # the scanner's offset added to every soft tissue
    fatty: tuple[str, ...] = ()     # tissues drawn fatty this case (pancreas, liver, marrow)

    def describe(self) -> dict:
        return {"phase": self.phase, "random_contrast": self.random_contrast,
                "noise_hu": round(self.noise_hu, 1), "bias_hu": round(self.bias_amp, 1),
                "calibration_hu": round(self.calibration_hu, 1), "fatty": list(self.fatty)}


def draw_appearance(rng: np.random.Generator) -> Appearance:
    u = rng.uniform
    phase = str(rng.choice(PHASES, p=PHASE_P))
    tissue_hu, calibration, fatty = _tissue_hu(rng, phase)
    structure_hu = tissue_hu[TISSUE_OF] + np.where(np.isin(TISSUE_OF, KEEP_UNDER_RANDOM), 0.0,
                                                   rng.normal(0, 4, len(TISSUE_OF)))
    random_contrast = bool(rng.random() < RANDOM_CONTRAST_P)
    if random_contrast:
        free = ~np.isin(TISSUE_OF, KEEP_UNDER_RANDOM)
        structure_hu[free] = u(-80, 260, int(free.sum()))
    return Appearance(
        phase=phase, random_contrast=random_contrast, structure_hu=structure_hu.astype(np.float32),
        textured=TEXTURED[TISSUE_OF], texture=Wave.random(rng, 6, (12, 60), 1.0), texture_amp=u(3, 12),
        bias=Wave.random(rng, 3, (200, 500), 1.0), bias_amp=u(0, 25),
        noise_hu=u(4, 55), noise_corr=u(0.0, 1.0), psf_mm=u(0.5, 3.2), slice_sigma=u(0.2, 0.7),
        calibration_hu=calibration, fatty=() if random_contrast else fatty)   # random contrast redraws organs


def _tissue_hu(rng, phase: str) -> tuple[np.ndarray, float, tuple[str, ...]]:
    """HU per tissue for this case: phase ranges, a calibration offset, fatty organs.
    Returns (HU per tissue, the offset, the names of the tissues drawn fatty)."""
    u = rng.uniform
    offset = u(-15, 12)
    hu = np.zeros(N_TISSUES, np.float32)
    for t, (lo, hi) in {**HU_FIXED, **HU_RANGES[phase]}.items():
        hu[t] = u(lo, hi) + (offset if t not in (AIR, GAS, LUNG) else 0.0)
    fatty = []
    if rng.random() < 0.3:          # fatty infiltration of the pancreas, common with age
        hu[PANCREAS] -= u(*FATTY_PANCREAS_DROP_HU)
        fatty.append("pancreas")
    if rng.random() < 0.12:         # hepatic steatosis: the liver darker than the spleen
        hu[LIVER] -= u(*STEATOSIS_DROP_HU)
        fatty.append("liver")
    if rng.random() < 0.25:         # osteoporotic, fatty marrow (common in the elderly): under 110 HU
        hu[MARROW] = u(40, 110) + offset
        fatty.append("marrow")
    if phase != "delayed":
        hu[URINE] = min(hu[URINE], 25.0)
    return hu, float(offset), tuple(fatty)
