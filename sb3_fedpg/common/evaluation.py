"""Per-agent evaluation of one (global) policy: on a federated vec env, and in one agent's own (rendered) env."""

from __future__ import annotations

from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np

from sb3_fedpg.common.federated_vec_env import FederatedVecEnv


class AgentEpisodes(NamedTuple):
    """
    Every agent's complete evaluation episodes.

    :ivar returns: episodic returns under each agent's own reward, shape ``(n_agents, n_envs_per_agent * n)``
        (agent ``i``'s sub-environments in order, each with its ``n`` episodes in order)
    :ivar lengths: the episodes' lengths, same shape
    """

    returns: np.ndarray
    lengths: np.ndarray


def evaluate_agent_episodes(
    model: Any,
    env: FederatedVecEnv,
    n_episodes_per_env: int = 1,
    deterministic: bool = True,
    max_steps: int = 100_000,
) -> AgentEpisodes:
    """
    Run ``model``'s policy on every sub-environment of ``env`` and keep each one's first ``n_episodes_per_env``
    complete episodes, under its agent's own reward.

    All sub-environments run in lock-step (the env is reset first).

    :param model: anything with an SB3 ``predict`` (e.g. a ``FederatedPG``)
    :param env: the federated env to evaluate on (it is reset); a plain ``VecEnv`` is split into the model's agents
        in blocks, as the model splits its training env
    :param n_episodes_per_env: complete episodes recorded per sub-environment
    :param deterministic: use the deterministic action
    :param max_steps: safety limit on vectorised steps
    :return: the episodes' returns and lengths, per agent
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
    lengths = np.zeros(n_envs, dtype=np.int64)
    episode_returns = np.zeros((n_envs, n_episodes_per_env))
    episode_lengths = np.zeros((n_envs, n_episodes_per_env), dtype=np.int64)
    finished = np.zeros(n_envs, dtype=np.int64)
    for _ in range(max_steps):
        actions, _ = model.predict(obs, deterministic=deterministic)
        obs, rewards, dones, _ = env.step(actions)
        active = finished < n_episodes_per_env
        returns += rewards * active
        lengths += active
        done_active = np.flatnonzero(dones & active)
        episode_returns[done_active, finished[done_active]] = returns[done_active]
        episode_lengths[done_active, finished[done_active]] = lengths[done_active]
        returns[dones] = 0.0
        lengths[dones] = 0
        finished += dones
        if np.all(finished >= n_episodes_per_env):
            break
    else:
        raise RuntimeError(f"evaluation did not finish {n_episodes_per_env} episode(s) per env in {max_steps} steps.")
    shape = (n_agents, n_envs // n_agents * n_episodes_per_env)
    return AgentEpisodes(episode_returns.reshape(shape), episode_lengths.reshape(shape))


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
    episodes = evaluate_agent_episodes(model, env, n_episodes_per_env, deterministic, max_steps).returns
    return agent_means(episodes, n_episodes_per_env)


def agent_means(episode_returns: np.ndarray, n_episodes_per_env: int = 1) -> np.ndarray:
    """
    Each agent's mean return from its episodes, as :func:`evaluate_agents` computes it (per sub-environment first,
    then over the agent's sub-environments: the same floating-point operations, so the same numbers).

    :param episode_returns: :attr:`AgentEpisodes.returns`, shape ``(n_agents, n_envs_per_agent * n_episodes_per_env)``
    :param n_episodes_per_env: episodes per sub-environment
    :return: per-agent mean return, shape ``(n_agents,)``
    """
    n_agents = episode_returns.shape[0]
    per_env_episodes = np.asarray(episode_returns).reshape(-1, n_episodes_per_env)
    totals = np.zeros(len(per_env_episodes))
    for k in range(n_episodes_per_env):  # summed in episode order, as the episodes came
        totals += per_env_episodes[:, k]
    return (totals / n_episodes_per_env).reshape(n_agents, -1).mean(axis=1)


def make_agent_env(
    env_id: str,
    agent: int,
    n_agents: int,
    env_kwargs: dict[str, Any] | None = None,
    render_mode: str | None = None,
) -> gym.Env:
    """
    Agent ``agent``'s own single Gymnasium env: the shared dynamics under its reward (a family id), or ``env_id``
    itself (a plain id: every agent the same), optionally rendered.

    :param env_id: a family id (``sb3_fedpg/HeteroCartPole-v0``) or any Gymnasium id
    :param agent: the agent's index
    :param n_agents: agents in the federation (sets the agents' parameters)
    :param env_kwargs: the family parameters (or the plain env's keyword arguments)
    :param render_mode: Gymnasium's render mode (``"rgb_array"`` for videos, ``"human"`` for a window)
    :return: the env
    :raise ValueError: the env's dynamics cannot render in ``render_mode`` (the message names the env)
    """
    from sb3_fedpg.envs.families import check_render_mode, get_family

    env_kwargs = dict(env_kwargs or {})
    if render_mode is not None:
        check_render_mode(env_id, render_mode)
        env_kwargs["render_mode"] = render_mode
    if get_family(env_id) is not None:
        return gym.make(env_id, agent=agent, n_agents=n_agents, **env_kwargs)
    if not 0 <= agent < n_agents:
        raise ValueError(f"agent must be in [0, {n_agents}), got {agent}.")
    return gym.make(env_id, **env_kwargs)


def play_agent(model: Any, env: gym.Env, n_timesteps: int, deterministic: bool = True, seed: int | None = None) -> list[float]:
    """
    Run ``model``'s policy for ``n_timesteps`` steps in one agent's env (a new episode after each one ends), as
    rl-zoo's ``enjoy`` does: what a rendered window shows or a ``RecordVideo`` wrapper records.

    :param model: anything with an SB3 ``predict``
    :param env: one agent's env (:func:`make_agent_env`)
    :param n_timesteps: env steps to run
    :param deterministic: use the deterministic action
    :param seed: seed of the first reset
    :return: the returns of the episodes completed in those steps
    """
    obs, _ = env.reset(seed=seed)
    episode_return, returns = 0.0, []
    for _ in range(n_timesteps):
        action, _ = model.predict(obs, deterministic=deterministic)
        obs, reward, terminated, truncated, _ = env.step(action)
        episode_return += float(reward)
        if terminated or truncated:
            returns.append(episode_return)
            episode_return = 0.0
            obs, _ = env.reset()
    return returns
