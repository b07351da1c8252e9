import gymnasium as gym
import numpy as np
import pytest
from sb3_fedpg.envs import get_family
from stable_baselines3.common.env_checker import check_env

from sb3_fedpg import make_federated_vec_env

FAMILIES = ["sb3_fedpg/HeteroCartPole-v0", "sb3_fedpg/HeteroPendulum-v0"]


@pytest.mark.parametrize("env_id", FAMILIES)
def test_check_env_per_agent(env_id):
    for agent in range(3):
        check_env(gym.make(env_id, agent=agent, n_agents=3, heterogeneity=1.0), warn=False)


@pytest.mark.parametrize("env_id", FAMILIES)
@pytest.mark.parametrize("heterogeneity", [0.0, 1.0])
def test_same_transitions_different_rewards(env_id, heterogeneity):
    n_agents = 4
    envs = [gym.make(env_id, agent=i, n_agents=n_agents, heterogeneity=heterogeneity) for i in range(n_agents)]
    rng = np.random.default_rng(0)
    for env in envs:
        env.reset(seed=123)
    rewards = np.zeros((20, n_agents))
    for t in range(20):
        action = envs[0].action_space.sample() if env_id.endswith("Pendulum-v0") else int(rng.integers(2))
        if env_id.endswith("Pendulum-v0"):
            action = rng.uniform(-2, 2, size=1).astype(np.float32)
        steps = [env.step(action) for env in envs]
        # Identical dynamics: every agent sees the same next observation and termination.
        for obs, _, term, trunc, _ in steps[1:]:
            np.testing.assert_array_equal(obs, steps[0][0])
            assert (term, trunc) == steps[0][2:4]
        rewards[t] = [s[1] for s in steps]
        if steps[0][2] or steps[0][3]:
            rewards = rewards[: t + 1]
            break
    spread = np.ptp(rewards, axis=1).max()
    if heterogeneity == 0.0:
        assert spread == 0.0
    else:
        assert spread > 1e-3


@pytest.mark.parametrize("env_id", FAMILIES)
def test_vectorised_rewards_match_single_agent_envs(env_id):
    n_agents = 3
    fed = make_federated_vec_env(env_id, n_agents=n_agents, n_envs_per_agent=1, seed=5)
    fed.reset()
    spec = get_family(env_id)
    reward = spec.make_reward(n_agents, **spec.family_kwargs)
    # One batched call over all agents equals one call per agent (agent indexing is right).
    obs = np.stack([fed.venv.observation_space.sample()[0]] * n_agents)
    action = np.stack([fed.action_space.sample() for _ in range(n_agents)])
    base = np.ones(n_agents, dtype=np.float32)
    batched = reward(obs, action, obs, base, np.arange(n_agents))
    per_agent = [
        reward(obs[i : i + 1], action[i : i + 1], obs[i : i + 1], base[i : i + 1], np.array([i]))[0] for i in range(3)
    ]
    np.testing.assert_allclose(batched, per_agent, rtol=1e-6)


@pytest.mark.parametrize("env_id", FAMILIES)
def test_bad_family_arguments(env_id):
    with pytest.raises(ValueError, match=r"heterogeneity must be in \[0, 1\]"):
        make_federated_vec_env(env_id, n_agents=2, env_kwargs={"heterogeneity": 2.0})
    with pytest.raises(TypeError, match="unknown keyword argument"):
        make_federated_vec_env(env_id, n_agents=2, env_kwargs={"heterogenity": 0.5})
    with pytest.raises(ValueError, match=r"agent must be in \[0, 2\)"):
        gym.make(env_id, agent=2, n_agents=2)
    with pytest.raises(ValueError, match="defines its own per-agent rewards"):
        make_federated_vec_env(env_id, n_agents=2, reward_fns=[lambda *a: a[3]] * 2)
