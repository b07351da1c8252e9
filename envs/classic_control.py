"""
Heterogeneous classic-control families: shared dynamics, one reward per agent.

``sb3_fedpg/HeteroCartPole-v0``
    CartPole dynamics. Agent ``i`` wants the pole balanced near its own target cart
    position ``c_i = 1.5 · h · u_i`` with ``u_i`` evenly spaced in ``[-1, 1]``
    (``u = 0`` for a single agent) and ``h ∈ [0, 1]`` the heterogeneity knob:
    ``r_i = 1 − w + w · exp(−((x' − c_i) / σ)²)`` per step while the pole is up
    (``x'`` the cart position after the step, ``w = 0.5``, ``σ = 0.6``). ``h = 0``:
    identical agents (all want the centre).

``sb3_fedpg/HeteroPendulum-v0``
    Pendulum dynamics. Agent ``i`` wants the pendulum held at its own target angle
    ``α_i = (π/4) · h · u_i`` from upright: ``r_i = −(norm(θ − α_i)² + 0.1 θ̇² + 0.001 u²)``
    on the state before the step, Gymnasium's own cost when ``α_i = 0``.

``sb3_fedpg/HeteroMountainCarContinuous-v0``
    MountainCarContinuous dynamics. Agent ``i`` pays its own fuel price
    ``c_i = 0.1 · 10^(h · u_i)`` (0.01 to 1 at ``h = 1``; Gymnasium's 0.1 at ``h = 0``):
    ``r_i = 100 · 1[goal reached] − c_i · a²`` (``a`` the unclipped action, as in Gymnasium).
    Expensive fuel makes "stay still" attractive, so the agents' optima really differ.

``sb3_fedpg/HeteroCartPoleLength-v0`` (*transition* heterogeneity)
    CartPole whose pole half-length differs between agents: ``ℓ_i = 0.5 · 2^(h · u_i)``
    (0.25 to 1.0 at ``h = 1``). The reward is CartPole's own (+1 per step alive) for every
    agent. This goes **beyond the paper's assumption** of shared dynamics (its analysis,
    Proposition 1 included, does not cover it); it is here to probe how Fast-FedPG degrades
    when the transitions, not the rewards, differ.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from sb3_fedpg.envs.families import FamilySpec, register_family
from sb3_fedpg.envs.goals import agent_positions, check_heterogeneity, spread_targets
from sb3_fedpg.envs.native import SameStepCartPoleVectorEnv
from sb3_fedpg.envs.vector import vectorize_same_step


class CartPoleTargetReward:
    """
    Batched reward of ``HeteroCartPole``: stay up, near your own target cart position.

    :param n_agents: number of agents
    :param heterogeneity: spread of the targets, 0 (all at the centre) to 1 (±1.5)
    :param weight: share of the reward that depends on the position
    :param width: length scale ``σ`` of the position bonus
    """

    def __init__(self, n_agents: int, heterogeneity: float = 1.0, weight: float = 0.5, width: float = 0.6) -> None:
        self.targets = spread_targets(n_agents, heterogeneity, 1.5)
        self.weight = weight
        self.width = width

    def __call__(
        self, obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray, reward: np.ndarray, agent_ids: np.ndarray
    ) -> np.ndarray:
        offset = (next_obs[:, 0] - self.targets[agent_ids]) / self.width
        return reward * (1.0 - self.weight + self.weight * np.exp(-np.square(offset)))


class PendulumTargetReward:
    """
    Batched reward of ``HeteroPendulum``: hold the pendulum at your own target angle.

    :param n_agents: number of agents
    :param heterogeneity: spread of the target angles, 0 (all upright) to 1 (±π/4)
    """

    def __init__(self, n_agents: int, heterogeneity: float = 1.0) -> None:
        self.targets = spread_targets(n_agents, heterogeneity, np.pi / 4)

    def __call__(
        self, obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray, reward: np.ndarray, agent_ids: np.ndarray
    ) -> np.ndarray:
        theta = np.arctan2(obs[:, 1], obs[:, 0])
        error = (theta - self.targets[agent_ids] + np.pi) % (2 * np.pi) - np.pi
        torque = np.clip(np.asarray(action, dtype=np.float32).reshape(len(obs), -1)[:, 0], -2.0, 2.0)
        return -(np.square(error) + 0.1 * np.square(obs[:, 2]) + 0.001 * np.square(torque))


class MountainCarFuelReward:
    """
    Batched reward of ``HeteroMountainCarContinuous``: reach the goal, at your own fuel price.

    :param n_agents: number of agents
    :param heterogeneity: spread of the log fuel prices, 0 (all pay Gymnasium's 0.1) to 1 (0.01 to 1)
    """

    #: Gymnasium's fuel price, already inside the dynamics' own reward
    base_price = 0.1

    def __init__(self, n_agents: int, heterogeneity: float = 1.0) -> None:
        self.prices = (self.base_price * 10.0 ** (check_heterogeneity(heterogeneity) * agent_positions(n_agents))).astype(
            np.float32
        )

    def __call__(
        self, obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray, reward: np.ndarray, agent_ids: np.ndarray
    ) -> np.ndarray:
        force = np.asarray(action, dtype=np.float32).reshape(len(obs), -1)[:, 0]
        # Swap Gymnasium's fuel cost for the agent's own; the +100 goal bonus is kept.
        return reward + (self.base_price - self.prices[agent_ids]) * np.square(force)


def pole_length_scales(n_agents: int, heterogeneity: float) -> np.ndarray:
    """
    Per-agent multipliers of CartPole's pole half-length, ``2^(h · u_i)``.

    :param n_agents: number of agents
    :param heterogeneity: 0 (all 1) to 1 (0.5 to 2)
    :return: ``(n_agents,)`` scales
    """
    return 2.0 ** (check_heterogeneity(heterogeneity) * agent_positions(n_agents))


class SharedReward:
    """
    The dynamics' own reward for every agent (families that differ only in their transitions).

    :param n_agents: number of agents
    :param heterogeneity: the family's transition knob (checked, not used by the reward)
    """

    def __init__(self, n_agents: int, heterogeneity: float = 1.0) -> None:
        check_heterogeneity(heterogeneity)

    def __call__(
        self, obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray, reward: np.ndarray, agent_ids: np.ndarray
    ) -> np.ndarray:
        return reward


def make_pole_length_cartpole(
    agent: int, n_agents: int, heterogeneity: float = 1.0, render_mode: str | None = None
) -> gym.Env:
    """
    Agent ``agent``'s CartPole-v1 (same wrappers and time limit) with its own pole length.

    :param agent: the agent's index
    :param n_agents: number of agents
    :param heterogeneity: the transition knob
    :param render_mode: Gymnasium's render mode (the pole is drawn at the agent's length)
    :return: the env
    """
    env = gym.make("CartPole-v1", render_mode=render_mode)
    cartpole: Any = env.unwrapped
    # CartPoleEnv reads these attributes at every step; it has no constructor argument for them.
    cartpole.length = 0.5 * float(pole_length_scales(n_agents, heterogeneity)[agent])
    cartpole.polemass_length = cartpole.masspole * cartpole.length
    return env


def make_pole_length_vector_env(
    n_agents: int, n_envs_per_agent: int, vectorization_mode: str = "auto", heterogeneity: float = 1.0
) -> gym.vector.VectorEnv:
    """
    All agents' CartPoles (agent-major), each agent with its own pole length, SAME_STEP auto-reset.

    :param n_agents: number of agents
    :param n_envs_per_agent: copies per agent
    :param vectorization_mode: ``"auto"``/``"native"`` (NumPy vector env) or ``"sync"``/``"async"``
    :param heterogeneity: the transition knob
    :return: the vector env
    """
    if vectorization_mode in ("auto", "native"):
        scales = np.repeat(pole_length_scales(n_agents, heterogeneity), n_envs_per_agent)
        return SameStepCartPoleVectorEnv(num_envs=n_agents * n_envs_per_agent, max_episode_steps=500, length_scale=scales)
    if vectorization_mode not in ("sync", "async"):
        raise ValueError(f"unknown vectorization_mode {vectorization_mode!r}: use 'auto', 'native', 'sync' or 'async'.")
    env_fns = [
        (lambda agent=agent: make_pole_length_cartpole(agent, n_agents, heterogeneity))
        for agent in range(n_agents)
        for _ in range(n_envs_per_agent)
    ]
    return vectorize_same_step(env_fns, vectorization_mode)


register_family(
    FamilySpec(
        env_id="sb3_fedpg/HeteroCartPole-v0",
        base_id="CartPole-v1",
        make_reward=CartPoleTargetReward,
        family_kwargs={"heterogeneity": 1.0},
    )
)
register_family(
    FamilySpec(
        env_id="sb3_fedpg/HeteroPendulum-v0",
        base_id="Pendulum-v1",
        make_reward=PendulumTargetReward,
        family_kwargs={"heterogeneity": 1.0},
    )
)
register_family(
    FamilySpec(
        env_id="sb3_fedpg/HeteroMountainCarContinuous-v0",
        base_id="MountainCarContinuous-v0",
        make_reward=MountainCarFuelReward,
        family_kwargs={"heterogeneity": 1.0},
    )
)
register_family(
    FamilySpec(
        env_id="sb3_fedpg/HeteroCartPoleLength-v0",
        base_id="CartPole-v1",
        make_reward=SharedReward,
        family_kwargs={"heterogeneity": 1.0},
        make_vector_env=make_pole_length_vector_env,
        make_agent_dynamics=make_pole_length_cartpole,
    )
)
