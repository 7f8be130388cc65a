"""Phantoms of sick patients: lesions labelled as their organ and lying in or on it, the organs'
own vessels, distractors labelled background, absent organs, slice partial volume, the realism
checks of all of it, and `app evaluate --structures`, checked against counts made here."""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from app.synth.structures import FLARE_OF, ID, STRUCTURES

REPO = Path(__file__).resolve().parents[1]
ROLE = np.array([s.role for s in STRUCTURES])


@pytest.fixture(scope="module")
def sick_phantoms():
    from app.synth.phantom import make_phantom
    return [make_phantom(61, i, "small", sick=True) for i in range(3)]


def test_registry_labels_lesions_as_their_organ_and_distractors_as_background():
    organ_of = {"liver": 1, "kidney": 2, "spleen": 3, "pancreas": 4}
    for i, s in enumerate(STRUCTURES):
        if s.role in ("lesion", "vessel"):
            prefix = s.name.split("_")[0].replace("pancreatic", "pancreas")
            assert FLARE_OF[i] == organ_of[prefix], s.name
        if s.role == "distractor":
            assert FLARE_OF[i] == 0, s.name


def test_lesions_lie_in_or_on_their_organ_and_distractors_outside(sick_phantoms):
    """Every connected piece of lesion touches its organ's own tissue (inside it, or exophytic
    and bulging out of it); distractors are background wherever they lie."""
    kinds_seen = set()
    for ph in sick_phantoms:
        assert np.array_equal(FLARE_OF[ph.structures], ph.labels)
        lesion = ROLE[ph.structures] == "lesion"
        assert lesion.any()
        for organ in (1, 2, 3, 4):
            own_tissue = (ph.labels == organ) & ~lesion
            cube = np.ones((3, 3, 3), bool)
            pieces, n = ndimage.label(lesion & (ph.labels == organ), structure=cube)
            touching = set(np.unique(pieces[ndimage.binary_dilation(own_tissue, cube) & (pieces > 0)]).tolist())
            sizes = ndimage.sum_labels(np.ones_like(pieces), pieces, range(1, n + 1))
            # a voxel or two cut off at this 3 mm grid's surface of the organ is discretisation
            apart = [k for k in range(1, n + 1) if k not in touching and sizes[k - 1] > 2]
            assert not apart, f"organ {organ}: lesion pieces apart from it, sizes {sizes[np.array(apart) - 1]}"
        kinds_seen |= {STRUCTURES[i].name for i in np.unique(ph.structures[lesion])}
        distractor = ROLE[ph.structures] == "distractor"
        assert (ph.labels[distractor] == 0).all()
    assert len(kinds_seen) >= 4, kinds_seen


def test_masses_press_into_the_organs_from_outside(monkeypatch):
    """A mass against the liver, a kidney or the spleen dents it: the organ gives up tissue to the
    mass (or to a fat plane) near its surface only, and the mass is not wrapped by the organ as
    the organ's own lesion would be. The same phantom with pressing off is the reference (the
    draws are the same, so the anatomy is too, but for an adrenal gland, which goes where its
    mass is pushed)."""
    from app.synth import pathology
    from app.synth.phantom import make_phantom
    pressed = [make_phantom(61, i, "small", sick=True) for i in (2, 7)]
    masses = [ID[n] for n in pathology.PRESS_SHARE] + [ID["mass_necrosis"]]
    monkeypatch.setattr(pathology, "PRESS_SHARE", {})
    beside = [make_phantom(61, i, "small", sick=True) for i in (2, 7)]
    for a, b in zip(pressed, beside):
        changed = a.labels != b.labels
        lost = (b.labels > 0) & (a.labels == 0)
        # where an unpushed adrenal mass or its gland lay, the organ may show once they are pushed
        # out (other masses are painted outside the organs when unpushed)
        gained = (b.labels == 0) & (a.labels > 0)
        assert np.isin(b.structures[gained], [ID["adrenal_mass"], ID["adrenal"]]).all() and gained.sum() < lost.sum()
        assert lost.sum() > 20 and np.array_equal(changed, lost | gained), "only organ tissue given up"
        assert np.isin(a.structures[lost], masses + [ID["visceral_fat"], ID["adrenal"]]).all()
        spacing_zyx = tuple(reversed(a.grid.spacing))
        depth = ndimage.distance_transform_edt(b.labels > 0, sampling=spacing_zyx)
        # the generator's depth is an implicit value times a mean radius: within half again
        assert depth[lost].max() <= 1.5 * pathology.PRESS_MAX_MM + max(spacing_zyx)
        mass = np.isin(a.structures, masses)
        shell = ndimage.binary_dilation(mass) & ~mass
        assert 0 < (a.labels[shell] > 0).mean() < 0.5, "touches its organ, is not wrapped by it"


