"""
A planar two-link arm (joint-velocity control, NumPy) and its heterogeneous family.

The point-mass family's costs on *nonlinear* dynamics: the agents' goals are points in the
plane, but the policy acts on joint angles through the arm's forward kinematics, so the
map from a goal to the joint configuration that holds the hand there is nonlinear (and the
agents' optimal policies are far apart in parameter space).

``sb3_fedpg/TwoLinkArm-v0`` (the shared dynamics)
    Joint angles ``q ∈ R²`` (shoulder, elbow; link lengths 1.0 and 0.8, so the hand reaches
    radii 0.2 to 1.8), joint velocities ``q̇``; action ``a ∈ [−1, 1]²``; per step
    ``q̇' = 0.8 q̇ + 0.3 a``, ``q' = wrap(q + 0.1 q̇')``. Observation
    ``(cos q₁, sin q₁, cos q₂, sin q₂, q̇₁, q̇₂, x, y)`` with ``(x, y)`` the hand position
    ``(l₁ cos q₁ + l₂ cos(q₁ + q₂), l₁ sin q₁ + l₂ sin(q₁ + q₂))``. Episodes start at rest
    with ``q ~ U[−π, π]²`` and last 50 steps (no termination). Its own reward is
    ``−‖hand'‖² − 0.01 ‖a‖²`` (fold the hand towards the shoulder; ``HeteroArm`` at ``h = 0``).

``sb3_fedpg/HeteroArm-v0``
    Agent ``i``'s reward is the point-mass family's on the hand position:
    ``r_i = −w_i ‖hand' − g_i‖² − 0.01 ‖a‖²`` with ``g_i = h · R · (cos 2πi/N, sin 2πi/N)``
    and ``w_i = ρ^(h · u_i / 2)`` (``R = 1``, ``ρ = 16``; see :mod:`sb3_fedpg.envs.pointmass`).
    The average cost is lowest with the hand at the weighted centroid ``c* = Σ w_i g_i / Σ w_i``
    (reachable: ``|c*| = 0.56`` at ``h = 1``, ``N = 4``). At ``h = 0`` every agent is the base env.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from sb3_fedpg.envs.goals import register_goal_family
from sb3_fedpg.envs.native import NativeDynamics, NativeEnv, SameStepNativeVectorEnv
from sb3_fedpg.envs.pointmass import ACTION_COST, PointMassGoalReward

#: link lengths, velocity decay, velocity gain, time step, episode length
LINK1, LINK2, DAMPING, GAIN, DT = 1.0, 0.8, 0.8, 0.3, 0.1
MAX_EPISODE_STEPS = 50
BASE_GOAL = np.zeros(2)
_VMAX = GAIN / (1.0 - DAMPING)
_REACH = LINK1 + LINK2
_OBS_HIGH = np.array([1, 1, 1, 1, _VMAX, _VMAX, _REACH, _REACH], dtype=np.float32)


def hand_position(q: np.ndarray) -> np.ndarray:
    """:return: ``(n, 2)`` hand positions of ``(n, 2)`` joint angles"""
    elbow = q[:, 0] + q[:, 1]
    return np.stack([LINK1 * np.cos(q[:, 0]) + LINK2 * np.cos(elbow), LINK1 * np.sin(q[:, 0]) + LINK2 * np.sin(elbow)], axis=1)


def arm_observation(state: np.ndarray) -> np.ndarray:
    """:return: ``(n, 8)`` observations of ``(n, 4)`` states ``(q₁, q₂, q̇₁, q̇₂)``"""
    q = state[:, :2]
    obs = np.concatenate(
        [np.cos(q[:, :1]), np.sin(q[:, :1]), np.cos(q[:, 1:]), np.sin(q[:, 1:]), state[:, 2:], hand_position(q)], 1
    )
    return obs.astype(np.float32)


def arm_step(state: np.ndarray, action: np.ndarray) -> np.ndarray:
    """:return: ``(n, 4)`` next states of ``(n, 4)`` states under ``(n, 2)`` actions (clipped to ``[−1, 1]``)"""
    force = np.clip(np.asarray(action, dtype=np.float64).reshape(len(state), 2), -1.0, 1.0)
    velocity = DAMPING * state[:, 2:] + GAIN * force
    q = (state[:, :2] + DT * velocity + np.pi) % (2 * np.pi) - np.pi
    return np.concatenate([q, velocity], axis=1)


def _base_reward(next_state: np.ndarray, action: np.ndarray, next_obs: np.ndarray) -> np.ndarray:
    force = np.clip(np.asarray(action, dtype=np.float64).reshape(len(next_state), 2), -1.0, 1.0)
    return -np.square(hand_position(next_state[:, :2]) - BASE_GOAL).sum(1) - ACTION_COST * np.square(force).sum(1)


def _initial_states(rng: np.random.Generator, n: int) -> np.ndarray:
    state = np.zeros((n, 4))
    state[:, :2] = rng.uniform(-np.pi, np.pi, size=(n, 2))
    return state


#: the shared dynamics, batched
TWO_LINK_ARM = NativeDynamics(
    observation_space=spaces.Box(-_OBS_HIGH, _OBS_HIGH, dtype=np.float32),
    action_space=spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32),
    initial_states=_initial_states,
    step=arm_step,
    observe=arm_observation,
    reward=_base_reward,
    max_episode_steps=MAX_EPISODE_STEPS,
)


class TwoLinkArmEnv(NativeEnv):
    """The shared dynamics, one copy (``sb3_fedpg/TwoLinkArm-v0``; the 50-step limit is the registration's)."""

    dynamics = TWO_LINK_ARM


class SameStepTwoLinkArmVectorEnv(SameStepNativeVectorEnv):
    """``num_envs`` arms with SB3's SAME_STEP auto-reset (:class:`~sb3_fedpg.envs.native.SameStepNativeVectorEnv`)."""

    dynamics = TWO_LINK_ARM


class ArmGoalReward(PointMassGoalReward):
    """
    Batched reward of ``HeteroArm``: ``r_i = −w_i ‖hand' − g_i‖² − 0.01 ‖a‖²`` (the point-mass
    family's reward on the hand position, observation entries 6 and 7).
    """

    position_slice = slice(6, 8)


if "sb3_fedpg/TwoLinkArm-v0" not in gym.registry:
    gym.register(id="sb3_fedpg/TwoLinkArm-v0", entry_point=f"{__name__}:TwoLinkArmEnv", max_episode_steps=MAX_EPISODE_STEPS)
register_goal_family("sb3_fedpg/HeteroArm-v0", "sb3_fedpg/TwoLinkArm-v0", ArmGoalReward)
