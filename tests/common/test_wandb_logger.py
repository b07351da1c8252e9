import glob
import os

import numpy as np
import pytest
import torch as th

wandb = pytest.importorskip("wandb")
from sb3_fedpg import FederatedPG  # noqa: E402
from sb3_fedpg.common.wandb_logger import (  # noqa: E402
    STEP_METRIC,
    WandbOutputFormat,
    configure_wandb_logger,
    read_offline_history,
)


def test_fedpg_scalars_reach_offline_wandb_run(tmp_path):
    assert os.environ["WANDB_MODE"] == "offline"  # set by tests/conftest.py: no network
    model = FederatedPG(
        "MlpPolicy",
        "sb3_fedpg/HeteroCartPole-v0",
        n_agents=2,
        n_envs_per_agent=4,
        n_steps=32,
        local_steps=2,
        policy_kwargs={"net_arch": [16]},
        seed=0,
    )
    logger = configure_wandb_logger(model, project="sb3-fedpg-tests", folder=tmp_path, format_strings=("csv", "tensorboard"))
    model.learn(1_500)
    logger.close()

    rows = read_offline_history(tmp_path)
    assert len(rows) >= 2
    keys = set().union(*rows)
    for key in (
        "rollout/ep_rew_mean",
        "fed/agent_0/ep_rew_mean",
        "fed/agent_1/ep_rew_mean",
        "fed/drift",
        "fed/correction_norm",
        "fed/bytes_up",
        "train/policy_gradient_norm",
        "time/fps",
        "time/total_timesteps",
    ):
        assert key in keys, key
    # The x-axis is the SB3 dump step (num_timesteps), increasing.
    steps = [row[STEP_METRIC] for row in rows]
    assert steps == sorted(steps) and steps[-1] == model.num_timesteps
    last = next(row for row in reversed(rows) if "rollout/ep_rew_mean" in row)
    assert np.isfinite(last["rollout/ep_rew_mean"])
    # The other formats were written too: CSV and a TensorBoard events file.
    assert (tmp_path / "progress.csv").read_text().startswith(("fed/", "rollout/", "time/", "train/"))
    assert glob.glob(str(tmp_path / "events.out.tfevents.*"))


def test_output_format_filters_and_converts(tmp_path):
    run = wandb.init(project="sb3-fedpg-tests", dir=str(tmp_path))
    writer = WandbOutputFormat(run)
    writer.write(
        {"a/float": np.float32(1.5), "a/int": 3, "a/tensor": th.tensor(2.0), "a/text": "hello", "a/skip": 1.0},
        {"a/float": None, "a/int": ("tensorboard",), "a/tensor": None, "a/text": None, "a/skip": ("wandb",)},
        step=7,
    )
    writer.close()  # not ours: the run stays open
    run.finish()
    (row,) = read_offline_history(tmp_path)
    assert row["a/float"] == 1.5 and row["a/int"] == 3 and row["a/tensor"] == 2.0 and row[STEP_METRIC] == 7
    assert "a/text" not in row and "a/skip" not in row


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="give the log folder once"):
        configure_wandb_logger(str(tmp_path), folder=str(tmp_path))


def test_read_offline_history_needs_a_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="no offline W&B run"):
        read_offline_history(tmp_path)
