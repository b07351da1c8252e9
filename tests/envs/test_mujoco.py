import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("mujoco", reason="needs gymnasium[mujoco]")

from sb3_fedpg.envs import HalfCheetahVelocityReward
from stable_baselines3.common.env_checker import check_env

from sb3_fedpg import FederatedPG

CHEETAH = "sb3_fedpg/HeteroHalfCheetah-v0"


@pytest.fixture(autouse=True)
def _mujoco_log_in_tmp(tmp_path, monkeypatch):
    # MuJoCo writes MUJOCO_LOG.TXT in the working directory.
    monkeypatch.chdir(tmp_path)


def test_check_env_per_agent():
    for agent in range(3):
        check_env(gym.make(CHEETAH, agent=agent, n_agents=3), warn=False)


@pytest.mark.parametrize("heterogeneity", [0.0, 1.0])
def test_same_transitions_different_rewards(rollout_agents, check_shared_transitions, heterogeneity):
    record = rollout_agents(CHEETAH, n_agents=3, n_steps=20, heterogeneity=heterogeneity)
    check_shared_transitions(record, heterogeneity)


def test_reward_tracks_gymnasium_velocity(rollout_agents):
    record = rollout_agents(CHEETAH, n_agents=3, n_steps=20, heterogeneity=1.0)
    targets = HalfCheetahVelocityReward(3, heterogeneity=1.0).targets
    np.testing.assert_allclose(targets, [0.5, 2.0, 3.5])
    for rewards, infos in zip(record["rewards"], record["infos"], strict=True):
        for agent in range(3):
            info = infos[agent]
            # r_i = −|v − v_i| − ctrl_cost with v and ctrl_cost as Gymnasium reports them
            expected = -abs(info["x_velocity"] - targets[agent]) + info["reward_ctrl"]
            assert rewards[agent] == pytest.approx(expected, abs=1e-4)


def test_fedpg_trains():
    model = FederatedPG(
        "MlpPolicy",
        CHEETAH,
        n_agents=2,
        n_envs_per_agent=2,
        n_steps=16,
        local_steps=2,
        policy_kwargs={"net_arch": [16]},
        seed=0,
    )
    model.learn(300)
    assert model.num_timesteps >= 300
