"""
The two pieces of vectorisation the families need: the batched per-agent reward protocol and
Gymnasium's vectoriser with SB3's same-step auto-reset. They live here, below
:mod:`sb3_fedpg.common`, so that ``envs`` never imports ``common`` (no import cycle).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode


class FederatedReward(Protocol):
    """
    A batched per-agent reward: one call computes the rewards of all sub-environments.

    Called as ``reward_fn(obs, action, next_obs, reward, agent_ids)`` with

    - ``obs``: observations before the step, shape ``(n, *obs_shape)``
    - ``action``: actions taken, shape ``(n, *action_shape)``
    - ``next_obs``: observations after the step (the terminal observation where an episode ended)
    - ``reward``: the shared dynamics' own reward, shape ``(n,)``
    - ``agent_ids``: the agent of each sub-environment, shape ``(n,)``

    it returns the rewards, shape ``(n,)``.
    """

    def __call__(
        self, obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray, reward: np.ndarray, agent_ids: np.ndarray
    ) -> np.ndarray: ...


def vectorize_same_step(env_fns: Sequence[Callable[[], gym.Env]], vectorization_mode: str = "sync") -> gym.vector.VectorEnv:
    """
    Gymnasium's sync (or, for ``"async"``, subprocess) vectorisation with SB3's SAME_STEP auto-reset.

    :param env_fns: one factory per sub-environment
    :param vectorization_mode: ``"async"`` for subprocesses, anything else for in-process
    :return: the vector env
    """
    cls = gym.vector.AsyncVectorEnv if vectorization_mode == "async" else gym.vector.SyncVectorEnv
    return cls(list(env_fns), autoreset_mode=AutoresetMode.SAME_STEP)
