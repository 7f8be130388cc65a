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
                          "--seed", "7", "--size", "small", "--nnunet-task", str(task), "--structures"],
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
    legend = json.loads((data / "structures.json").read_text())
    assert legend["0"] == "outside" and "liver" in legend.values() and "colon_faeces" in legend.values()
    assert len(list((data / "structures").glob("*.nii.gz"))) == 3


def test_geometry_labels_and_hu(small_set):
    data, _ = small_set
    random_contrast = {c["name"]: c["random_contrast"] for c in json.loads((data / "cases.json").read_text())}
    for lab_path in sorted((data / "labels").glob("*.nii.gz")):
        lab_img, lab = _read(lab_path)
        img, arr = _read(data / "images" / lab_path.name.replace(".nii.gz", "_0000.nii.gz"))
        assert arr.dtype == np.int16 and lab.dtype == np.uint8
        assert img.GetSize() == lab_img.GetSize()
        assert np.allclose(img.GetSpacing(), lab_img.GetSpacing())
        assert np.allclose(img.GetDirection(), lab_img.GetDirection())
        assert set(np.unique(lab)) == {0, 1, 2, 3, 4}
        _, structures = _read(data / "structures" / lab_path.name)
        from app.synth.structures import FLARE_OF
        assert np.array_equal(FLARE_OF[structures], lab)
        # organ volumes are checked on the whole anatomy in test_realism_checks_pass_and_can_fail:
        # here the field of view may crop them
        assert arr.min() <= -900 and arr.max() >= 300   # air/lung and bone present
        # a liver in CT range: random contrast draws any soft-tissue HU from -80 to 260
        hi = 300 if random_contrast[lab_path.name[:-len(".nii.gz")]] else 160
        assert -150 < np.median(arr[lab == 1]) < hi


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
    from app.synth.anatomy import Anatomy
    from app.synth.scanner import random_grid
    dirs, sps, szs, sizes, fields = set(), [], [], [], set()
    for i in range(40):
        rng = np.random.default_rng([3, i])
        grid = random_grid(rng, Anatomy(rng), "full")
        dirs.add(tuple(np.sign(np.round(np.diag(grid.direction), 3))))
        sps.append(grid.spacing[0])
        szs.append(grid.spacing[2])
        sizes.append(grid.shape[0])
        fields.add(grid.field)
    assert len(dirs) >= 3
    assert 0.6 <= min(sps) and max(sps) <= 1.0
    assert 1.0 <= min(szs) and max(szs) <= 5.0
    assert max(sizes) <= 512
    assert fields == {"liver", "abdomen", "abdomen_pelvis", "chest_abdomen_pelvis"}


def test_grid_image_places_each_voxel_where_the_grid_says():
    from app.synth.anatomy import Anatomy
    from app.synth.scanner import random_grid
    rng = np.random.default_rng([3, 7])
    grid = random_grid(rng, Anatomy(rng), "small")
    nx, ny, nz = 5, 4, 3
    array = np.arange(nx * ny * nz, dtype=np.int16).reshape(nz, ny, nx)
    image = grid.image(array)
    assert image.GetSize() == (nx, ny, nz)
    index = (4, 1, 2)                                   # (x, y, z)
    expected = grid.origin + grid.direction @ (np.array(index) * np.array(grid.spacing))
    np.testing.assert_allclose(image.TransformIndexToPhysicalPoint(index), expected, atol=1e-6)
    assert image.GetPixel(index) == array[2, 1, 4]


def test_organs_overlap_in_hu():
    """Per-case organ HU overlap within one phase: intensity alone cannot separate the organs."""
    from app.synth.appearance import draw_appearance
    from app.synth.structures import ID
    looks = [draw_appearance(np.random.default_rng([5, i])) for i in range(200)]
    native = [lk for lk in looks if lk.phase == "native" and not lk.random_contrast]
    assert len(native) >= 20
    means = {k: [lk.structure_hu[ID[k]] for lk in native] for k in ("liver", "spleen", "pancreas", "kidney_cortex")}
    lo = {k: min(v) for k, v in means.items()}
    hi = {k: max(v) for k, v in means.items()}
    assert lo["liver"] < hi["spleen"] and lo["spleen"] < hi["liver"]
    assert lo["pancreas"] < hi["liver"] and lo["spleen"] < hi["pancreas"]
    assert lo["kidney_cortex"] < hi["spleen"]


