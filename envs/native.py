"""
Fast NumPy vector implementations of shared dynamics, with SB3's SAME_STEP auto-reset.

Gymnasium's native ``CartPoleVectorEnv`` (~380k steps/s here) resets in ``NEXT_STEP``
mode: the step after ``done`` ignores the action and returns a reset observation with
reward 0. SB3 (and ``FederatedVecEnv``) need ``SAME_STEP``: the observation returned on
``done`` already starts the next episode. The subclass below keeps Gymnasium's physics
and resets finished sub-environments inside the same step.

The native families (point mass, arm, pixel grid) write their dynamics once, as batched NumPy functions
(:class:`NativeDynamics`); :class:`NativeEnv` (one copy, the registered dynamics) and
:class:`SameStepNativeVectorEnv` (many copies, SAME_STEP auto-reset, no termination) run them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space


@dataclass(frozen=True)
class NativeDynamics:
    """
    Shared dynamics as batched NumPy functions (one row per copy), run by :class:`NativeEnv` and
    :class:`SameStepNativeVectorEnv`. Episodes never terminate; they are truncated after ``max_episode_steps``.

    :param observation_space: one copy's observation space
    :param action_space: one copy's action space
    :param initial_states: ``initial_states(rng, n) -> (n, ...)`` start states
    :param step: ``step(states, actions) -> next states`` (a new array)
    :param observe: ``observe(states) -> (n, *obs_shape)`` observations
    :param reward: ``reward(next_states, actions, next_observations) -> (n,)`` the dynamics' own reward
    :param max_episode_steps: truncation horizon
    """

    observation_space: spaces.Space
    action_space: spaces.Space
    initial_states: Callable[[np.random.Generator, int], np.ndarray]
    step: Callable[[np.ndarray, np.ndarray], np.ndarray]
    observe: Callable[[np.ndarray], np.ndarray]
    reward: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
    max_episode_steps: int


class NativeEnv(gym.Env):
    """One copy of a family's :class:`NativeDynamics` (the registration adds the time limit); ``state`` is its state."""

    metadata = {"render_modes": []}
    #: the dynamics, set by each subclass
    dynamics: ClassVar[NativeDynamics]

    def __init__(self) -> None:
        self.observation_space = self.dynamics.observation_space
        self.action_space = self.dynamics.action_space
        self.state = self.dynamics.initial_states(np.random.default_rng(0), 1)[0]

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.state = self.dynamics.initial_states(self.np_random, 1)[0]
        return self.dynamics.observe(self.state[None])[0], {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        actions = np.asarray(action)[None]
        next_state = self.dynamics.step(self.state[None], actions)
        obs = self.dynamics.observe(next_state)
        reward = float(self.dynamics.reward(next_state, actions, obs)[0])
        self.state = next_state[0]
        return obs[0], reward, False, False, {}


class SameStepNativeVectorEnv(gym.vector.VectorEnv):
    """
    ``num_envs`` copies of a family's :class:`NativeDynamics` with SB3's SAME_STEP auto-reset (``info["final_obs"]``
    holds the observations of a finished step before the reset, valid where ``info["_final_obs"]``); ``state`` holds
    the copies' states.

    :param num_envs: number of copies
    :param max_episode_steps: truncation horizon (``None``: the dynamics')
    """

    metadata = {"render_modes": [], "autoreset_mode": AutoresetMode.SAME_STEP}
    #: the dynamics, set by each subclass
    dynamics: ClassVar[NativeDynamics]

    def __init__(self, num_envs: int = 1, max_episode_steps: int | None = None) -> None:
        self.num_envs = num_envs
        self.max_episode_steps = self.dynamics.max_episode_steps if max_episode_steps is None else max_episode_steps
        self.single_observation_space = self.dynamics.observation_space
        self.single_action_space = self.dynamics.action_space
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.state = self.dynamics.initial_states(np.random.default_rng(0), num_envs)
        self.steps = np.zeros(num_envs, dtype=np.int64)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        if seed is not None:
            self._np_random, self._np_random_seed = gym.utils.seeding.np_random(seed)
        self.state = self.dynamics.initial_states(self.np_random, self.num_envs)
        self.steps[:] = 0
        return self.dynamics.observe(self.state), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        next_state = self.dynamics.step(self.state, action)
        obs = self.dynamics.observe(next_state)
        reward = self.dynamics.reward(next_state, action, obs)
        self.steps += 1
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = self.steps >= self.max_episode_steps
        info: dict[str, Any] = {}
        if truncated.any():
            info["final_obs"] = obs.copy()
            info["_final_obs"] = truncated.copy()
            next_state[truncated] = self.dynamics.initial_states(self.np_random, int(truncated.sum()))
            self.steps[truncated] = 0
            obs[truncated] = self.dynamics.observe(next_state[truncated])
        self.state = next_state
        return obs, reward, terminated, truncated, info


class SameStepCartPoleVectorEnv(CartPoleVectorEnv):
    """
    Gymnasium's vectorised CartPole with SAME_STEP auto-reset.

    ``info["final_obs"]`` holds the observations of this step before any reset (a float
    array, valid where ``info["_final_obs"]`` is true).

    :param num_envs: number of copies
    :param max_episode_steps: truncation horizon
    :param length_scale: per-copy multiplier of the pole half-length (a *transition*
        heterogeneity knob beyond the paper's shared-dynamics assumption); scalar or ``(num_envs,)``
    :param kwargs: passed to ``CartPoleVectorEnv``
    """

    metadata = {**CartPoleVectorEnv.metadata, "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, num_envs: int = 1, max_episode_steps: int = 500, length_scale: Any = 1.0, **kwargs: Any) -> None:
        super().__init__(num_envs=num_envs, max_episode_steps=max_episode_steps, **kwargs)
        scale = np.broadcast_to(np.asarray(length_scale, dtype=np.float64), (num_envs,))
        if not np.all(scale > 0):
            raise ValueError(f"length_scale must be positive, got {length_scale}.")
        # The physics reads these as scalars; per-copy arrays broadcast the same way.
        self.length = 0.5 * scale  # type: ignore[assignment]  # per copy: Gymnasium types it as a scalar
        self.polemass_length = self.masspole * self.length

    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        # The parent resets the copies flagged in ``prev_done`` at the start of a step;
        # we reset them ourselves at the end instead.
        self.prev_done[:] = False
        obs, reward, terminated, truncated, _ = super().step(action)
        done = terminated | truncated
        info: dict[str, Any] = {}
        if done.any():
            info["final_obs"] = obs.copy()
            info["_final_obs"] = done
            n_done = int(done.sum())
            state = cast(np.ndarray, self.state)  # set by reset (Gymnasium's annotation: None)
            state[:, done] = self.np_random.uniform(low=self.low, high=self.high, size=(4, n_done))
            self.steps[done] = 0
            obs[done] = state[:, done].T
        self.prev_done[:] = False
        return obs, reward, terminated, truncated, info

    def render(self) -> list[np.ndarray] | None:  # type: ignore[override]  # one frame per copy
        """
        One ``rgb_array`` frame per copy, each drawn with its own pole length (Gymnasium's renderer reads one
        scalar length, so copies of equal length are drawn together).

        :return: the frames, or ``None`` without a ``render_mode``
        """
        lengths = self.length
        frames: list[np.ndarray] | None = None
        try:
            for value in np.unique(lengths):
                self.length = float(value)
                drawn = super().render()
                if drawn is None:
                    return None
                if frames is None:
                    frames = list(drawn)
                for i in np.flatnonzero(lengths == value):
                    frames[i] = drawn[i]
        finally:
            self.length = lengths
        return frames


#: the native families' dynamics ids and their vector envs (imported when one is made)
NATIVE_VECTOR_ENVS = {
    "sb3_fedpg/PointMass-v0": "sb3_fedpg.envs.pointmass:SameStepPointMassVectorEnv",
    "sb3_fedpg/PixelGrid-v0": "sb3_fedpg.envs.pixelgrid:SameStepPixelGridVectorEnv",
    "sb3_fedpg/TwoLinkArm-v0": "sb3_fedpg.envs.arm:SameStepTwoLinkArmVectorEnv",
}


def make_native_vector_env(env_id: str, num_envs: int, **kwargs: Any) -> gym.vector.VectorEnv | None:
    """
    The fast SAME_STEP vector implementation of ``env_id``, or ``None`` if there is none.

    :param env_id: Gymnasium id of the shared dynamics
    :param num_envs: number of copies
    :param kwargs: env keyword arguments
    :return: the vector env, or ``None``
    """
    if env_id in ("CartPole-v0", "CartPole-v1"):
        spec = gym.spec(env_id)
        kwargs.setdefault("max_episode_steps", spec.max_episode_steps)
        return SameStepCartPoleVectorEnv(num_envs=num_envs, **kwargs)
    if env_id in NATIVE_VECTOR_ENVS:
        module, name = NATIVE_VECTOR_ENVS[env_id].split(":")
        kwargs.setdefault("max_episode_steps", gym.spec(env_id).max_episode_steps)
        return getattr(importlib.import_module(module), name)(num_envs=num_envs, **kwargs)
    return None
