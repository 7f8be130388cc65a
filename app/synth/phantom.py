"""Synthetic abdominal CT phantoms with FLARE21 labels and a full structure map.

A phantom is an anatomy (app.synth.anatomy: where each structure lies, in patient coordinates),
an appearance (app.synth.appearance: how it looks on this case's scanner), and a scanner grid
and rendering (app.synth.scanner). The full label map holds every structure
(app.synth.structures); the FLARE labels 1 liver, 2 kidney, 3 spleen, 4 pancreas are its
projection. These are synthetic phantoms, not patient data.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.synth.anatomy import Anatomy
from app.synth.appearance import draw_appearance
from app.synth.scanner import Grid, random_grid, render
from app.synth.structures import FLARE_OF

GENERATOR_VERSION = 15  # bumped whenever a seed's phantoms change


@dataclass
class Phantom:
    image: np.ndarray        # int16 HU, (z, y, x)
    labels: np.ndarray       # uint8 FLARE labels
    structures: np.ndarray   # uint8 full label map (app.synth.structures ids)
    grid: Grid
    info: dict


def make_phantom(seed: int, index: int, size: str = "full", sick: bool = False) -> Phantom:
    """Case `index` of `seed`: always the same phantom for one generator version. `sick`: lesions
    in every organ and distractors in about half the cases, for measuring lesion recall."""
    rng = np.random.default_rng([int(seed), int(index)])
    anat = Anatomy(rng, sick)
    look = draw_appearance(rng)
    grid = random_grid(rng, anat, size)
    image, structures = render(anat, look, grid, rng)
    info = {**look.describe(), "field": grid.field, "shape_xyz": list(grid.shape), "spacing": list(grid.spacing),
            "direction": [float(v) for v in grid.direction.flatten()], "generator_version": GENERATOR_VERSION,
            **anat.pathology.describe()}
    return Phantom(image, FLARE_OF[structures], structures, grid, info)


def make_case(seed: int, index: int, size: str = "full", sick: bool = False):
    """Build one phantom. Returns (image int16 zyx, label uint8 zyx, Grid, info dict)."""
    p = make_phantom(seed, index, size, sick)
    return p.image, p.labels, p.grid, p.info
