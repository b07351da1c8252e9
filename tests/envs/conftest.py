from collections.abc import Callable

import gymnasium as gym
import numpy as np
import pytest


def _rollout_agents(env_id: str, n_agents: int = 3, n_steps: int = 30, seed: int = 0, **kwargs) -> dict:
    """Step every agent's single env from the same seed with the same actions; record what each sees."""
    envs = [gym.make(env_id, agent=i, n_agents=n_agents, **kwargs) for i in range(n_agents)]
    action_space = envs[0].action_space
    action_space.seed(seed)
    obs0 = [env.reset(seed=seed)[0] for env in envs]
    record = {"obs": [np.stack(obs0)], "rewards": [], "terminated": [], "truncated": [], "infos": [], "actions": []}
    for _ in range(n_steps):
        action = action_space.sample()
        steps = [env.step(action) for env in envs]
        record["actions"].append(action)
        record["obs"].append(np.stack([s[0] for s in steps]))
        record["rewards"].append([s[1] for s in steps])
        record["terminated"].append([s[2] for s in steps])
        record["truncated"].append([s[3] for s in steps])
        record["infos"].append([s[4] for s in steps])
        if any(s[2] or s[3] for s in steps):
            break
    for env in envs:
        env.close()
    return {key: (value if key in ("infos", "actions") else np.asarray(value)) for key, value in record.items()}


@pytest.fixture
def rollout_agents() -> Callable[..., dict]:
    """:return: ``rollout_agents(env_id, n_agents, n_steps, seed, **family_kwargs)`` (see ``_rollout_agents``)"""
    return _rollout_agents


def assert_shared_transitions_distinct_rewards(record: dict, heterogeneity: float) -> None:
    """Same next observations and terminations for every agent; rewards differ iff ``heterogeneity > 0``."""
    obs = record["obs"]
    for agent in range(1, obs.shape[1]):
        np.testing.assert_array_equal(obs[:, agent], obs[:, 0])
        np.testing.assert_array_equal(record["terminated"][:, agent], record["terminated"][:, 0])
        np.testing.assert_array_equal(record["truncated"][:, agent], record["truncated"][:, 0])
    spread = np.ptp(record["rewards"], axis=1).max()
    if heterogeneity == 0.0:
        assert spread == 0.0
    else:
        assert spread > 1e-3


@pytest.fixture
def check_shared_transitions() -> Callable[[dict, float], None]:
    """:return: the assertion ``assert_shared_transitions_distinct_rewards(record, heterogeneity)``"""
    return assert_shared_transitions_distinct_rewards
