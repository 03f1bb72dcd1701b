"""CheckpointManager: atomic writes, retention, best/latest pointers; ensure_model_dir."""

import json
import os

import pytest
import torch

from recframe.training import checkpoint as ckpt_mod
from recframe.training.checkpoint import CheckpointError, CheckpointManager, ModelDirNotEmptyError, ensure_model_dir


def state(step: int) -> dict:
    return {"step": step, "w": torch.full((2,), float(step))}


def names(mgr: CheckpointManager) -> list[str]:
    return [p.name for _, p in mgr.checkpoints()]


def test_save_load_latest(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_checkpoint_max=3)
    assert mgr.latest_path() is None and mgr.best_path() is None
    p = mgr.save(10, state(10), metrics={"loss": 0.5})
    assert p == tmp_path / "checkpoints" / "ckpt-00000010.pt"
    assert mgr.latest_path() == p
    info = json.loads((tmp_path / "checkpoints" / "latest.json").read_text())
    assert info == {"step": 10, "path": "ckpt-00000010.pt", "metrics": {"loss": 0.5}}
    loaded = mgr.load("latest")
    assert loaded["step"] == 10 and torch.equal(loaded["w"], torch.tensor([10.0, 10.0]))
    assert mgr.load(p)["step"] == 10
    with pytest.raises(FileNotFoundError, match="best.pt"):
        mgr.load("best")
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        mgr.load(tmp_path / "nope.pt")


def test_safe_load_accepts_rng_states_but_not_arbitrary_objects(tmp_path):
    import random

    import numpy as np

    mgr = CheckpointManager(tmp_path, keep_checkpoint_max=3)
    rng = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    mgr.save(1, {"rng": rng, "best_value": -float("inf")})
    loaded = mgr.load("latest")["rng"]
    assert loaded["python"] == rng["python"] and torch.equal(loaded["torch"], rng["torch"])
    assert np.array_equal(loaded["numpy"][1], rng["numpy"][1])
    np.random.set_state(loaded["numpy"])  # a valid numpy state
    mgr.save(2, {"obj": np.array([object()], dtype=object)})
    with pytest.raises(CheckpointError, match="holds objects the safe loader refuses to unpickle"):
        mgr.load("latest")
    assert mgr.load("latest", weights_only=False)["obj"].dtype == object


def test_retention_keeps_newest_and_best_apart(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_checkpoint_max=2)
    mgr.save(1, state(1))
    mgr.save(2, state(2), is_best=True, metrics={"hit_rate@50": torch.tensor(0.25)})
    assert names(mgr) == ["ckpt-00000001.pt", "ckpt-00000002.pt"]
    mgr.save(3, state(3))
    assert names(mgr) == ["ckpt-00000002.pt", "ckpt-00000003.pt"]
    mgr.save(4, state(4))
    assert names(mgr) == ["ckpt-00000003.pt", "ckpt-00000004.pt"]  # step 2 rotated away...
    assert mgr.load("best")["step"] == 2  # ...but the best survives as best.pt
    assert mgr.best_info() == {"step": 2, "path": "best.pt", "metrics": {"hit_rate@50": 0.25}}
    mgr.save(5, state(5), is_best=True, metrics={"hit_rate@50": 0.5})
    assert mgr.load("best")["step"] == 5 and mgr.best_info()["step"] == 5
    assert mgr.load("latest")["step"] == 5
    assert names(mgr) == ["ckpt-00000004.pt", "ckpt-00000005.pt"]


def test_keep_zero_keeps_all_and_new_manager_sees_old_files(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_checkpoint_max=0)
    for s in (100, 200, 300):
        mgr.save(s, state(s))
    mgr2 = CheckpointManager(tmp_path, keep_checkpoint_max=2)
    assert [s for s, _ in mgr2.checkpoints()] == [100, 200, 300]
    assert mgr2.load("latest")["step"] == 300
    mgr2.save(400, state(400))
    assert [s for s, _ in mgr2.checkpoints()] == [300, 400]


