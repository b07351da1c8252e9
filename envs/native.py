"""
Fast NumPy vector implementations of shared dynamics, with SB3's SAME_STEP auto-reset.

Gymnasium's native ``CartPoleVectorEnv`` (~380k steps/s here) resets in ``NEXT_STEP``
mode: the step after ``done`` ignores the action and returns a reset observation with
reward 0. SB3 (and ``FederatedVecEnv``) need ``SAME_STEP``: the observation returned on
``done`` already starts the next episode. The subclass below keeps Gymnasium's physics
and resets finished sub-environments inside the same step.
"""

from __future__ import annotations

from typing import Any, cast

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv
from gymnasium.vector import AutoresetMode


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
    if env_id == "sb3_fedpg/PointMass-v0":
        from sb3_fedpg.envs.pointmass import SameStepPointMassVectorEnv

        kwargs.setdefault("max_episode_steps", gym.spec(env_id).max_episode_steps)
        return SameStepPointMassVectorEnv(num_envs=num_envs, **kwargs)
    if env_id == "sb3_fedpg/PixelGrid-v0":
        from sb3_fedpg.envs.pixelgrid import SameStepPixelGridVectorEnv

        kwargs.setdefault("max_episode_steps", gym.spec(env_id).max_episode_steps)
        return SameStepPixelGridVectorEnv(num_envs=num_envs, **kwargs)
    if env_id == "sb3_fedpg/TwoLinkArm-v0":
        from sb3_fedpg.envs.arm import SameStepTwoLinkArmVectorEnv

        kwargs.setdefault("max_episode_steps", gym.spec(env_id).max_episode_steps)
        return SameStepTwoLinkArmVectorEnv(num_envs=num_envs, **kwargs)
    return None
