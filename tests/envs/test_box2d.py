import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("Box2D", reason="needs gymnasium[box2d]")

from sb3_fedpg.envs import LunarLanderTargetReward
from stable_baselines3.common.env_checker import check_env

from sb3_fedpg import FederatedPG, make_federated_vec_env

LUNAR = "sb3_fedpg/HeteroLunarLander-v0"


@pytest.mark.parametrize("continuous", [False, True])
def test_check_env_per_agent(continuous):
    for agent in range(3):
        env = gym.make(LUNAR, agent=agent, n_agents=3, continuous=continuous)
        check_env(env, warn=False)
        assert isinstance(env.action_space, gym.spaces.Box if continuous else gym.spaces.Discrete)


@pytest.mark.parametrize("heterogeneity", [0.0, 1.0])
def test_same_transitions_different_rewards(rollout_agents, check_shared_transitions, heterogeneity):
    record = rollout_agents(LUNAR, n_agents=3, n_steps=40, heterogeneity=heterogeneity)
    check_shared_transitions(record, heterogeneity)


def test_zero_heterogeneity_is_gymnasium_reward():
    ref = gym.make("LunarLander-v3")
    agent = gym.make(LUNAR, agent=2, n_agents=3, heterogeneity=0.0)
    ref.reset(seed=7)
    agent.reset(seed=7)
    for t in range(200):
        a = t % 4
        ref_step, agent_step = ref.step(a), agent.step(a)
        assert agent_step[1] == pytest.approx(ref_step[1], abs=1e-4)
        if ref_step[2] or ref_step[3]:
            break


def test_reward_is_shaping_around_the_agents_target():
    reward = LunarLanderTargetReward(3, heterogeneity=1.0)
    np.testing.assert_allclose(reward.targets, [-0.5, 0.0, 0.5])
    obs = np.zeros((3, 8), dtype=np.float32)
    next_obs = obs.copy()
    next_obs[:, 0] = 0.5  # moved right onto agent 2's target
    base = np.zeros(3, dtype=np.float32)
    r = reward(obs, np.zeros(3, dtype=np.int64), next_obs, base, np.arange(3))
    # Agent 2 got 0.5 closer to its target (+50) where Gymnasium's distance grew by 0.5 (−50, undone here).
    np.testing.assert_allclose(r, [0.0, 0.0, 100.0], atol=1e-4)
    # Terminal rewards (±100) are Gymnasium's for every agent.
    np.testing.assert_array_equal(reward(obs, np.zeros(3), next_obs, np.full(3, -100.0, np.float32), np.arange(3)), -100.0)


def test_fedpg_trains():
    model = FederatedPG(
        "MlpPolicy", LUNAR, n_agents=2, n_envs_per_agent=2, n_steps=16, local_steps=2, policy_kwargs={"net_arch": [16]}, seed=0
    )
    model.learn(300)
    assert model.num_timesteps >= 300
    env = make_federated_vec_env(LUNAR, n_agents=2, n_envs_per_agent=1, env_kwargs={"continuous": True})
    assert isinstance(env.action_space, gym.spaces.Box)
