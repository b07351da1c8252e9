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
"""

from __future__ import annotations

import numpy as np
from sb3_fedpg.envs.families import FamilySpec, register_family


def agent_positions(n_agents: int) -> np.ndarray:
    """
    Evenly spaced agent coordinates in ``[-1, 1]`` (``[0]`` for one agent).

    :param n_agents: number of agents
    :return: ``(n_agents,)`` coordinates
    """
    return np.linspace(-1.0, 1.0, n_agents) if n_agents > 1 else np.zeros(1)


def _check_heterogeneity(heterogeneity: float) -> float:
    if not 0.0 <= heterogeneity <= 1.0:
        raise ValueError(f"heterogeneity must be in [0, 1] (0 = identical agents), got {heterogeneity}.")
    return float(heterogeneity)


class CartPoleTargetReward:
    """
    Batched reward of ``HeteroCartPole``: stay up, near your own target cart position.

    :param n_agents: number of agents
    :param heterogeneity: spread of the targets, 0 (all at the centre) to 1 (±1.5)
    :param weight: share of the reward that depends on the position
    :param width: length scale ``σ`` of the position bonus
    """

    def __init__(self, n_agents: int, heterogeneity: float = 1.0, weight: float = 0.5, width: float = 0.6) -> None:
        self.targets = (1.5 * _check_heterogeneity(heterogeneity) * agent_positions(n_agents)).astype(np.float32)
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
        self.targets = (np.pi / 4 * _check_heterogeneity(heterogeneity) * agent_positions(n_agents)).astype(np.float32)

    def __call__(
        self, obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray, reward: np.ndarray, agent_ids: np.ndarray
    ) -> np.ndarray:
        theta = np.arctan2(obs[:, 1], obs[:, 0])
        error = (theta - self.targets[agent_ids] + np.pi) % (2 * np.pi) - np.pi
        torque = np.clip(np.asarray(action, dtype=np.float32).reshape(len(obs), -1)[:, 0], -2.0, 2.0)
        return -(np.square(error) + 0.1 * np.square(obs[:, 2]) + 0.001 * np.square(torque))


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
