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


def test_sb3_evaluate_policy_skips_the_first_agents_and_evaluate_agents_covers_all():
    # the documented trap: SB3 gives env i (n_eval_episodes + i) // n_envs episodes
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy

    from sb3_fedpg import FederatedPG
    from sb3_fedpg.common.evaluation import evaluate_agents

    model = FederatedPG("MlpPolicy", "CartPole-v1", n_agents=4, n_envs_per_agent=4, n_steps=8, seed=0)
    env = model.get_env()
    rewards, _ = evaluate_policy(model, env, n_eval_episodes=8, return_episode_rewards=True)
    assert len(rewards) == 8  # all from envs 8..15, i.e. agents 2 and 3
    assert evaluate_agents(model, make_vec_env("CartPole-v1", n_envs=16, seed=0)).shape == (4,)  # a plain VecEnv
    with pytest.raises(ValueError, match="cannot be split between the model's 4 agents"):
        evaluate_agents(model, make_vec_env("CartPole-v1", n_envs=6))