def test_organ_vessels_branch_inside_their_organ(sick_phantoms):
    for ph in sick_phantoms:
        for name, organ in (("liver_vessel", 1), ("kidney_vessel", 2)):
            vessel = ph.structures == ID[name]
            assert vessel.sum() > 5, name
            # inside: the organ's label surrounds them (most neighbours of a vessel voxel are organ)
            around = ndimage.binary_dilation(vessel, iterations=2) & ~vessel
            assert (ph.labels[around] == organ).mean() > 0.6, name


def test_sick_only_raises_the_chances_and_leaves_the_anatomy():
    from app.synth.anatomy import Anatomy
    for i in range(6):
        plain = Anatomy(np.random.default_rng([5, i]))
        sick = Anatomy(np.random.default_rng([5, i]), sick=True)
        assert np.allclose(plain.liver[1].c, sick.liver[1].c) and np.allclose(plain.pancreas.pts, sick.pancreas.pts)
        assert sick.pathology.lesions and {les.organ for les in sick.pathology.lesions} >= {1, 4}


def _anatomy_with(variant_prefix: str, limit: int = 400):
    from app.synth.anatomy import Anatomy
    for i in range(limit):
        anat = Anatomy(np.random.default_rng([77, i]))
        if any(v.startswith(variant_prefix) for v in anat.pathology.variants):
            return anat
    raise AssertionError(f"no {variant_prefix} in {limit} anatomies")


@pytest.mark.parametrize("variant, organ, most_ml", [("splenectomy", "spleen", 0.0), ("nephrectomy", "kidney", 260.0)])
def test_absent_organs_are_absent(variant, organ, most_ml):
    from app.synth.realism import anatomy_facts
    facts = anatomy_facts(_anatomy_with(variant))
    assert facts.volumes_ml[organ] <= most_ml
    if organ == "kidney":
        assert len(facts.kidney_centres_z) == 1


def test_realism_of_lesions_passes_and_can_fail():
    from app.synth.anatomy import Anatomy
    from app.synth.realism_pathology import lesion_problems
    anats = [Anatomy(np.random.default_rng([81, i]), sick=True) for i in range(8)]
    for anat in anats:
        assert lesion_problems(anat) == []
    anat = anats[0]
    moved = next(les for les in anat.pathology.lesions if les.kind != "pancreatic_duct_dilated")
    moved.shape.c[:] = moved.shape.c + np.float32([0, 0, 400])     # far above its organ
    assert any("its organ" in p for p in lesion_problems(anat))


def test_lesion_hu_by_phase_and_conspicuity(sick_phantoms):
    from app.synth.realism_pathology import lesion_hu_problems
    for ph in sick_phantoms:
        if not ph.info["random_contrast"]:
            assert lesion_hu_problems(ph.info["phase"], ph.image, ph.structures, ph.info["calibration_hu"],
                                      tuple(ph.info["fatty"])) == []
    # a metastasis as bright as the liver in the portal phase is caught
    structures = np.full((10, 10, 10), ID["liver"], np.uint8)
    structures[2:8, 2:8, 2:8] = ID["liver_metastasis"]
    image = np.where(structures == ID["liver"], 110, 100).astype(np.int16)
    problems = lesion_hu_problems("portal", image, structures, 0.0)
    assert any("not hypodense" in p for p in problems) and any("outside" in p for p in problems)