def test_appearance_is_randomised():
    """Phases, random contrast for a share of cases, bias and noise levels vary per case."""
    from app.synth.appearance import draw_appearance
    from app.synth.structures import ID
    looks = [draw_appearance(np.random.default_rng([6, i])) for i in range(200)]
    assert {lk.phase for lk in looks} == {"native", "arterial", "portal", "delayed"}
    share = np.mean([lk.random_contrast for lk in looks])
    assert 0.1 < share < 0.3
    # under random contrast the liver can be darker than fat-free muscle or brighter than the kidney
    livers = [lk.structure_hu[ID["liver"]] for lk in looks if lk.random_contrast]
    assert min(livers) < 0 and max(livers) > 150
    noise = [lk.noise_hu for lk in looks]
    assert min(noise) < 8 and max(noise) > 45


def test_full_label_map_projects_to_flare_labels():
    """The structure map holds the confounders the organs must be told from; FLARE labels are its projection."""
    from app.synth.phantom import make_phantom
    from app.synth.structures import FLARE_OF, ID, STRUCTURES
    ph = make_phantom(11, 0, "small")
    assert np.array_equal(FLARE_OF[ph.structures], ph.labels)
    present = {STRUCTURES[i].name for i in np.unique(ph.structures)}
    for name in ("aorta", "ivc", "portal_vein", "stomach_wall", "duodenum_wall", "colon_wall", "small_bowel_wall",
                 "psoas", "paraspinal_muscle", "vertebral_cortex", "rib", "kidney_cortex", "kidney_medulla", "liver",
                 "spleen", "pancreas"):
        assert name in present, name
    assert ID["liver"] != ID["spleen"] and FLARE_OF[ID["renal_pelvis"]] == 2 and FLARE_OF[ID["adrenal"]] == 0


def test_realism_checks_pass_and_can_fail():
    """Volumes and positions of 8 anatomies against patient ranges; a misplaced organ is caught."""
    from app.synth.anatomy import Anatomy
    from app.synth.realism import TYPICAL_ML, anatomy_facts, position_problems, volume_problems
    anats = [Anatomy(np.random.default_rng([21, i])) for i in range(8)]
    facts = [anatomy_facts(anat) for anat in anats]
    for anat, f in zip(anats, facts):
        variants = anat.pathology.variants   # splenomegaly, nephrectomy, ... have ranges of their own
        dented = anat.pathology.dents_organs   # a mass presses in
        assert position_problems(f) == [] and volume_problems(f, variants, dented=dented) == [], \
            (position_problems(f), volume_problems(f, variants, dented=dented))
    for organ, (lo, hi) in TYPICAL_ML.items():
        median = np.median([f.volumes_ml[organ] for f in facts])
        assert 0.75 * lo <= median <= 1.25 * hi, (organ, median)
    wrong = facts[0]
    wrong.centroids["spleen"] = wrong.centroids["liver"].copy()
    assert "spleen is not on the left" in position_problems(wrong)
    assert all(70 < f.vertebra_to_back_skin_mm < 145 for f in facts), [f.vertebra_to_back_skin_mm for f in facts]
    wrong.vertebra_to_back_skin_mm = 30.0   # the spine at the edge of the body, as before the back muscles
    assert "vertebral body is not 6-15 cm in front of the skin of the back" in position_problems(wrong)


def test_deterministic_per_case():
    from app.synth.phantom import make_case
    a = make_case(11, 2, "small")
    b = make_case(11, 2, "small")
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    c = make_case(11, 3, "small")
    assert a[0].shape != c[0].shape or not np.array_equal(a[1], c[1])


