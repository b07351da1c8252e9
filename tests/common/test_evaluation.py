import numpy as np
import pytest

from sb3_fedpg import FederatedPG, make_federated_vec_env
from sb3_fedpg.common.evaluation import evaluate_agents


def test_per_agent_returns_use_each_agents_reward():
    rewards = [lambda o, a, n, r, i=i: np.full(len(o), float(i), dtype=np.float32) for i in range(3)]
    env = make_federated_vec_env("CartPole-v1", n_envs_per_agent=2, reward_fns=rewards, seed=0)
    model = FederatedPG("MlpPolicy", "CartPole-v1", n_envs_per_agent=2, n_steps=4, seed=0)
    # The untrained policy's episodes have lengths > 0, so agent i's return is i x length.
    returns = evaluate_agents(model, env, n_episodes_per_env=2)
    assert returns.shape == (3,)
    assert returns[0] == 0.0 and returns[1] > 0 and returns[2] > 0
    with pytest.raises(ValueError, match="n_episodes_per_env must be >= 1"):
        evaluate_agents(model, env, n_episodes_per_env=0)