def test_lesion_hu_is_measured_on_its_core_not_its_blurred_rim():
    """A small cyst in fat whose rim blur mixes with the fat: its median over all its voxels is
    far below water, its core's is water, and only a wrong core is a problem."""
    from app.synth.realism_pathology import lesion_hu_problems
    structures = np.full((12, 12, 12), ID["visceral_fat"], np.uint8)
    structures[3:9, 3:9, 3:9] = ID["abdominal_cyst"]
    image = np.full(structures.shape, -100, np.int16)
    image[3:9, 3:9, 3:9] = -50              # the rim, half way to fat
    image[4:8, 4:8, 4:8] = 5                # the core, water
    assert np.median(image[structures == ID["abdominal_cyst"]]) < -10
    assert lesion_hu_problems("portal", image, structures, 0.0) == []
    image[4:8, 4:8, 4:8] = 60               # a cyst whose core is soft tissue is caught
    assert any("abdominal_cyst" in p for p in lesion_hu_problems("portal", image, structures, 0.0))


def test_thick_slices_integrate_the_patient_and_keep_the_centre_label(monkeypatch):
    """Partial volume: with sub-slice sampling the labels are those of the slice centres, and the
    image differs from point sampling only where a structure changes within the slice."""
    from app.synth import scanner
    from app.synth.phantom import make_phantom
    integrated = make_phantom(62, 0, "small")
    monkeypatch.setattr(scanner, "SLICE_SUBSAMPLES", np.zeros(1, np.float32))
    point = make_phantom(62, 0, "small")
    assert np.array_equal(integrated.structures, point.structures)
    differs = np.abs(integrated.image.astype(int) - point.image.astype(int)) > 60
    changes = (np.diff(point.structures, axis=0) != 0)
    near_change = np.zeros_like(differs)
    near_change[1:] |= changes
    near_change[:-1] |= changes
    near_change = ndimage.binary_dilation(near_change, iterations=2)
    assert differs.any() and (near_change[differs]).mean() > 0.95


def _write(path: Path, array: np.ndarray, spacing=(2.0, 2.0, 2.0)):
    import SimpleITK as sitk
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(spacing)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


def test_evaluate_reports_lesion_recall_distractors_and_absent_organs(tmp_path):
    """Counts made by hand on a small case: a metastasis half labelled liver, a cyst of the kidney
    wholly labelled kidney, a node a quarter labelled spleen, and 8 ml of pancreas predicted where
    the reference has none."""
    import json

    from app.synth.structures import roles
    structures = np.zeros((20, 20, 20), np.uint8)
    gt = np.zeros_like(structures)
    structures[0:10, 0:10, 0:10], gt[0:10, 0:10, 0:10] = ID["liver"], 1
    structures[2:6, 2:6, 2:6], gt[2:6, 2:6, 2:6] = ID["liver_metastasis"], 1       # 64 voxels
    structures[12:16, 12:16, 12:16], gt[12:16, 12:16, 12:16] = ID["kidney_cortex"], 2
    structures[13:15, 13:15, 13:15] = ID["kidney_cyst"]                            # 8 voxels
    structures[0:4, 14:18, 14:18] = ID["lymph_node"]                                # 64 voxels
    pred = gt.copy()
    pred[2:4, 2:6, 2:6] = 0                       # half the metastasis missed
    pred[0:1, 14:18, 14:18] = 3                   # 16 node voxels called spleen
    pred[16:20, 0:5, 0:5] = 4                     # 100 voxels x 8 ul = 0.8 ml of pancreas
    pred[16:20, 5:10, 0:10] = 4                   # another 200 voxels: 2.4 ml in all
    for folder, array in (("gt", gt), ("pred", pred), ("structures", structures)):
        _write(tmp_path / folder / "case.nii.gz", array)
    (tmp_path / "structures" / "roles.json").write_text(json.dumps(roles()))
    out = subprocess.run([sys.executable, "-m", "app", "evaluate", "--pred", str(tmp_path / "pred"),
                          "--gt", str(tmp_path / "gt"), "--structures", str(tmp_path / "structures")],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    last = out.stdout.strip().splitlines()[-1]
    values = dict(re.findall(r"(\w+)=([0-9.na]+)", last))
    assert float(values["lesion_recall"]) == pytest.approx((32 + 8) / (64 + 8), abs=1e-4)
    assert float(values["distractor_fp"]) == pytest.approx(16 / 64, abs=1e-4)
    assert float(values["absent_organ_max_ml"]) == pytest.approx(300 * 8 / 1000, abs=0.05)
    assert re.search(r"liver_metastasis\s+0\.500", out.stdout) and re.search(r"kidney_cyst\s+1\.000", out.stdout)
    assert "case: spleen 0.1 ml" in out.stdout and "case: pancreas 2.4 ml" in out.stdout
