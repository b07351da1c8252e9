"""
The two pieces of vectorisation the families need: the batched per-agent reward protocol and
Gymnasium's vectoriser with SB3's same-step auto-reset. They live here, below
:mod:`sb3_fedpg.common`, so that ``envs`` never imports ``common`` (no import cycle).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

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


class GymnasiumApiCheck(gym.Wrapper):
    """
    Checks the first ``reset`` and ``step`` of an env against Gymnasium's API — ``(obs, info)`` and
    ``(obs, reward, terminated, truncated, info)`` — and says what to do when it is the old Gym API, instead of an
    unpacking error deep in the vectoriser. After the first call of each it forwards straight to the env (no cost).

    :param env: the env
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)

    def _name(self) -> str:
        spec = getattr(self.env, "spec", None)
        return spec.id if spec is not None else type(self.env.unwrapped).__name__

    def reset(self, **kwargs: Any) -> Any:
        result = self.env.reset(**kwargs)
        if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], dict)):
            raise TypeError(
                f"{self._name()}.reset() returned {_describe(result)}; Gymnasium's API (which SB3 >= 2 and sb3-fedpg use) "
                "returns (obs, info). This looks like an old Gym env: port it to Gymnasium, or wrap it with shimmy's "
                "GymV21CompatibilityV0 (pip install shimmy)."
            )
        self.reset = self.env.reset  # type: ignore[method-assign,assignment]
        return result

    def step(self, action: Any) -> Any:
        result = self.env.step(action)
        if not (isinstance(result, tuple) and len(result) == 5):
            raise TypeError(
                f"{self._name()}.step() returned {_describe(result)}; Gymnasium's API returns "
                "(obs, reward, terminated, truncated, info). A 4-tuple (obs, reward, done, info) is the old Gym API: "
                "port the env to Gymnasium (done → terminated, truncated), or wrap it with shimmy's "
                "GymV21CompatibilityV0 (pip install shimmy)."
            )
        self.step = self.env.step  # type: ignore[method-assign]
        return result


def _describe(result: object) -> str:
    return f"a {len(result)}-tuple" if isinstance(result, tuple) else f"a {type(result).__name__}"


def _api_checked(env_fn: Callable[[], gym.Env]) -> Callable[[], gym.Env]:
    def make() -> gym.Env:
        return GymnasiumApiCheck(env_fn())

    return make


def vectorize_same_step(env_fns: Sequence[Callable[[], gym.Env]], vectorization_mode: str = "sync") -> gym.vector.VectorEnv:
    """
    Gymnasium's sync (or, for ``"async"``, subprocess) vectorisation with SB3's SAME_STEP auto-reset; each env's
    first ``reset``/``step`` is checked against Gymnasium's API (:class:`GymnasiumApiCheck`).

    :param env_fns: one factory per sub-environment
    :param vectorization_mode: ``"async"`` for subprocesses, anything else for in-process
    :return: the vector env
    """
    cls = gym.vector.AsyncVectorEnv if vectorization_mode == "async" else gym.vector.SyncVectorEnv
    return cls([_api_checked(fn) for fn in env_fns], autoreset_mode=AutoresetMode.SAME_STEP)
