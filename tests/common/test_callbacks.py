import json
import pathlib
import zipfile

import pytest
import torch as th
from stable_baselines3.common.callbacks import BaseCallback

from sb3_fedpg import FederatedPG, FederatedPPO
from sb3_fedpg.common.callbacks import RoundCheckpointCallback, checkpoint_run_id, latest_checkpoint, list_checkpoints


class FakeModel:
    """What the callback uses of FederatedPG: the round counter, the run id and save_checkpoint (a zip like SB3's)."""

    def __init__(self, run_id="run-a"):
        self._n_rounds = 0
        self.run_id = run_id

    def save_checkpoint(self, path):
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("data", json.dumps({"run_id": self.run_id, "round": self._n_rounds}))


def saved_round(path):
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read("data"))["round"]


def _run(callback, rounds):
    callback.model = FakeModel()
    for _ in range(rounds):
        callback.model._n_rounds += 1
        assert callback.on_round_end()


@pytest.mark.parametrize("prefix", ["fedpg", "run1/fedpg", "a/b/ckpt", "sub/"])
def test_keep_last_with_a_prefix_holding_a_folder(tmp_path, prefix):
    # keep_last was ignored when name_prefix contained "/": the listing looked in the wrong folder.
    _run(RoundCheckpointCallback(save_freq=1, save_path=str(tmp_path), name_prefix=prefix, keep_last=2), 5)
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.zip"))
    assert written == [f"{prefix}_4_rounds.zip", f"{prefix}_5_rounds.zip"]
    assert [p.name for p in list_checkpoints(tmp_path, prefix)] == [written[0].split("/")[-1], written[1].split("/")[-1]]
    assert saved_round(latest_checkpoint(tmp_path, prefix)) == 5


def test_keep_last_leaves_other_prefixes_alone(tmp_path):
    (tmp_path / "other_1_rounds.zip").write_text("x")
    (tmp_path / "fedpg_x_1_rounds.zip").write_text("x")
    _run(RoundCheckpointCallback(save_freq=2, save_path=str(tmp_path), keep_last=1), 6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fedpg_6_rounds.zip", "fedpg_x_1_rounds.zip", "other_1_rounds.zip"]


@pytest.mark.parametrize("keep_last", [None, 2])
def test_a_second_run_in_the_same_checkpoint_folder_is_refused_and_the_first_is_intact(tiny_model, tmp_path, keep_last):
    first = tiny_model()
    first.learn(6 * first.steps_per_round, callback=RoundCheckpointCallback(1, str(tmp_path), keep_last=keep_last))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    second = tiny_model(seed=1)
    with pytest.raises(ValueError, match="already holds checkpoints of another run"):
        second.learn(2 * second.steps_per_round, callback=RoundCheckpointCallback(1, str(tmp_path), keep_last=keep_last))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert checkpoint_run_id(latest_checkpoint(tmp_path)) == first.run_id


def test_keep_last_prunes_only_its_own_run_and_a_resumed_run_is_the_same_run(tiny_model, tmp_path):
    model = tiny_model()
    model.learn(3 * model.steps_per_round, callback=RoundCheckpointCallback(1, str(tmp_path), keep_last=2))
    resumed = FederatedPG.load_checkpoint(latest_checkpoint(tmp_path))
    assert resumed.run_id == model.run_id
    resumed.learn(
        2 * model.steps_per_round, reset_num_timesteps=False, callback=RoundCheckpointCallback(1, str(tmp_path), keep_last=2)
    )
    assert [p.name for p in list_checkpoints(tmp_path)] == ["fedpg_4_rounds.zip", "fedpg_5_rounds.zip"]
    assert list_checkpoints(tmp_path, run_id="someone-else") == []


def test_latest_checkpoint_skips_a_truncated_newest_file(tiny_model, tmp_path):
    model = tiny_model()
    model.learn(3 * model.steps_per_round, callback=RoundCheckpointCallback(1, str(tmp_path)))
    newest = tmp_path / "fedpg_3_rounds.zip"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    with pytest.warns(UserWarning, match="unreadable"):
        found = latest_checkpoint(tmp_path)
    assert found == tmp_path / "fedpg_2_rounds.zip"
    assert FederatedPG.load_checkpoint(found).num_timesteps == 2 * model.steps_per_round


class CheckpointMidRound(BaseCallback):
    def __init__(self, path):
        super().__init__()
        self.path, self.error = path, None

    def _on_step(self):
        if self.error is None and self.num_timesteps > 0:
            try:
                self.model.save_checkpoint(self.path)
            except RuntimeError as error:
                self.error = error
        return True


@pytest.mark.parametrize("cls", [FederatedPG, FederatedPPO])
def test_save_checkpoint_mid_round_is_refused_and_save_still_works(tiny_model, tmp_path, cls):
    model = tiny_model(cls)
    callback = CheckpointMidRound(tmp_path / "mid.zip")
    model.learn(model.steps_per_round, callback=callback)
    assert "in the middle of a round" in str(callback.error) and not (tmp_path / "mid.zip").exists()
    model.save_checkpoint(tmp_path / "boundary.zip")  # between rounds: fine
    model.save(tmp_path / "model.zip")
    assert th.equal(cls.load(tmp_path / "model.zip").get_global_parameters(), model.get_global_parameters())
