"""
Registry of heterogeneous families: shared dynamics plus a batched per-agent reward.

A family is usable two ways: ``make_federated_vec_env(family_id, n_agents, ...)`` builds
all agents at once (vectorised dynamics, one reward call per step), and
``gym.make(family_id, agent=i, n_agents=N, ...)`` gives agent ``i``'s own single env
(for ``check_env``, evaluation, or any Gymnasium code).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
from sb3_fedpg.envs.vector import FederatedReward

_FAMILIES: dict[str, FamilySpec] = {}


@dataclass
class FamilySpec:
    """
    A heterogeneous family.

    :param env_id: the registered Gymnasium id of the family
    :param base_id: the Gymnasium id of the shared dynamics
    :param make_reward: ``make_reward(n_agents, **family_kwargs) -> FederatedReward``
    :param family_kwargs: defaults of the family parameters (e.g. ``heterogeneity``)
    :param default_n_agents: agents when none are given
    :param base_kwargs: names of family parameters that are keyword arguments of the dynamics
        (``gym.make(base_id, **those)``) rather than of ``make_reward`` (e.g. LunarLander's ``continuous``)
    :param make_vector_env: optional builder of all agents' dynamics, for families whose dynamics differ
        between agents (transition heterogeneity):
        ``make_vector_env(n_agents, n_envs_per_agent, vectorization_mode, **family_kwargs) -> VectorEnv``
        with SAME_STEP auto-reset and agent-major sub-environments
    :param make_agent_dynamics: the single-agent counterpart of ``make_vector_env``:
        ``make_agent_dynamics(agent, n_agents, **family_kwargs) -> gym.Env``
    """

    env_id: str
    base_id: str
    make_reward: Callable[..., FederatedReward]
    family_kwargs: dict[str, Any] = field(default_factory=dict)
    default_n_agents: int = 4
    base_kwargs: tuple[str, ...] = ()
    make_vector_env: Callable[..., gym.vector.VectorEnv] | None = None
    make_agent_dynamics: Callable[..., gym.Env] | None = None

    def params(self, **kwargs: Any) -> dict[str, Any]:
        """
        :param kwargs: family parameters given by the user
        :return: all family parameters (defaults filled in); unknown names raise ``TypeError``
        """
        unknown = set(kwargs) - set(self.family_kwargs)
        if unknown:
            raise TypeError(
                f"{self.env_id} got unknown keyword argument(s) {sorted(unknown)}; it accepts {sorted(self.family_kwargs)}."
            )
        return {**self.family_kwargs, **kwargs}

    def build(self, n_agents: int, **kwargs: Any) -> tuple[FederatedReward, str, dict[str, Any]]:
        """
        :param n_agents: number of agents
        :param kwargs: family parameters
        :return: the batched reward, the dynamics id and the dynamics' keyword arguments
        """
        if n_agents < 1:
            raise ValueError(f"n_agents must be >= 1, got {n_agents}.")
        params = self.params(**kwargs)
        base_kwargs = {key: params.pop(key) for key in self.base_kwargs}
        return self.make_reward(n_agents, **params), self.base_id, base_kwargs


class AgentRewardWrapper(gym.Wrapper):
    """
    One agent's view of a family: the shared dynamics with that agent's reward.

    :param env: the shared dynamics
    :param reward_fn: the family's batched reward
    :param agent: this agent's index
    """

    def __init__(self, env: gym.Env, reward_fn: FederatedReward, agent: int) -> None:
        super().__init__(env)
        self.reward_fn = reward_fn
        self.agent = agent
        self._agent_ids = np.array([agent])
        self._last_obs: np.ndarray | None = None

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self._last_obs = obs
        return obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        value = self.reward_fn(
            np.asarray(self._last_obs)[None],
            np.asarray(action)[None],
            np.asarray(obs)[None],
            np.array([reward], dtype=np.float32),
            self._agent_ids,
        )
        self._last_obs = obs
        return obs, float(np.asarray(value).reshape(-1)[0]), terminated, truncated, info


def register_family(spec: FamilySpec) -> None:
    """
    Register a family under its Gymnasium id (single-agent view via ``gym.make``).

    :param spec: the family
    """
    _FAMILIES[spec.env_id] = spec
    if spec.env_id not in gym.registry:
        base = gym.spec(spec.base_id)
        gym.register(
            id=spec.env_id,
            entry_point=f"{__name__}:make_agent_env",
            kwargs={"family_id": spec.env_id},
            max_episode_steps=None,
            disable_env_checker=True,
            order_enforce=base.order_enforce,
        )


def get_family(env_id: str) -> FamilySpec | None:
    """
    :param env_id: a Gymnasium id
    :return: the family registered under it, or ``None``
    """
    return _FAMILIES.get(env_id)


def make_agent_env(family_id: str, agent: int = 0, n_agents: int | None = None, **kwargs: Any) -> gym.Env:
    """
    Entry point of a family's Gymnasium id: agent ``agent`` of ``n_agents``.

    :param family_id: the family's id
    :param agent: which agent's reward
    :param n_agents: number of agents in the federation (sets the agents' parameters)
    :param kwargs: family parameters
    :return: the agent's env
    """
    spec = _FAMILIES[family_id]
    n_agents = spec.default_n_agents if n_agents is None else n_agents
    if not 0 <= agent < n_agents:
        raise ValueError(f"agent must be in [0, {n_agents}), got {agent}.")
    reward_fn, base_id, base_kwargs = spec.build(n_agents, **kwargs)
    if spec.make_agent_dynamics is not None:
        return AgentRewardWrapper(spec.make_agent_dynamics(agent, n_agents, **spec.params(**kwargs)), reward_fn, agent)
    return AgentRewardWrapper(gym.make(base_id, **base_kwargs), reward_fn, agent)
