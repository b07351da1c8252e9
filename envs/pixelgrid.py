"""
A pixel-observation grid walk and its heterogeneous family (images for ``CnnPolicy``, NumPy only).

``sb3_fedpg/PixelGrid-v0`` (the shared dynamics)
    A walker on a ``7 × 7`` grid; the observation is a ``42 × 42 × 1`` ``uint8`` image (channel-last, as
    cameras and Atari give them; SB3 transposes it for ``CnnPolicy``) where the walker's cell is a
    ``6 × 6`` block of 255 on black. Actions ``Discrete(5)``: stay, up, down, left, right (a move into the
    border stays). Episodes start on a uniformly drawn cell and last 30 steps (no termination). Its own
    reward is ``−‖p'‖² / R²`` (reach the centre), with ``p`` the cell relative to the centre and
    ``R = 3`` the grid's half-width.

``sb3_fedpg/HeteroPixelGrid-v0`` (reward heterogeneity, as in ``HeteroPointMass``)
    Agent ``i`` of ``N`` has its own goal and cost weight: ``g_i = h · R · (cos 2πi/N, sin 2πi/N)``,
    ``w_i = ρ^(h · u_i / 2)`` (``u_i`` evenly spaced in ``[−1, 1]``, ``ρ = 16``) and
    ``r_i = −w_i ‖p' − g_i‖² / R²``. The rewards are read off the images (the walker's block), so the
    family's reward needs nothing but what the policy sees. The best single policy walks to the cell that
    minimises the average cost and stays there; :func:`pixel_grid_returns` gives its exact expected return
    (and a uniformly random policy's) by dynamic programming, the yardstick of the pixel benchmark.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from sb3_fedpg.envs.goals import GoalWeightReward, register_goal_family
from sb3_fedpg.envs.native import NativeDynamics, NativeEnv, SameStepNativeVectorEnv

#: cells per side, pixels per cell side, episode length
GRID, CELL, MAX_EPISODE_STEPS = 7, 6, 30
RADIUS = (GRID - 1) // 2
#: moves of the actions stay, up, down, left, right as (row, column) steps
MOVES = np.array([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]], dtype=np.int64)
_IMAGE_SPACE = spaces.Box(0, 255, shape=(GRID * CELL, GRID * CELL, 1), dtype=np.uint8)


def render_cells(cells: np.ndarray) -> np.ndarray:
    """
    :param cells: ``(n, 2)`` (row, column) cells
    :return: ``(n, 42, 42, 1)`` uint8 images, the walker's cell white
    """
    n = len(cells)
    images = np.zeros((n, GRID * CELL, GRID * CELL, 1), dtype=np.uint8)
    rows = cells[:, :1] * CELL + np.arange(CELL)  # (n, CELL) pixel rows of the walker's block
    cols = cells[:, 1:] * CELL + np.arange(CELL)
    images[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :], 0] = 255
    return images


def pixel_grid_positions(images: np.ndarray) -> np.ndarray:
    """
    Where the walker is, read off the images.

    :param images: ``(n, 42, 42, 1)`` (channel-last) observations
    :return: ``(n, 2)`` positions ``(column − c, row − c)`` relative to the centre cell ``c``, as floats
    """
    corners = np.asarray(images).reshape(len(images), GRID * CELL, GRID * CELL)[:, ::CELL, ::CELL]
    flat = corners.reshape(len(images), -1).argmax(axis=1)
    row, col = np.divmod(flat, GRID)
    return np.stack([col - RADIUS, row - RADIUS], axis=1).astype(np.float64)


def _step_cells(cells: np.ndarray, action: np.ndarray) -> np.ndarray:
    return np.clip(cells + MOVES[np.asarray(action, dtype=np.int64).reshape(len(cells))], 0, GRID - 1)


def _initial_cells(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, GRID, size=(n, 2))


def _base_reward(next_cells: np.ndarray, action: np.ndarray, next_obs: np.ndarray) -> np.ndarray:
    return -np.square(pixel_grid_positions(next_obs)).sum(1) / RADIUS**2


#: the shared dynamics, batched (the state is the walker's ``(row, column)`` cell)
PIXEL_GRID = NativeDynamics(
    observation_space=_IMAGE_SPACE,
    action_space=spaces.Discrete(len(MOVES)),
    initial_states=_initial_cells,
    step=_step_cells,
    observe=render_cells,
    reward=_base_reward,
    max_episode_steps=MAX_EPISODE_STEPS,
)


class PixelGridEnv(NativeEnv):
    """The shared dynamics, one copy (``sb3_fedpg/PixelGrid-v0``; the 30-step limit is the registration's)."""

    dynamics = PIXEL_GRID


class SameStepPixelGridVectorEnv(SameStepNativeVectorEnv):
    """``num_envs`` grid walkers with SB3's SAME_STEP auto-reset (:class:`~sb3_fedpg.envs.native.SameStepNativeVectorEnv`)."""

    dynamics = PIXEL_GRID


class PixelGridGoalReward(GoalWeightReward):
    """
    Batched reward of ``HeteroPixelGrid``: ``r_i = −w_i ‖p' − g_i‖² / R²``, ``p'`` read off the next image (the
    goal/weight reward of :class:`~sb3_fedpg.envs.goals.GoalWeightReward`, goals on the circle of radius ``R = 3``).

    :param n_agents: number of agents
    :param heterogeneity: 0 (identical agents: the base env) to 1
    :param weight_ratio: ``max w_i / min w_i`` at ``h = 1``
    """

    cost_scale = float(RADIUS**2)

    def __init__(self, n_agents: int, heterogeneity: float = 1.0, weight_ratio: float = 16.0) -> None:
        super().__init__(n_agents, heterogeneity, float(RADIUS), weight_ratio)

    def positions(self, obs: np.ndarray) -> np.ndarray:
        """:return: ``(n, 2)`` the walker's positions read off the images (:func:`pixel_grid_positions`)"""
        return pixel_grid_positions(obs)


def pixel_grid_returns(
    n_agents: int, heterogeneity: float = 1.0, weight_ratio: float = 16.0, horizon: int = MAX_EPISODE_STEPS
) -> dict[str, float]:
    """
    Exact expected episode returns on the average objective ``(1/N) Σ_i J_i`` (uniform start cell, undiscounted,
    ``horizon`` steps), by dynamic programming over the ``7 × 7`` cells.

    :param n_agents: number of agents
    :param heterogeneity: the family's ``h``
    :param weight_ratio: the family's ``ρ``
    :param horizon: episode length
    :return: ``{"optimal": J*, "random": J of the uniformly random policy}``
    """
    rows, cols = np.divmod(np.arange(GRID * GRID), GRID)
    cells = np.stack([rows, cols], axis=1)
    nxt = np.stack([_step_cells(cells, np.full(len(cells), a)) for a in range(len(MOVES))], axis=1)  # (S, A, 2)
    nxt_index = nxt[..., 0] * GRID + nxt[..., 1]
    positions = np.stack([cols - RADIUS, rows - RADIUS], axis=1).astype(np.float64)
    reward = -PixelGridGoalReward(n_agents, heterogeneity, weight_ratio).average_cost(positions)[nxt_index]  # (S, A)
    best = np.zeros(len(cells))
    uniform = np.zeros(len(cells))
    for _ in range(horizon):
        best = (reward + best[nxt_index]).max(axis=1)
        uniform = (reward + uniform[nxt_index]).mean(axis=1)
    return {"optimal": float(best.mean()), "random": float(uniform.mean())}


if "sb3_fedpg/PixelGrid-v0" not in gym.registry:
    gym.register(id="sb3_fedpg/PixelGrid-v0", entry_point=f"{__name__}:PixelGridEnv", max_episode_steps=MAX_EPISODE_STEPS)
register_goal_family("sb3_fedpg/HeteroPixelGrid-v0", "sb3_fedpg/PixelGrid-v0", PixelGridGoalReward)
