"""The one registry of phantom structures: the full label map a phantom is painted in.

Each structure has an id (its value in the full label map), a name, the tissue its attenuation
is drawn from, and its FLARE21 label. The FLARE labels (1 liver, 2 kidney, 3 spleen, 4 pancreas)
are a projection of the full map: `FLARE_OF[structure_map]`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.synth.shapes import (
    ADRENAL, AIR, ARTERY, ASCITES, BOWEL, CALCIFIED, CORTEX, CSF, CYST, DISC, FAECES, FLUID, GALL, GAS, HCC,
    HEART, INFARCT, KCORTEX, KMEDULLA, LIVER, LUNG, MARROW, MASS, METASTASIS, MUSCLE, NECROSIS, NODE, ORAL,
    PANCREAS, PANCREAS_MASS, RENAL_TUMOUR, SPLEEN, STOMACH_WALL, SUBFAT, TABLE, URINE, VEIN, VFAT,
)


@dataclass(frozen=True)
class Structure:
    name: str
    tissue: int
    flare: int = 0
    role: str = "anatomy"   # "lesion" (labelled as its organ), "vessel" (inside its organ), "distractor"


STRUCTURES: tuple[Structure, ...] = (
    Structure("outside", AIR),
    Structure("subcutaneous_fat", SUBFAT),
    Structure("abdominal_wall_muscle", MUSCLE),
    Structure("visceral_fat", VFAT),
    Structure("paraspinal_muscle", MUSCLE),
    Structure("psoas", MUSCLE),
    Structure("table", TABLE),
    Structure("vertebral_cortex", CORTEX),
    Structure("vertebral_marrow", MARROW),
    Structure("intervertebral_disc", DISC),
    Structure("spinal_canal", CSF),
    Structure("rib", CORTEX),
    Structure("iliac_cortex", CORTEX),
    Structure("iliac_marrow", MARROW),
    Structure("lung", LUNG),
    Structure("diaphragm", MUSCLE),
    Structure("heart", HEART),
    Structure("liver", LIVER, 1),
    Structure("gallbladder", GALL),
    Structure("spleen", SPLEEN, 3),
    Structure("kidney_cortex", KCORTEX, 2),
    Structure("kidney_medulla", KMEDULLA, 2),
    Structure("renal_sinus", VFAT, 2),
    Structure("renal_pelvis", URINE, 2),
    Structure("adrenal", ADRENAL),
    Structure("pancreas", PANCREAS, 4),
    Structure("aorta", ARTERY),
    Structure("sma", ARTERY),
    Structure("renal_artery", ARTERY),
    Structure("ivc", VEIN),
    Structure("portal_vein", VEIN),
    Structure("splenic_vein", VEIN),
    Structure("renal_vein", VEIN),
    Structure("stomach_wall", STOMACH_WALL),
    Structure("stomach_fluid", FLUID),
    Structure("stomach_oral_contrast", ORAL),
    Structure("stomach_food", BOWEL),
    Structure("stomach_gas", GAS),
    Structure("duodenum_wall", BOWEL),
    Structure("duodenum_content", FLUID),
    Structure("small_bowel_wall", BOWEL),
    Structure("small_bowel_fluid", FLUID),
    Structure("small_bowel_oral_contrast", ORAL),
    Structure("small_bowel_gas", GAS),
    Structure("colon_wall", BOWEL),
    Structure("colon_faeces", FAECES),
    Structure("colon_gas", GAS),
    Structure("bladder", URINE),
    Structure("sacrum_cortex", CORTEX),
    Structure("sacrum_marrow", MARROW),
    Structure("femoral_head_cortex", CORTEX),
    Structure("femoral_head_marrow", MARROW),
    Structure("gluteal_muscle", MUSCLE),
    Structure("pancreas_fat", VFAT, 4),
    Structure("mesenteric_vessel", VEIN),
    # the organs' own vessels, labelled as their organ as FLARE's annotators trace them
    Structure("liver_vessel", VEIN, 1, "vessel"),
    Structure("spleen_vessel", VEIN, 3, "vessel"),
    Structure("kidney_vessel", VEIN, 2, "vessel"),
    # lesions: a lesion inside an organ belongs to that organ's label (LiTS, KiTS, MSD)
    Structure("liver_metastasis", METASTASIS, 1, "lesion"),
    Structure("liver_cyst", CYST, 1, "lesion"),
    Structure("liver_hcc", HCC, 1, "lesion"),
    Structure("liver_calcification", CALCIFIED, 1, "lesion"),
    Structure("kidney_cyst", CYST, 2, "lesion"),
    Structure("kidney_tumour", RENAL_TUMOUR, 2, "lesion"),
    Structure("kidney_tumour_necrosis", NECROSIS, 2, "lesion"),
    Structure("pancreas_mass", PANCREAS_MASS, 4, "lesion"),
    Structure("pancreas_cyst", CYST, 4, "lesion"),
    Structure("pancreatic_duct_dilated", FLUID, 4, "lesion"),
    Structure("spleen_cyst", CYST, 3, "lesion"),
    Structure("spleen_infarct", INFARCT, 3, "lesion"),
    # what the organs must be told from: background in the FLARE labels
    Structure("adrenal_mass", MASS, 0, "distractor"),
    Structure("retroperitoneal_mass", MASS, 0, "distractor"),
    Structure("mesenteric_mass", MASS, 0, "distractor"),
    Structure("mass_necrosis", NECROSIS, 0, "distractor"),
    Structure("lymph_node", NODE, 0, "distractor"),
    Structure("abdominal_cyst", CYST, 0, "distractor"),
    Structure("ascites", ASCITES, 0, "distractor"),
    Structure("pleural_effusion", ASCITES, 0, "distractor"),
)
ID = {s.name: i for i, s in enumerate(STRUCTURES)}
TISSUE_OF = np.array([s.tissue for s in STRUCTURES], np.uint8)
FLARE_OF = np.array([s.flare for s in STRUCTURES], np.uint8)
N_STRUCTURES = len(STRUCTURES)


ROLE_OF = {s.name: s.role for s in STRUCTURES}


def legend() -> dict[str, str]:
    """{id: name} of the full label map, for the JSON written beside it."""
    return {str(i): s.name for i, s in enumerate(STRUCTURES)}


def roles() -> dict[str, dict]:
    """{name: {"id", "flare", "role"}} of the lesions, organ vessels and distractors: what
    `app evaluate --structures` needs to score lesion recall and distractor false positives
    without importing the generator."""
    return {s.name: {"id": i, "flare": s.flare, "role": s.role}
            for i, s in enumerate(STRUCTURES) if s.role != "anatomy"}
