"""
Federated tabular MDPs as Gymnasium environments, one environment per agent.

Observations are **one-hot float32 vectors** (``Box(0, 1, (S,))``) rather than
``Discrete(S)`` so that Stable-Baselines3 MLP policies (and ``FederatedPG``) work
unchanged; a linear layer on a one-hot input is exactly a tabular parameterisation.
Actions are ``Discrete(A)``. Episodes never terminate (the MDP has no terminal states);
they are truncated after ``horizon`` steps. Discounting is left to the learner.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from sb3_fedpg.tabular.mdp import FederatedTabularMDP


class TabularMDPEnv(gym.Env):
    """
    Agent ``agent``'s view of a :class:`FederatedTabularMDP`.

    :param mdp: the federated MDP
    :param agent: index of the agent whose reward ``R[agent]`` is paid
    :param horizon: steps after which an episode is truncated
    :param seed: default seed of the environment's random generator (``reset(seed=...)`` overrides it)
    """

    metadata = {"render_modes": []}

    def __init__(self, mdp: FederatedTabularMDP, agent: int = 0, horizon: int = 100, seed: int | None = None) -> None:
        super().__init__()
        if not 0 <= agent < mdp.n_agents:
            raise ValueError(f"agent must lie in [0, {mdp.n_agents}), got {agent}")
        if horizon < 1:
            raise ValueError(f"horizon must be at least 1, got {horizon}")
        self.mdp = mdp
        self.agent = agent
        self.horizon = horizon
        self.observation_space = spaces.Box(0.0, 1.0, shape=(mdp.n_states,), dtype=np.float32)
        self.action_space = spaces.Discrete(mdp.n_actions)
        self._rewards = mdp.rewards[agent]
        self._transitions = mdp.agent_transitions(agent)
        self._state = 0
        self._steps = 0
        self._seed = seed

    @property
    def state(self) -> int:
        """The current state index."""
        return self._state

    def _observation(self) -> np.ndarray:
        obs = np.zeros(self.mdp.n_states, dtype=np.float32)
        obs[self._state] = 1.0
        return obs

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """
        Start an episode in a state drawn from ``ρ``.

        :param seed: reseeds the generator when given (the constructor's seed is used on the first reset otherwise)
        :param options: unused
        :return: the one-hot observation and ``{"state": s}``
        """
        if seed is None and self._seed is not None:
            seed, self._seed = self._seed, None
        super().reset(seed=seed)
        self._state = int(self.np_random.choice(self.mdp.n_states, p=self.mdp.initial_distribution))
        self._steps = 0
        return self._observation(), {"state": self._state}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """
        Pay ``R[agent, s, a]`` and move to ``s' ~ P[s, a]`` (``P[agent, s, a]`` for per-agent transitions).

        :param action: the action index
        :return: observation, reward, terminated (always ``False``), truncated, info with the new state
        """
        action = int(action)
        if not 0 <= action < self.mdp.n_actions:
            raise ValueError(f"action must lie in [0, {self.mdp.n_actions}), got {action}")
        reward = float(self._rewards[self._state, action])
        self._state = int(self.np_random.choice(self.mdp.n_states, p=self._transitions[self._state, action]))
        self._steps += 1
        return self._observation(), reward, False, self._steps >= self.horizon, {"state": self._state}


def make_agent_envs(mdp: FederatedTabularMDP, horizon: int = 100, seed: int | None = None) -> list[TabularMDPEnv]:
    """
    One environment per agent (sharing the dynamics, unless the MDP has per-agent transitions).

    :param mdp: the federated MDP
    :param horizon: truncation of every episode
    :param seed: base seed; agent ``i`` gets ``seed + i``
    :return: ``N`` environments
    """
    return [TabularMDPEnv(mdp, i, horizon, None if seed is None else seed + i) for i in range(mdp.n_agents)]
