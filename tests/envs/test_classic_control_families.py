import gymnasium as gym
import numpy as np
import pytest
from sb3_fedpg.envs import MountainCarFuelReward, get_family, pole_length_scales
from stable_baselines3.common.env_checker import check_env

from sb3_fedpg import FederatedPG, make_federated_vec_env

MOUNTAIN_CAR = "sb3_fedpg/HeteroMountainCarContinuous-v0"
POLE_LENGTH = "sb3_fedpg/HeteroCartPoleLength-v0"


@pytest.mark.parametrize("env_id", [MOUNTAIN_CAR, POLE_LENGTH])
def test_check_env_per_agent(env_id):
    for agent in range(3):
        check_env(gym.make(env_id, agent=agent, n_agents=3, heterogeneity=1.0), warn=False)


@pytest.mark.parametrize("heterogeneity", [0.0, 1.0])
def test_mountain_car_same_transitions_different_rewards(rollout_agents, check_shared_transitions, heterogeneity):
    record = rollout_agents(MOUNTAIN_CAR, n_agents=3, n_steps=30, heterogeneity=heterogeneity)
    check_shared_transitions(record, heterogeneity)


def test_mountain_car_reward_formula():
    reward = MountainCarFuelReward(3, heterogeneity=1.0)
    np.testing.assert_allclose(reward.prices, [0.01, 0.1, 1.0], rtol=1e-6)
    obs = np.zeros((3, 2), dtype=np.float32)
    action = np.full((3, 1), 0.5, dtype=np.float32)
    base = np.array([100 - 0.025, -0.025, -0.025], dtype=np.float32)  # Gymnasium's: goal bonus − 0.1 a²
    # r_i = 100·goal − c_i a²
    np.testing.assert_allclose(reward(obs, action, obs, base, np.arange(3)), [100 - 0.0025, -0.025, -0.25], rtol=1e-5)


def test_pole_length_transitions_differ_rewards_equal():
    n_agents = 3
    envs = [gym.make(POLE_LENGTH, agent=i, n_agents=n_agents, heterogeneity=1.0) for i in range(n_agents)]
    np.testing.assert_allclose([env.unwrapped.length for env in envs], [0.25, 0.5, 1.0])
    for env in envs:
        env.reset(seed=3)
    steps = [env.step(1) for env in envs]
    # Same state and action, different pole lengths: different next states, same (CartPole) reward.
    assert np.ptp(np.stack([s[0] for s in steps]), axis=0).max() > 1e-4
    assert [s[1] for s in steps] == [1.0] * n_agents
    # The 0.5 scale agent is plain CartPole.
    ref = gym.make("CartPole-v1")
    ref.reset(seed=3)
    np.testing.assert_array_equal(ref.step(1)[0], steps[1][0])


def test_pole_length_zero_heterogeneity_is_cartpole():
    np.testing.assert_array_equal(pole_length_scales(4, 0.0), np.ones(4))
    fed = make_federated_vec_env(POLE_LENGTH, n_agents=2, n_envs_per_agent=2, env_kwargs={"heterogeneity": 0.0})
    np.testing.assert_array_equal(fed.venv.length, np.full(4, 0.5))


@pytest.mark.parametrize("mode", ["native", "sync"])
def test_pole_length_vector_env_matches_single_agent_envs(mode):
    n_agents = 3
    fed = make_federated_vec_env(
        POLE_LENGTH, n_agents=n_agents, n_envs_per_agent=2, env_kwargs={"heterogeneity": 1.0}, vectorization_mode=mode
    )
    fed.reset()
    singles = [gym.make(POLE_LENGTH, agent=i, n_agents=n_agents) for i in range(n_agents)]
    # Put every sub-env and every single-agent env in the same state, then push right once.
    state = np.array([0.01, 0.02, 0.03, 0.04])
    if mode == "native":
        fed.venv.state[:] = state[:, None]
    else:
        for sub in fed.venv.envs:
            sub.unwrapped.state = state.copy()
    obs, _, _, _ = fed.step(np.ones(fed.num_envs, dtype=np.int64))
    for agent, env in enumerate(singles):
        env.reset(seed=0)
        env.unwrapped.state = state.copy()
        single_obs = env.step(1)[0]
        for sub in range(2):
            np.testing.assert_allclose(obs[2 * agent + sub], single_obs, rtol=1e-5, atol=1e-6)
    assert np.ptp(obs[::2, 3]) > 1e-3  # the angular accelerations differ between agents


def test_bad_family_arguments():
    for env_id in (MOUNTAIN_CAR, POLE_LENGTH):
        with pytest.raises(ValueError, match=r"heterogeneity must be in \[0, 1\]"):
            make_federated_vec_env(env_id, n_agents=2, env_kwargs={"heterogeneity": 1.5})
        with pytest.raises(TypeError, match="unknown keyword argument"):
            make_federated_vec_env(env_id, n_agents=2, env_kwargs={"pole": 1.0})
    with pytest.raises(ValueError, match="unknown vectorization_mode"):
        get_family(POLE_LENGTH).make_vector_env(2, 2, "threads")


@pytest.mark.parametrize("env_id", [MOUNTAIN_CAR, POLE_LENGTH])
def test_fedpg_trains(env_id):
    model = FederatedPG(
        "MlpPolicy",
        env_id,
        n_agents=2,
        n_envs_per_agent=2,
        n_steps=16,
        local_steps=2,
        policy_kwargs={"net_arch": [16]},
        seed=0,
    )
    model.learn(300)
    assert model.num_timesteps >= 300
    assert model.env.n_agents == 2
