"""The pixel grid family: images that encode the state, shared transitions, per-agent rewards, exact yardsticks."""

import gymnasium as gym
import numpy as np
import pytest
from sb3_fedpg.envs.pixelgrid import (
    GRID,
    MAX_EPISODE_STEPS,
    MOVES,
    PixelGridGoalReward,
    pixel_grid_positions,
    pixel_grid_returns,
    render_cells,
)
from stable_baselines3.common.env_checker import check_env

from sb3_fedpg import make_federated_vec_env

FAMILY = "sb3_fedpg/HeteroPixelGrid-v0"


def test_images_encode_every_cell():
    rows, cols = np.divmod(np.arange(GRID * GRID), GRID)
    images = render_cells(np.stack([rows, cols], axis=1))
    assert images.shape == (GRID * GRID, 42, 42, 1) and images.dtype == np.uint8
    assert set(np.unique(images)) == {0, 255} and (images == 255).sum(axis=(1, 2, 3)).tolist() == [36] * GRID * GRID
    positions = pixel_grid_positions(images)
    np.testing.assert_array_equal(positions, np.stack([cols - 3, rows - 3], axis=1))


@pytest.mark.parametrize("env_id, kwargs", [("sb3_fedpg/PixelGrid-v0", {}), (FAMILY, {"agent": 2, "n_agents": 4})])
def test_sb3_env_checker(env_id, kwargs):
    check_env(gym.make(env_id, **kwargs))


@pytest.mark.parametrize("heterogeneity", [0.0, 1.0])
def test_agents_share_transitions_and_differ_in_reward(rollout_agents, check_shared_transitions, heterogeneity):
    record = rollout_agents(FAMILY, n_agents=3, heterogeneity=heterogeneity)
    check_shared_transitions(record, heterogeneity)


def test_native_vector_env_matches_the_family_reward_and_time_limit():
    env = make_federated_vec_env(FAMILY, 4, 3, seed=0)
    assert type(env.venv).__name__ == "SameStepPixelGridVectorEnv"
    reward_fn = PixelGridGoalReward(4)
    obs = env.reset()
    rng = np.random.default_rng(0)
    for step in range(MAX_EPISODE_STEPS):  # noqa: B007  (checked after the loop)
        actions = rng.integers(0, len(MOVES), env.num_envs)
        new_obs, rewards, dones, infos = env.step(actions)
        final = np.stack([info["terminal_observation"] for info in infos]) if dones.all() else new_obs
        expected = reward_fn(obs, actions, final, np.zeros(env.num_envs), env.agent_ids)
        np.testing.assert_allclose(rewards, expected, rtol=1e-6)
        # moves are one cell at most, and the walls hold
        moved = np.abs(pixel_grid_positions(final) - pixel_grid_positions(obs)).sum(1)
        assert moved.max() <= 1
        obs = new_obs
    assert dones.all() and step == MAX_EPISODE_STEPS - 1


def _exact_return(policy, reward_fn, horizon=MAX_EPISODE_STEPS):
    """Average over all 49 start cells of a deterministic policy's undiscounted average-objective return."""
    rows, cols = np.divmod(np.arange(GRID * GRID), GRID)
    cells, total = np.stack([rows, cols], axis=1), np.zeros(GRID * GRID)
    for _ in range(horizon):
        cells = np.clip(cells + MOVES[policy(cells)], 0, GRID - 1)
        total -= reward_fn.average_cost(np.stack([cells[:, 1] - 3, cells[:, 0] - 3], axis=1).astype(float))
    return total.mean()


def _greedy_to(target):
    # one cell towards ``target`` along the axis of the larger offset (the larger squared term shrinks most)
    def policy(cells):
        d_row, d_col = target[0] - cells[:, 0], target[1] - cells[:, 1]
        by_row = np.abs(d_row) >= np.abs(d_col)
        row_move = np.where(d_row < 0, 1, 2)
        col_move = np.where(d_col < 0, 3, 4)
        return np.where((d_row == 0) & (d_col == 0), 0, np.where(by_row, row_move, col_move))

    return policy


def test_the_optimum_is_exact_and_the_best_hold_cell_attains_it():
    # h = 0: walk straight to the centre; h = 1: to the cell of least average cost (a brute-force search)
    for heterogeneity in (0.0, 1.0):
        reward_fn = PixelGridGoalReward(4, heterogeneity)
        rows, cols = np.divmod(np.arange(GRID * GRID), GRID)
        costs = reward_fn.average_cost(np.stack([cols - 3, rows - 3], axis=1).astype(float))
        best = divmod(int(costs.argmin()), GRID)
        reference = pixel_grid_returns(4, heterogeneity)
        greedy = _exact_return(_greedy_to(best), reward_fn)
        assert reference["optimal"] >= greedy - 1e-9
        if heterogeneity == 0.0:  # separable quadratic cost to a cell: the greedy walk is optimal
            assert reference["optimal"] == pytest.approx(greedy, abs=1e-9)
        assert reference["optimal"] - greedy < 0.05 * abs(greedy)
        stay = _exact_return(lambda cells: np.zeros(len(cells), dtype=int), reward_fn)
        assert reference["optimal"] > stay


def test_the_random_policy_return_matches_simulation():
    env = make_federated_vec_env(FAMILY, 4, 64, seed=3)
    rng = np.random.default_rng(3)
    env.reset()
    total = np.zeros(env.num_envs)
    for _ in range(MAX_EPISODE_STEPS):
        _, rewards, _, _ = env.step(rng.integers(0, len(MOVES), env.num_envs))
        total += rewards
    per_agent = total.reshape(4, 64)
    estimate, se = per_agent.mean(), per_agent.mean(0).std() / np.sqrt(64)
    assert abs(estimate - pixel_grid_returns(4)["random"]) < 4 * se