def test_liver_wedge_and_spleen_lateral_to_the_left_kidney():
    """Organ relations that the network must learn from: the pancreas head lies below the liver's
    inferior surface (not inside the liver's outline), and the spleen lies lateral to the left
    kidney (not wrapped around it). Anatomy varies, so each must hold in most random patients."""
    from app.synth.anatomy import Anatomy
    below, lateral = [], []
    for i in range(100):
        anat = Anatomy(np.random.default_rng([9, i]))
        head, head_r = anat.pancreas.pts[0], anat.pancreas.radii[0]
        below.append(head[2] + head_r < anat.liver_floor(head[0], head[1]))
        if anat.spleen and anat.kidney_sides == [0, 1]:   # no splenectomy, no nephrectomy
            lateral.append(anat.spleen[0].c[0] > anat.kidneys[1].c[0])
        if {"hepatomegaly", "cirrhosis", "liver_resection"} & set(anat.pathology.variants):
            continue   # these variants reshape the lobe after its floor was drawn
        right_lobe = anat.liver[0]
        floor_z = anat.liver_floor(right_lobe.c[0], right_lobe.c[1])
        # a point of the right lobe's ellipsoid under its inferior surface is outside the liver
        assert right_lobe.value(*np.float32([right_lobe.c[0], right_lobe.c[1], floor_z - 5.0])) > 0
    assert np.mean(below) >= 0.8 and np.mean(lateral) >= 0.85


def test_atrophic_pancreas_is_thinner_and_its_lobules_hold_fat():
    """Some glands are thin with fat between their lobules, as in many older patients: the fat
    lies inside the gland's outline, so it stays labelled pancreas, and its share is the drawn one."""
    from app.synth.anatomy import Anatomy
    from app.synth.painting import paint
    from app.synth.structures import FLARE_OF, ID
    anats = [Anatomy(np.random.default_rng([31, i])) for i in range(40)]
    fatty = [a for a in anats if a.pancreas_fat_share > 0]
    plain = [a for a in anats if a.pancreas_fat_share == 0]
    assert 6 <= len(fatty) <= 25 and plain
    # the lobulated glands include the atrophic ones, so they are thinner on average
    assert np.mean([a.pancreas.radii.mean() / a.s for a in fatty]) < np.mean([a.pancreas.radii.mean() / a.s for a in plain])
    anat = fatty[0]
    pts = anat.pancreas.pts
    lo, hi = pts.min(0) - 25, pts.max(0) + 25
    z, y, x = np.meshgrid(*(np.arange(lo[i], hi[i], 1.5, dtype=np.float32) for i in (2, 1, 0)), indexing="ij")
    structures = paint(anat, x, y, z)
    gland = FLARE_OF[structures] == 4
    fat = structures == ID["pancreas_fat"]
    assert FLARE_OF[ID["pancreas_fat"]] == 4 and fat.any()
    assert abs(fat.sum() / gland.sum() - anat.pancreas_fat_share) < 0.15, (fat.sum() / gland.sum(), anat.pancreas_fat_share)


