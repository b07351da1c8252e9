import numpy as np
import pytest
from stable_baselines3.common.env_checker import check_env

from sb3_fedpg.tabular import TabularMDPEnv, garnet, gridworld, make_agent_envs


@pytest.mark.parametrize("mdp", [garnet(6, 3, 2, n_agents=2, seed=0), gridworld(3, 3, n_agents=2, seed=0)])
def test_check_env(mdp):
    check_env(TabularMDPEnv(mdp, agent=1, horizon=10, seed=0), warn=True)


def test_rewards_transitions_and_truncation():
    mdp = garnet(6, 3, 2, n_agents=3, seed=1)
    envs = make_agent_envs(mdp, horizon=5, seed=10)
    assert len(envs) == 3
    env = envs[2]
    obs, info = env.reset()
    assert obs.dtype == np.float32 and obs.sum() == 1.0 and obs[info["state"]] == 1.0
    for step in range(5):
        state = env.state
        obs, reward, terminated, truncated, info = env.step(1)
        assert reward == mdp.rewards[2, state, 1]
        assert mdp.transitions[state, 1, info["state"]] > 0
        assert not terminated and truncated == (step == 4)


def test_seeded_and_empirical_transitions():
    mdp = garnet(4, 2, 3, n_agents=1, seed=2)
    a, b = TabularMDPEnv(mdp, seed=5), TabularMDPEnv(mdp, seed=5)
    assert np.array_equal(a.reset()[0], b.reset()[0])
    assert [a.step(0)[4]["state"] for _ in range(20)] == [b.step(0)[4]["state"] for _ in range(20)]
    env = TabularMDPEnv(mdp, horizon=10**6, seed=0)
    env.reset()
    counts = np.zeros(4)
    for _ in range(4000):
        env._state = 0  # probe the row P[0, 1]
        counts[env.step(1)[4]["state"]] += 1
    assert np.allclose(counts / counts.sum(), mdp.transitions[0, 1], atol=0.03)


def test_invalid_agent_and_action():
    mdp = garnet(4, 2, 2, n_agents=2)
    with pytest.raises(ValueError, match="agent must lie"):
        TabularMDPEnv(mdp, agent=2)
    env = TabularMDPEnv(mdp)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action must lie"):
        env.step(5)
