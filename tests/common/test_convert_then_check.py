"""Every value from an env is checked after its conversion to the dtype training uses (float32), naming the agent."""

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.vec_env import DummyVecEnv

from sb3_fedpg import FederatedPG, make_federated_vec_env
from sb3_fedpg.common.federated_vec_env import check_observations, check_rewards


def test_check_rewards_converts_before_checking():
    agents = np.array([0, 0, 1, 1])
    ok = check_rewards(np.array([1.0, 2.0, 3.0, 1e38]), 4, agents)
    assert ok.dtype == np.float32 and np.isfinite(ok).all()
    with pytest.raises(ValueError, match=r"agent\(s\) \[1\] \(finite before the conversion to float32"):
        check_rewards(np.array([1.0, 2.0, 3.0, 1e300]), 4, agents)
    with pytest.raises(ValueError, match=r"agent\(s\) \[0\]; fix"):
        check_rewards(np.array([np.nan, 2.0, 3.0, 4.0]), 4, agents)
    with pytest.raises(ValueError, match="dtype <U1, expected real numbers"):
        check_rewards(np.array(["a", "b", "c", "d"]), 4, agents)


def test_check_observations_converts_before_checking():
    agents = np.array([0, 1, 2])
    check_observations(np.zeros((3, 4)), agents)
    check_observations(np.arange(3), agents)  # discrete observations: nothing to check
    obs = np.zeros((3, 4))
    obs[2, 1] = 1e300  # finite float64, inf float32
    with pytest.raises(ValueError, match=r"non-finite observation .* agent\(s\) \[2\]"):
        check_observations(obs, agents)


def test_check_observations_looks_inside_dict_observations():
    agents = np.array([0, 1, 2])
    obs = {"image": np.zeros((3, 2, 2), dtype=np.uint8), "vector": np.zeros((3, 4), dtype=np.float32)}
    check_observations(obs, agents)
    obs["vector"][1, 3] = np.nan
    with pytest.raises(ValueError, match=r"non-finite observation .* agent\(s\) \[1\]"):
        check_observations(obs, agents)


def test_a_float64_reward_of_1e300_is_refused_naming_the_agent():
    ok = lambda obs, action, next_obs, reward: reward
    big = lambda obs, action, next_obs, reward: np.full(len(obs), 1e300)
    env = make_federated_vec_env("CartPole-v1", n_envs_per_agent=2, reward_fns=[ok, ok, big], seed=0)
    env.reset()
    with pytest.raises(ValueError, match=r"agent\(s\) \[2\] \(finite before the conversion to float32"):
        env.step(np.zeros(6, dtype=np.int64))


class _Overflowing(gym.Wrapper):
    """An env whose observation (or reward) goes beyond float32 after a few steps."""

    def __init__(self, env, what):
        super().__init__(env)
        self.what, self.t = what, 0

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.t += 1
        if self.t > 3 and self.what == "obs":
            obs = obs.astype(np.float64)
            obs[0] = 1e300
        if self.t > 3 and self.what == "reward":
            reward = 1e300
        return obs, reward, terminated, truncated, info


@pytest.mark.parametrize("what, message", [("obs", "non-finite observation"), ("reward", "non-finite reward")])
def test_plain_vec_env_values_are_checked_in_the_rollout(what, message):
    # A plain SB3 VecEnv stores rewards as float32 itself (1e300 arrives as inf): the rollout checks them.
    def make(i):
        return lambda: _Overflowing(gym.make("CartPole-v1"), what if i == 3 else "none")

    env = DummyVecEnv([make(i) for i in range(4)])
    model = FederatedPG("MlpPolicy", env, n_agents=2, n_steps=8, local_steps=1, seed=0)
    before = model.get_global_parameters()
    with pytest.raises(ValueError, match=rf"{message} .*agent\(s\) \[1\]"):
        model.learn(200)
    assert model.num_timesteps == 0
    assert (model.get_global_parameters() == before).all()


def test_non_finite_observation_from_a_federated_env_names_the_agent():
    factories = [lambda: gym.make("CartPole-v1"), lambda: _Overflowing(gym.make("CartPole-v1"), "obs")]
    env = make_federated_vec_env(factories, n_envs_per_agent=2, seed=0, vectorization_mode="sync")
    env.reset()
    with pytest.raises(ValueError, match=r"non-finite observation .* agent\(s\) \[1\]"):
        for _ in range(6):
            env.step(np.zeros(4, dtype=np.int64))
