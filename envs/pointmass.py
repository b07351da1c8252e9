"""
A 2-D point mass (damped double integrator) and its heterogeneous family.

Cheap, native NumPy dynamics (no physics engine), so that heterogeneity experiments with
many seeds and local-only baselines stay affordable on a laptop.

``sb3_fedpg/PointMass-v0`` (the shared dynamics)
    State ``(x, y, vx, vy)``, action a force ``a ∈ [−1, 1]²``; per step ``v' = 0.9 v + 0.2 a``,
    ``p' = clip(p + 0.1 v', −2.5, 2.5)`` (a wall stops the velocity component that hits it).
    Episodes start at rest at ``p ~ U[−2, 2]²`` and last 50 steps (no termination). Its own
    reward is ``−‖p'‖² − 0.01 ‖a‖²`` (reach the origin).

``sb3_fedpg/HeteroPointMass-v0`` (reward heterogeneity in position *and curvature*)
    Agent ``i`` of ``N`` has its own goal on a circle and its own cost weight:

    ``g_i = h · R · (cos 2πi/N, sin 2πi/N)``,  ``w_i = ρ^(h · u_i / 2)``,
    ``r_i = −w_i ‖p' − g_i‖² − 0.01 ‖a‖²``

    with ``u_i`` evenly spaced in ``[−1, 1]``, ``R = 1`` (``radius``), ``ρ = 16``
    (``weight_ratio``, so ``w_i ∈ [1/4, 4]`` at ``h = 1``) and ``h ∈ [0, 1]`` the heterogeneity
    knob (``h = 0``: every agent is the base env).

    Why the agents really disagree: the average cost ``(1/N) Σ_i w_i ‖p − g_i‖²`` is lowest at
    the **weighted** centroid ``c* = Σ w_i g_i / Σ w_i``; every agent's own optimum (hold at
    ``g_i``) is far from it, and a compromise that ignores the curvatures (for example the
    unweighted centroid ``mean g_i``, which averaging the agents' own optimal policies
    produces) pays ``(Σ w_i / N) ‖c* − mean g_i‖²`` extra per step. At ``h = 1``, ``N = 4``: holding
    at ``c*`` costs 1.11 per step, at ``mean g_i = 0`` 1.62, at the agents' own goals 3.24 on
    average.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from sb3_fedpg.envs.goals import GoalWeightReward, register_goal_family
from sb3_fedpg.envs.native import NativeDynamics, NativeEnv, SameStepNativeVectorEnv

#: velocity decay per step, force gain, position step, arena half-width, start half-width
DAMPING, GAIN, DT, ARENA, START = 0.9, 0.2, 0.1, 2.5, 2.0
MAX_EPISODE_STEPS = 50
ACTION_COST = 0.01
_OBS_HIGH = np.array([ARENA, ARENA, GAIN / (1.0 - DAMPING), GAIN / (1.0 - DAMPING)], dtype=np.float32)


def point_mass_step(state: np.ndarray, action: np.ndarray) -> np.ndarray:
    """
    One step of the dynamics for a batch of states.

    :param state: ``(n, 4)`` states ``(x, y, vx, vy)``
    :param action: ``(n, 2)`` forces (clipped to ``[−1, 1]``)
    :return: ``(n, 4)`` next states
    """
    force = np.clip(np.asarray(action, dtype=np.float64).reshape(len(state), 2), -1.0, 1.0)
    velocity = DAMPING * state[:, 2:] + GAIN * force
    position = state[:, :2] + DT * velocity
    hit = np.abs(position) > ARENA
    position = np.clip(position, -ARENA, ARENA)
    velocity = np.where(hit, 0.0, velocity)
    return np.concatenate([position, velocity], axis=1)


def _base_reward(next_state: np.ndarray, action: np.ndarray, next_obs: np.ndarray) -> np.ndarray:
    force = np.clip(np.asarray(action, dtype=np.float64).reshape(len(next_state), 2), -1.0, 1.0)
    return -np.square(next_state[:, :2]).sum(1) - ACTION_COST * np.square(force).sum(1)


def _initial_states(rng: np.random.Generator, n: int) -> np.ndarray:
    state = np.zeros((n, 4))
    state[:, :2] = rng.uniform(-START, START, size=(n, 2))
    return state


def _observe(state: np.ndarray) -> np.ndarray:
    return state.astype(np.float32)


#: the shared dynamics, batched
POINT_MASS = NativeDynamics(
    observation_space=spaces.Box(-_OBS_HIGH, _OBS_HIGH, dtype=np.float32),
    action_space=spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32),
    initial_states=_initial_states,
    step=point_mass_step,
    observe=_observe,
    reward=_base_reward,
    max_episode_steps=MAX_EPISODE_STEPS,
)


class PointMassEnv(NativeEnv):
    """The shared dynamics, one copy (``sb3_fedpg/PointMass-v0``; the 50-step limit is the registration's)."""

    dynamics = POINT_MASS


class SameStepPointMassVectorEnv(SameStepNativeVectorEnv):
    """``num_envs`` point masses with SB3's SAME_STEP auto-reset (:class:`~sb3_fedpg.envs.native.SameStepNativeVectorEnv`)."""

    dynamics = POINT_MASS


class PointMassGoalReward(GoalWeightReward):
    """
    Batched reward of ``HeteroPointMass``: ``r_i = −w_i ‖p' − g_i‖² − 0.01 ‖a‖²`` (the goal/weight reward of
    :class:`~sb3_fedpg.envs.goals.GoalWeightReward` on the position, observation entries 0 and 1).
    """

    position_slice = slice(0, 2)
    action_cost = ACTION_COST


if "sb3_fedpg/PointMass-v0" not in gym.registry:
    gym.register(id="sb3_fedpg/PointMass-v0", entry_point=f"{__name__}:PointMassEnv", max_episode_steps=MAX_EPISODE_STEPS)
register_goal_family("sb3_fedpg/HeteroPointMass-v0", "sb3_fedpg/PointMass-v0", PointMassGoalReward)