def test_habitus_sets_the_fat_and_the_stomach_lies_in_front_of_the_pancreas():
    """An obese habitus has thicker subcutaneous fat and more visceral fat between fewer loops
    than a lean one; mesenteric vessels run through that fat; and the stomach never lies behind
    the pancreas's front surface (the lesser sac), whatever the habitus."""
    from app.synth.anatomy import Anatomy
    from app.synth.painting import GUT, paint
    from app.synth.structures import ID
    anats = [Anatomy(np.random.default_rng([41, i])) for i in range(12)]
    lean, obese = min(anats, key=lambda a: a.habitus), max(anats, key=lambda a: a.habitus)
    assert obese.habitus - lean.habitus > 0.5
    assert obese.fat / obese.s > lean.fat / lean.s and len(obese.small_bowel) < len(lean.small_bowel)
    fat_share = {}
    for name, anat in (("lean", lean), ("obese", obese)):
        zc = float(np.mean([k.c[2] for k in anat.kidneys]))
        zs = np.arange(zc - 120, zc + 40, 4.0, dtype=np.float32)
        xy = np.arange(-180, 180, 3.0, dtype=np.float32)
        z, y, x = np.meshgrid(zs, xy, xy, indexing="ij")
        structures = paint(anat, x, y, z)
        fat = (structures == ID["visceral_fat"]).sum()
        fat_share[name] = fat / (fat + np.isin(structures, GUT).sum())
        assert (structures == ID["mesenteric_vessel"]).sum() > 20
        # the stomach in front of the gland: in every left-right column (x, z) that holds both,
        # all of the stomach lies anterior (lower y) to all of the pancreas
        stomach = np.isin(structures, [i for n, i in ID.items() if n.startswith("stomach_")])
        gland = np.isin(structures, (ID["pancreas"], ID["pancreas_fat"]))
        y_grid = np.broadcast_to(y, structures.shape)
        back_of_stomach = np.where(stomach, y_grid, -np.inf).max(axis=1)
        front_of_gland = np.where(gland, y_grid, np.inf).min(axis=1)
        both = stomach.any(axis=1) & gland.any(axis=1)
        assert stomach.any() and gland.any()
        assert (back_of_stomach[both] < front_of_gland[both]).all()
    assert fat_share["obese"] > fat_share["lean"] + 0.05, fat_share


def test_hu_check_takes_off_the_calibration_and_knows_fatty_organs():
    """The realism HU check judges tissue, not the scanner: it removes the case's calibration
    offset, and lets an organ drawn fatty lie lower, but no lower than fatty infiltration goes."""
    from app.synth.phantom import make_phantom
    from app.synth.realism import HU_RANGE, hu_problems, organ_median_hu
    assert hu_problems("portal", {"liver": 110.0}) == []
    assert hu_problems("portal", {"liver": 50.0}) != []                        # too dark for a normal liver
    assert hu_problems("portal", {"liver": 50.0}, fatty=("liver",)) == []      # steatosis
    assert hu_problems("portal", {"liver": 10.0}, fatty=("liver",)) != []      # darker than fat infiltration makes it
    assert hu_problems("native", {"spleen": 70.0}) != []
    assert hu_problems("native", {"spleen": 70.0}, calibration_hu=10.0) == []
    ph = make_phantom(5, 0, "small")     # a case with realistic contrast, in a phase the check knows
    info = ph.info
    assert not info["random_contrast"] and info["phase"] in HU_RANGE
    assert -15 <= info["calibration_hu"] <= 12 and set(info["fatty"]) <= {"pancreas", "liver", "marrow"}
    assert hu_problems(info["phase"], organ_median_hu(ph.image, ph.labels), info["calibration_hu"],
                       tuple(info["fatty"])) == []


def _face_neighbours(mask: np.ndarray) -> np.ndarray:
    """Voxels with a face neighbour in mask (no wrap-around at the grid's edges)."""
    out = np.zeros_like(mask)
    for axis in range(3):
        lo, hi = [slice(None)] * 3, [slice(None)] * 3
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        out[tuple(lo)] |= mask[tuple(hi)]
        out[tuple(hi)] |= mask[tuple(lo)]
    return out


