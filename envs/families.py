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
        ``make_agent_dynamics(agent, n_agents, **family_kwargs) -> gym.Env`` (called with ``render_mode=...`` as well
        when a render mode is asked for, which only happens if ``base_id``'s dynamics can render)
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


def render_modes(env_id: str) -> list[str] | None:
    """
    The render modes of an env id's dynamics (for a family: its ``base_id``), read from the registered class's
    ``metadata`` without making an env.

    :param env_id: a Gymnasium id (a family's or any other)
    :return: the render modes, or ``None`` when the entry point does not say (a factory function)
    """
    family = _FAMILIES.get(env_id)
    spec = gym.spec(family.base_id if family is not None else env_id)
    creator: Any = spec.entry_point
    if isinstance(creator, str):
        from gymnasium.envs.registration import load_env_creator

        creator = load_env_creator(creator)
    metadata = getattr(creator, "metadata", None)
    if not isinstance(metadata, dict):  # a factory function, or a wrapper class's metadata property
        return None
    return list(metadata.get("render_modes", []))


def check_render_mode(env_id: str, render_mode: str) -> None:
    """
    :param env_id: a Gymnasium id (a family's or any other)
    :param render_mode: the render mode wanted (``"human"`` is also fine when the dynamics draw ``"rgb_array"``
        frames: Gymnasium then shows those in a window)
    :raise ValueError: the env's dynamics cannot render in that mode (the message names the env and what to do)
    """
    modes = render_modes(env_id)
    if modes is None or render_mode in modes or (render_mode == "human" and "rgb_array" in modes):
        return
    family = _FAMILIES.get(env_id)
    dynamics = f"its dynamics {family.base_id}" if family is not None else "it"
    renderable = sorted(
        fid for fid, spec in _FAMILIES.items() if {"rgb_array", "human"} & set(_registered_render_modes(spec.base_id))
    )
    raise ValueError(
        f"{env_id} cannot render in render_mode={render_mode!r}: {dynamics} draw no frames "
        f"(render modes {modes}). Evaluate it without rendering (the per-agent returns need none), or use a family "
        f"whose dynamics render: {', '.join(renderable)}."
    )


def _registered_render_modes(env_id: str) -> list[str]:
    try:
        return render_modes(env_id) or []
    except Exception:  # an optional dependency (Box2D, MuJoCo) missing: it does not render here
        return []


def make_agent_env(
    family_id: str, agent: int = 0, n_agents: int | None = None, render_mode: str | None = None, **kwargs: Any
) -> gym.Env:
    """
    Entry point of a family's Gymnasium id: agent ``agent`` of ``n_agents``.

    :param family_id: the family's id
    :param agent: which agent's reward
    :param n_agents: number of agents in the federation (sets the agents' parameters)
    :param render_mode: Gymnasium's render mode of the dynamics (``None``: no rendering); a family whose dynamics
        cannot render refuses any (see :func:`check_render_mode`)
    :param kwargs: family parameters
    :return: the agent's env
    """
    spec = _FAMILIES[family_id]
    n_agents = spec.default_n_agents if n_agents is None else n_agents
    if not 0 <= agent < n_agents:
        raise ValueError(f"agent must be in [0, {n_agents}), got {agent}.")
    reward_fn, base_id, base_kwargs = spec.build(n_agents, **kwargs)
    render_kwargs: dict[str, Any] = {}
    if render_mode is not None:
        check_render_mode(family_id, render_mode)
        render_kwargs["render_mode"] = render_mode
    if spec.make_agent_dynamics is not None:
        dynamics = spec.make_agent_dynamics(agent, n_agents, **render_kwargs, **spec.params(**kwargs))
        return AgentRewardWrapper(dynamics, reward_fn, agent)
    return AgentRewardWrapper(gym.make(base_id, **render_kwargs, **base_kwargs), reward_fn, agent)
