"""
Goal/weight heterogeneity, written once: agent ``i`` of ``N`` has its own goal ``g_i`` and its own cost weight ``w_i``,
both set by the heterogeneity knob ``h`` and the agent's index, and is rewarded

``r_i = −(w_i ‖p(s') − g_i‖² + c ‖a‖²) / s``

with ``p(s')`` the controlled point read off the next observation, ``c`` an action cost and ``s`` a cost scale.
:class:`GoalWeightReward` is that batched reward over agent ids (a :class:`~sb3_fedpg.envs.vector.FederatedReward`);
a family subclasses it to say where its point is, and :func:`register_goal_family` registers it, its family
parameters read off the subclass's constructor. The per-agent parameters of every family come from
:func:`agent_positions` (``u_i`` evenly spaced in ``[−1, 1]``) and :func:`check_heterogeneity`:

- goals on a circle, ``g_i = h · R · (cos 2πi/N, sin 2πi/N)`` (:func:`circle_goals`),
- weights ``w_i = ρ^(h · u_i / 2)``, so ``max w_i / min w_i = ρ`` at ``h = 1`` (:func:`goal_weights`),
- one-dimensional targets ``t_i = t_0 + σ · h · u_i`` (:func:`spread_targets`: CartPole, Pendulum, HalfCheetah).

At ``h = 0`` every agent has the goal ``0`` and the weight ``1``.
"""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
from sb3_fedpg.envs.families import FamilySpec, register_family


def check_heterogeneity(heterogeneity: float) -> float:
    """
    :param heterogeneity: the knob ``h``
    :return: ``h`` as a float
    :raise ValueError: ``h`` is outside ``[0, 1]``
    """
    if not 0.0 <= heterogeneity <= 1.0:
        raise ValueError(f"heterogeneity must be in [0, 1] (0 = identical agents), got {heterogeneity}.")
    return float(heterogeneity)


def agent_positions(n_agents: int) -> np.ndarray:
    """
    Evenly spaced agent coordinates in ``[-1, 1]`` (``[0]`` for one agent).

    :param n_agents: number of agents
    :return: ``(n_agents,)`` coordinates ``u_i``
    """
    return np.linspace(-1.0, 1.0, n_agents) if n_agents > 1 else np.zeros(1)


def spread_targets(n_agents: int, heterogeneity: float, spread: float, center: float = 0.0) -> np.ndarray:
    """
    :param n_agents: number of agents
    :param heterogeneity: the knob ``h`` (0: every agent at ``center``)
    :param spread: half-range ``σ`` of the targets at ``h = 1``
    :param center: the target ``t_0`` at ``h = 0``
    :return: ``(n_agents,)`` float32 targets ``t_0 + σ · h · u_i``
    """
    return (center + spread * check_heterogeneity(heterogeneity) * agent_positions(n_agents)).astype(np.float32)


def circle_goals(n_agents: int, heterogeneity: float, radius: float = 1.0) -> np.ndarray:
    """:return: ``(n_agents, 2)`` goals ``h · R · (cos 2πi/N, sin 2πi/N)``"""
    angle = 2 * np.pi * np.arange(n_agents) / n_agents
    return check_heterogeneity(heterogeneity) * radius * np.stack([np.cos(angle), np.sin(angle)], axis=1)


def goal_weights(n_agents: int, heterogeneity: float, weight_ratio: float = 16.0) -> np.ndarray:
    """:return: ``(n_agents,)`` cost weights ``ρ^(h · u_i / 2)`` (``u_i`` evenly spaced in ``[−1, 1]``)"""
    if weight_ratio < 1.0:
        raise ValueError(f"weight_ratio must be >= 1, got {weight_ratio}.")
    return weight_ratio ** (check_heterogeneity(heterogeneity) * agent_positions(n_agents) / 2.0)


class GoalWeightReward:
    """
    Batched goal/weight reward: ``r_i = −(w_i ‖p(s') − g_i‖² + c ‖a‖²) / s`` (float32), ``g_i`` from
    :func:`circle_goals`, ``w_i`` from :func:`goal_weights`. A family sets the class attributes (or overrides
    :meth:`positions`) and keeps this constructor, or one with fewer family parameters.

    :param n_agents: number of agents
    :param heterogeneity: 0 (identical agents: goal 0, weight 1) to 1
    :param radius: radius ``R`` of the circle of goals at ``h = 1``
    :param weight_ratio: ``max w_i / min w_i`` at ``h = 1``
    """

    #: where the controlled point ``p`` sits in the observation (for the default :meth:`positions`)
    position_slice: slice = slice(0, 2)
    #: action cost ``c`` (on the action clipped to ``[−1, 1]``; 0: none)
    action_cost: float = 0.0
    #: cost scale ``s``
    cost_scale: float = 1.0

    def __init__(self, n_agents: int, heterogeneity: float = 1.0, radius: float = 1.0, weight_ratio: float = 16.0) -> None:
        self.goals = circle_goals(n_agents, heterogeneity, radius)
        self.weights = goal_weights(n_agents, heterogeneity, weight_ratio)

    def positions(self, obs: np.ndarray) -> np.ndarray:
        """
        :param obs: ``(n, *obs_shape)`` observations
        :return: ``(n, 2)`` the controlled points, float64
        """
        return np.asarray(obs, dtype=np.float64)[:, self.position_slice]

    def average_cost(self, positions: np.ndarray) -> np.ndarray:
        """
        :param positions: ``(n, 2)`` points
        :return: ``(n,)`` the agents' average position cost there, ``(1/N) Σ_i w_i ‖p − g_i‖² / s`` (what the
            federation minimises, without the action cost)
        """
        offsets = positions[:, None, :] - self.goals[None]
        return (self.weights * np.square(offsets).sum(-1)).mean(1) / self.cost_scale

    def optimal_hold_point(self) -> np.ndarray:
        """:return: the weighted centroid ``c* = Σ w_i g_i / Σ w_i``, where holding still minimises the average cost"""
        return (self.weights[:, None] * self.goals).sum(0) / self.weights.sum()

    def __call__(
        self, obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray, reward: np.ndarray, agent_ids: np.ndarray
    ) -> np.ndarray:
        offset = self.positions(next_obs) - self.goals[agent_ids]
        cost = self.weights[agent_ids] * np.square(offset).sum(1)
        if self.action_cost:
            force = np.clip(np.asarray(action, dtype=np.float64).reshape(len(next_obs), -1), -1.0, 1.0)
            cost = cost + self.action_cost * np.square(force).sum(1)
        return (-cost / self.cost_scale).astype(np.float32)


def register_goal_family(env_id: str, base_id: str, make_reward: type[GoalWeightReward], **spec_kwargs: Any) -> FamilySpec:
    """
    Register a goal/weight family; its family parameters (and their defaults) are those of ``make_reward``'s
    constructor after ``n_agents``.

    :param env_id: the family's Gymnasium id
    :param base_id: the Gymnasium id of the shared dynamics
    :param make_reward: the family's :class:`GoalWeightReward` subclass
    :param spec_kwargs: further :class:`~sb3_fedpg.envs.families.FamilySpec` fields (``default_n_agents``, ...)
    :return: the registered spec
    """
    parameters = list(inspect.signature(make_reward).parameters.values())[1:]
    family_kwargs = {p.name: p.default for p in parameters}
    spec = FamilySpec(env_id=env_id, base_id=base_id, make_reward=make_reward, family_kwargs=family_kwargs, **spec_kwargs)
    register_family(spec)
    return spec