def test_gut_contents_keep_their_wall_and_the_mesentery_reaches_only_the_sma_colon():
    """Bowel contents never lie bare against the visceral fat: where a fat plane around the
    pancreas or a kidney cuts a loop, the loop's wall closes again (the previous generator left
    0.3-1.3 % of the content voxels of these anatomies touching fat). Mesenteric branches from
    the SMA reach the small bowel and the colon from the caecum to the transverse colon only."""
    from app.synth.anatomy import Anatomy
    from app.synth.painting import paint
    from app.synth.structures import ID
    contents = [i for n, i in ID.items()
                if n.startswith(("stomach_", "small_bowel_", "colon_", "duodenum_")) and not n.endswith("_wall")]
    for i in range(4):
        anat = Anatomy(np.random.default_rng([42, i]))
        zc = float(np.mean([k.c[2] for k in anat.kidneys]))
        zs = np.arange(zc - 60, zc + 60, 2.0, dtype=np.float32)
        xy = np.arange(-150, 150, 1.5, dtype=np.float32)
        z, y, x = np.meshgrid(zs, xy, xy, indexing="ij")
        structures = paint(anat, x, y, z)
        content = np.isin(structures, contents)
        bare = content & _face_neighbours(structures == ID["visceral_fat"])
        assert content.sum() > 10_000 and bare.sum() < 1e-3 * content.sum(), (i, int(bare.sum()))
        ends = np.array([vessel.pts[-1] for vessel in anat.mesenteric])
        on_loop = _is_one_of(ends, np.concatenate([tube.pts for tube, _ in anat.small_bowel]))
        on_later_colon = _is_one_of(ends, anat.colon.pts[anat.colon_sma_end:])
        assert not (on_later_colon & ~on_loop).any()


def _is_one_of(points: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """For each point, whether it is (to float precision) one of the candidate points."""
    return (np.abs(points[:, None, :] - candidates[None]).max(axis=2) < 1e-4).any(axis=1)


def test_pancreas_is_a_ribbon_taller_than_thick():
    """The gland's cross-section is taller (patient z) than it is thick across, by the drawn
    height; atrophic glands are thinner than the previous round ones ever were (13 mm)."""
    from app.synth.anatomy import Anatomy
    from app.synth.shapes import Tube
    tube = Tube(np.array([[-50, 0, 0], [50, 0, 0]], np.float32), np.array([5.0, 5.0], np.float32), None, 1.6)
    on_surface = tube.value(np.float32([0, 0, 0]), np.float32([5.0, 0, 0]), np.float32([0, 8.0, 7.9]))
    assert np.allclose(on_surface[:2], 0.0, atol=1e-5) and on_surface[2] < 0 < tube.value(0, 0, 8.1)
    lo, hi = tube.bbox()
    assert hi[2] >= 8.0 and lo[2] <= -8.0
    anats = [Anatomy(np.random.default_rng([33, i])) for i in range(40)]
    heights = np.array([a.pancreas.height for a in anats])
    assert heights.min() >= 1.0 and heights.max() <= 1.7 and heights.std() > 0.1
    body_thickness = np.array([2 * a.pancreas.radii[7] for a in anats])   # mm, across the body
    assert body_thickness.min() < 12 and body_thickness.max() > 20


def test_fat_planes_give_back_the_wall_against_the_gut_only():
    """A fat plane that cuts a bowel loop gives the loop its wall back; a plane against a solid
    organ leaves the bowel beside it as it was (no thickened wall)."""
    from app.synth.painting import GUT, SOLID, _fill_with_fat_plane
    from app.synth.shapes import Canvas, Ellipsoid
    from app.synth.structures import ID
    z, y, x = np.meshgrid(*(np.arange(-40, 40, 1.0, dtype=np.float32),) * 3, indexing="ij")
    gland = Ellipsoid(np.zeros(3, np.float32), np.full(3, 20.0, np.float32), np.eye(3), None)
    for planes, rewalled in ((((0.3, SOLID),), False), (((0.3, GUT),), True)):
        cv = Canvas(x, y, z)
        cv.T[:] = ID["small_bowel_fluid"]
        _fill_with_fat_plane(cv, gland, "pancreas", planes)
        walls = cv.T == ID["small_bowel_wall"]
        assert walls.any() == rewalled
        if rewalled:   # the wall lies between the plane's fat and the contents
            assert (cv.T == ID["visceral_fat"]).any() and (cv.T == ID["small_bowel_fluid"]).any()
