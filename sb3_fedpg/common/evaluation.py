"""Per-agent evaluation of one (global) policy on a federated vec env."""

from __future__ import annotations

from typing import Any

import numpy as np

from sb3_fedpg.common.federated_vec_env import FederatedVecEnv


def evaluate_agents(
    model: Any,
    env: FederatedVecEnv,
    n_episodes_per_env: int = 1,
    deterministic: bool = True,
    max_steps: int = 100_000,
) -> np.ndarray:
    """
    Mean episodic return of ``model``'s policy under each agent's own reward.

    All sub-environments run in lock-step; each contributes its first
    ``n_episodes_per_env`` complete episodes. The global objective ``J(θ)`` of the paper
    is the mean of the returned vector.

    :param model: anything with an SB3 ``predict`` (e.g. a ``FederatedPG``)
    :param env: the federated env to evaluate on (it is reset); a plain ``VecEnv`` is split into the model's agents
        in blocks, as the model splits its training env (identical agents: one reward)
    :param n_episodes_per_env: complete episodes recorded per sub-environment
    :param deterministic: use the deterministic action
    :param max_steps: safety limit on vectorised steps
    :return: per-agent mean return, shape ``(n_agents,)``
    """
    if n_episodes_per_env < 1:
        raise ValueError(f"n_episodes_per_env must be >= 1, got {n_episodes_per_env}.")
    n_envs = env.num_envs
    n_agents = getattr(env, "n_agents", None) or getattr(model, "n_agents", None) or 1
    if n_envs % n_agents != 0:
        raise ValueError(
            f"the env's {n_envs} sub-environments cannot be split between the model's {n_agents} agents: evaluate on a "
            f"federated env (make_federated_vec_env(..., n_agents={n_agents})) or a VecEnv of a multiple of {n_agents} envs."
        )
    obs = env.reset()
    returns = np.zeros(n_envs)
    totals = np.zeros(n_envs)
    finished = np.zeros(n_envs, dtype=np.int64)
    for _ in range(max_steps):
        actions, _ = model.predict(obs, deterministic=deterministic)
        obs, rewards, dones, _ = env.step(actions)
        active = finished < n_episodes_per_env
        returns += rewards * active
        done_active = dones & active
        totals[done_active] += returns[done_active]
        returns[dones] = 0.0
        finished += dones
        if np.all(finished >= n_episodes_per_env):
            break
    else:
        raise RuntimeError(f"evaluation did not finish {n_episodes_per_env} episode(s) per env in {max_steps} steps.")
    per_env = totals / n_episodes_per_env
    return per_env.reshape(n_agents, n_envs // n_agents).mean(axis=1)
