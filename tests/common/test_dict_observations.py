"""Dict observations reach every per-agent entry point: reward functions and the agents' critics."""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from sb3_fedpg import FederatedPG, make_federated_vec_env


class DictWalk(gym.Env):
    """A point on a line; the observation is a dict (position and a step counter)."""

    observation_space = spaces.Dict(
        {"position": spaces.Box(-10, 10, (1,), np.float32), "step": spaces.Box(0, 100, (1,), np.float32)}
    )
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x, self.t = 0.0, 0
        return self._obs(), {}

    def _obs(self):
        return {"position": np.array([self.x], np.float32), "step": np.array([self.t], np.float32)}

    def step(self, action):
        self.x += 1.0 if action else -1.0
        self.t += 1
        return self._obs(), 0.0, False, self.t >= 10, {}


def test_per_agent_reward_functions_get_dict_observations():
    seen = []

    def reward(sign):
        def fn(obs, action, next_obs, reward):
            seen.append(sorted(obs))
            return sign * next_obs["position"][:, 0]

        return fn

    env = make_federated_vec_env(DictWalk, reward_fns=[reward(1.0), reward(-1.0)], n_envs_per_agent=2, seed=0)
    env.reset()
    _, rewards, _, _ = env.step(np.array([1, 1, 1, 1]))
    np.testing.assert_allclose(rewards, [1.0, 1.0, -1.0, -1.0])
    assert seen == [["position", "step"], ["position", "step"]]


def test_predict_agent_values_takes_a_dict_batch():
    env = make_federated_vec_env(DictWalk, reward_fns=[lambda o, a, n, r: r, lambda o, a, n, r: r], n_envs_per_agent=2)
    model = FederatedPG("MultiInputPolicy", env, n_steps=4, seed=0)
    batch = {"position": np.zeros((5, 1), np.float32), "step": np.arange(5, dtype=np.float32)[:, None]}
    assert model.predict_agent_values(batch).shape == (2, 5)
    with pytest.raises(ValueError, match=r"Dict with keys \['position', 'step'\]: pass a dict of batches"):
        model.predict_agent_values(np.zeros((5, 2), np.float32))
    with pytest.raises(ValueError, match="got \\['position'\\]"):
        model.predict_agent_values({"position": batch["position"]})
