"""bench.gpu_carry: a preprocessed task packed for the GPU machine unpacks into what nnU-Net wrote,
the image within half a quantisation step, everything else exactly."""
import json
import pickle

import numpy as np
import pytest

from bench.gpu_carry import pack, unpack

TASK = "Task599_Carry"


def _work_folder(root, rng):
    pre = root / "work" / "nnUNet_preprocessed" / TASK
    stage = pre / "nnUNetData_plans_small_stage0"
    stage.mkdir(parents=True)
    cases = {}
    for name in ("case_a", "case_b"):
        image = rng.uniform(-2.7, 2.9, (6, 7, 8)).astype(np.float32)
        seg = rng.integers(-1, 5, (6, 7, 8)).astype(np.float32)
        np.savez_compressed(stage / f"{name}.npz", data=np.stack([image, seg]))
        (stage / f"{name}.pkl").write_bytes(pickle.dumps({"case": name}))
        cases[name] = (image, seg)
    (pre / "nnUNetPlans_small_plans_3D.pkl").write_bytes(b"plans")
    (pre / "nnUNetPlans_small.preprocessed").write_text("done")
    (pre / "dataset.json").write_text(json.dumps({"name": "carry"}))
    (pre / "splits_final.pkl").write_bytes(pickle.dumps([{"train": ["case_a"], "val": ["case_b"]}]))
    (root / "init.model").write_bytes(b"weights")
    (root / "init.model.pkl").write_bytes(b"init info")
    return cases


def test_pack_then_unpack_gives_back_the_preprocessed_task(tmp_path):
    cases = _work_folder(tmp_path, np.random.default_rng(0))
    packed = pack(tmp_path / "work", TASK, tmp_path / "init.model", tmp_path / "carry.tar")
    assert packed["cases"] == 2 and packed["task"] == TASK
    dest = tmp_path / "gpu"
    assert unpack(tmp_path / "carry.tar", dest)["task"] == TASK

    pre = dest / "work" / "nnUNet_preprocessed" / TASK
    for name, (image, seg) in cases.items():
        data = np.load(pre / "nnUNetData_plans_small_stage0" / f"{name}.npz")["data"]
        assert data.dtype == np.float32 and data.shape == (2, 6, 7, 8)
        step = (image.max() - image.min()) / 255
        assert np.abs(data[0] - image).max() <= step / 2 + 1e-6
        assert data[0].min() == pytest.approx(image.min()) and data[0].max() == pytest.approx(image.max())
        np.testing.assert_array_equal(data[1], seg)
        assert pickle.loads((pre / "nnUNetData_plans_small_stage0" / f"{name}.pkl").read_bytes()) == {"case": name}
    assert (pre / "nnUNetPlans_small_plans_3D.pkl").read_bytes() == b"plans"
    assert (pre / "nnUNetPlans_small.preprocessed").is_file()
    assert pickle.loads((pre / "splits_final.pkl").read_bytes()) == [{"train": ["case_a"], "val": ["case_b"]}]
    assert json.loads((dest / TASK / "dataset.json").read_text()) == {"name": "carry"}
    assert (dest / TASK / "imagesTr").is_dir() and (dest / TASK / "labelsTr").is_dir()
    assert (dest / "init.model").read_bytes() == b"weights"
    assert (dest / "init.model.pkl").read_bytes() == b"init info"


def test_a_subset_is_spread_over_the_cases(tmp_path):
    _work_folder(tmp_path, np.random.default_rng(1))
    stage = tmp_path / "work" / "nnUNet_preprocessed" / TASK / "nnUNetData_plans_small_stage0"
    for name in ("case_c", "case_d", "case_e"):
        for suffix in (".npz", ".pkl"):
            (stage / f"{name}{suffix}").write_bytes((stage / f"case_a{suffix}").read_bytes())
    assert pack(tmp_path / "work", TASK, tmp_path / "init.model", tmp_path / "carry.tar", max_cases=3)["cases"] == 3
    unpack(tmp_path / "carry.tar", tmp_path / "gpu")
    kept = sorted(p.name for p in (tmp_path / "gpu" / "work" / "nnUNet_preprocessed" / TASK
                                   / "nnUNetData_plans_small_stage0").glob("*.npz"))
    assert kept == ["case_a.npz", "case_c.npz", "case_e.npz"]
    # the full task's split names cases that stayed behind: nnU-Net must draw a new one
    assert not (tmp_path / "gpu" / "work" / "nnUNet_preprocessed" / TASK / "splits_final.pkl").exists()
    assert (tmp_path / "gpu" / "work" / "nnUNet_preprocessed" / TASK / "dataset.json").is_file()


def test_a_work_folder_without_preprocessed_data_is_refused(tmp_path):
    (tmp_path / "work" / "nnUNet_preprocessed" / TASK).mkdir(parents=True)
    (tmp_path / "init.model").write_bytes(b"weights")
    with pytest.raises(SystemExit, match="no preprocessed data"):
        pack(tmp_path / "work", TASK, tmp_path / "init.model", tmp_path / "carry.tar")
    assert not (tmp_path / "carry.tar").exists()
