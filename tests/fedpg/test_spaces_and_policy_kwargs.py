"""SB3 parity details: float64 spaces (the policy_kwargs audit is in tests/common/test_policy_kwargs.py)."""

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces

from sb3_fedpg import FederatedPG, FederatedPPO, make_federated_vec_env


class Float64Env(gym.Env):
    def __init__(self):
        self.observation_space = spaces.Box(-1, 1, (3,), dtype=np.float64)
        self.action_space = spaces.Box(-1, 1, (2,), dtype=np.float64)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), float(-np.sum(action**2)), False, False, {}


@pytest.mark.parametrize("algo", [FederatedPG, FederatedPPO])
def test_float64_box_spaces_train_and_predict(algo):
    env = make_federated_vec_env([Float64Env, Float64Env], n_envs_per_agent=2)
    model = algo("MlpPolicy", env, n_steps=8, seed=0)
    before = model.get_global_parameters()
    model.learn(200)
    assert not th.allclose(before, model.get_global_parameters())
    actions, _ = model.predict(env.reset(), deterministic=True)
    assert actions.shape == (4, 2)
