import pathlib

import pytest

from sb3_fedpg.common.callbacks import RoundCheckpointCallback, latest_checkpoint, list_checkpoints


class FakeModel:
    """What the callback uses of FederatedPG: the round counter and save_checkpoint."""

    def __init__(self):
        self._n_rounds = 0

    def save_checkpoint(self, path):
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(str(self._n_rounds))


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
    assert latest_checkpoint(tmp_path, prefix).read_text() == "5"


def test_keep_last_leaves_other_prefixes_alone(tmp_path):
    (tmp_path / "other_1_rounds.zip").write_text("x")
    (tmp_path / "fedpg_x_1_rounds.zip").write_text("x")
    _run(RoundCheckpointCallback(save_freq=2, save_path=str(tmp_path), keep_last=1), 6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fedpg_6_rounds.zip", "fedpg_x_1_rounds.zip", "other_1_rounds.zip"]