def test_resaving_an_earlier_step_never_deletes_the_new_file(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_checkpoint_max=2)
    mgr.save(900, state(900))
    mgr.save(1000, state(1000))
    p = mgr.save(600, state(600))
    assert p.exists() and mgr.latest_path() == p
    assert [s for s, _ in mgr.checkpoints()] == [600, 1000]


def test_latest_falls_back_to_highest_step_without_pointer(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_checkpoint_max=5)
    mgr.save(1, state(1))
    mgr.save(2, state(2))
    (tmp_path / "checkpoints" / "latest.json").write_text("{corrupt")
    assert mgr.latest_path().name == "ckpt-00000002.pt"


def test_crash_during_save_leaves_no_partial_file(tmp_path, monkeypatch):
    mgr = CheckpointManager(tmp_path, keep_checkpoint_max=3)
    mgr.save(1, state(1))
    before = (tmp_path / "checkpoints" / "ckpt-00000001.pt").read_bytes()

    real_save = torch.save

    def crashing_save(obj, f, *a, **kw):
        f.write(b"PK\x03\x04 half a zip")  # some bytes reach the temporary file...
        raise OSError("disk full")  # ...then the write dies

    monkeypatch.setattr(ckpt_mod.torch, "save", crashing_save)
    with pytest.raises(OSError, match="disk full"):
        mgr.save(2, state(2))  # new name: must not appear
    with pytest.raises(OSError, match="disk full"):
        mgr.save(1, state(99))  # existing name: must stay unchanged
    monkeypatch.setattr(ckpt_mod.torch, "save", real_save)

    d = tmp_path / "checkpoints"
    assert not (d / "ckpt-00000002.pt").exists()
    assert (d / "ckpt-00000001.pt").read_bytes() == before
    assert sorted(os.listdir(d)) == ["ckpt-00000001.pt", "latest.json"]  # no temp junk left
    assert mgr.load("latest")["step"] == 1
    assert [s for s, _ in mgr.checkpoints()] == [1]


def test_killed_process_junk_is_ignored_and_cleaned(tmp_path):
    d = tmp_path / "checkpoints"
    d.mkdir()
    (d / ".tmp-ckpt-00000007.pt.abc123").write_bytes(b"partial")  # as left by a SIGKILL
    mgr = CheckpointManager(tmp_path, keep_checkpoint_max=3)
    assert mgr.checkpoints() == [] and mgr.latest_path() is None
    assert os.listdir(d) == []


def test_ensure_model_dir(tmp_path):
    new = tmp_path / "a" / "run"
    assert ensure_model_dir(new, continue_train=False) == new and new.is_dir()
    assert ensure_model_dir(new, continue_train=False) == new  # exists but empty: fine
    (new / "log.jsonl").write_text("{}\n")
    with pytest.raises(ModelDirNotEmptyError) as e:
        ensure_model_dir(new, continue_train=False)
    assert str(new) in str(e.value) and "use --continue_train or a new model_dir" in str(e.value)
    assert ensure_model_dir(new, continue_train=True) == new
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(NotADirectoryError):
        ensure_model_dir(f, continue_train=True)


def test_atomic_write_gives_the_permissions_of_a_plain_open(tmp_path):
    import os
    import stat

    from recframe.files import atomic_write

    mask = os.umask(0o022)
    try:
        atomic_write(tmp_path / "a.json", lambda f: f.write(b"{}"))
        (tmp_path / "b.json").write_bytes(b"{}")
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == stat.S_IMODE((tmp_path / "b.json").stat().st_mode) == 0o644


def test_read_only_manager_finds_checkpoints_without_touching_the_directory(tmp_path):
    from recframe.training.checkpoint import CheckpointManager

    writer = CheckpointManager(tmp_path, keep_checkpoint_max=3)
    writer.save(5, {"w": 1}, is_best=True)
    junk = writer.dir / ".tmp-in-progress"
    junk.write_bytes(b"partial")
    reader = CheckpointManager(tmp_path, read_only=True)
    assert reader.latest_path() == writer.step_path(5) and reader.best_path() == writer.dir / "best.pt"
    assert junk.exists()  # a writer's temporary file is left alone
    empty = CheckpointManager(tmp_path / "nothing", read_only=True)
    assert empty.latest_path() is None and not (tmp_path / "nothing").exists()
