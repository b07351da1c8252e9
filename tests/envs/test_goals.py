"""
The goal/weight reward builder gives exactly the numbers of the formulas the families had before it (issue 25).

The old per-family formulas are copied here verbatim and compared bit for bit with the families' reward objects, on
random inputs, for every agent and several heterogeneity values and federation sizes.
"""

import numpy as np
import pytest
from sb3_fedpg.envs import (
    ArmGoalReward,
    CartPoleTargetReward,
    HalfCheetahVelocityReward,
    LunarLanderTargetReward,
    MountainCarFuelReward,
    PendulumTargetReward,
    PixelGridGoalReward,
    PointMassGoalReward,
    get_family,
)
from sb3_fedpg.envs.pixelgrid import pixel_grid_positions, render_cells

HETEROGENEITIES = [0.0, 0.3, 0.5, 1.0]
N_AGENTS = [1, 3, 4, 5]


def _old_u(n_agents):
    return np.linspace(-1.0, 1.0, n_agents) if n_agents > 1 else np.zeros(1)


def _old_goals(n_agents, heterogeneity, radius=1.0):
    angle = 2 * np.pi * np.arange(n_agents) / n_agents
    return float(heterogeneity) * radius * np.stack([np.cos(angle), np.sin(angle)], axis=1)


def _old_weights(n_agents, heterogeneity, weight_ratio=16.0):
    return weight_ratio ** (float(heterogeneity) * _old_u(n_agents) / 2.0)


def _old_point_mass_reward(goals, weights, action, next_obs, agent_ids, position_slice):
    force = np.clip(np.asarray(action, dtype=np.float64).reshape(len(next_obs), -1), -1.0, 1.0)
    offset = np.asarray(next_obs, dtype=np.float64)[:, position_slice] - goals[agent_ids]
    cost = weights[agent_ids] * np.square(offset).sum(1) + 0.01 * np.square(force).sum(1)
    return (-cost).astype(np.float32)


def _batch(rng, n_agents, obs_dim, n=64):
    obs = rng.normal(0.0, 1.5, size=(n, obs_dim)).astype(np.float32)
    next_obs = rng.normal(0.0, 1.5, size=(n, obs_dim)).astype(np.float32)
    action = rng.uniform(-1.5, 1.5, size=(n, 2)).astype(np.float32)
    agent_ids = np.concatenate([np.arange(n_agents), rng.integers(0, n_agents, size=n - n_agents)])
    reward = rng.normal(size=n).astype(np.float32)
    return obs, action, next_obs, reward, agent_ids[:n]


POINT_REWARDS = [(PointMassGoalReward, 4, slice(0, 2)), (ArmGoalReward, 8, slice(6, 8))]


@pytest.mark.parametrize("n_agents", N_AGENTS)
@pytest.mark.parametrize("heterogeneity", HETEROGENEITIES)
@pytest.mark.parametrize(("cls", "obs_dim", "position_slice"), POINT_REWARDS)
def test_point_mass_and_arm_rewards_are_the_old_formula(cls, obs_dim, position_slice, heterogeneity, n_agents):
    rng = np.random.default_rng(n_agents * 10 + int(heterogeneity * 10))
    for radius, weight_ratio in [(1.0, 16.0), (0.7, 3.0)]:
        reward_fn = cls(n_agents, heterogeneity, radius=radius, weight_ratio=weight_ratio)
        goals, weights = _old_goals(n_agents, heterogeneity, radius), _old_weights(n_agents, heterogeneity, weight_ratio)
        np.testing.assert_array_equal(reward_fn.goals, goals)
        np.testing.assert_array_equal(reward_fn.weights, weights)
        np.testing.assert_array_equal(reward_fn.optimal_hold_point(), (weights[:, None] * goals).sum(0) / weights.sum())
        obs, action, next_obs, reward, agent_ids = _batch(rng, n_agents, obs_dim)
        new = reward_fn(obs, action, next_obs, reward, agent_ids)
        assert new.dtype == np.float32
        np.testing.assert_array_equal(new, _old_point_mass_reward(goals, weights, action, next_obs, agent_ids, position_slice))


@pytest.mark.parametrize("n_agents", N_AGENTS)
@pytest.mark.parametrize("heterogeneity", HETEROGENEITIES)
def test_pixel_grid_reward_is_the_old_formula(heterogeneity, n_agents):
    rng = np.random.default_rng(n_agents * 10 + int(heterogeneity * 10))
    for weight_ratio in (16.0, 3.0):
        reward_fn = PixelGridGoalReward(n_agents, heterogeneity, weight_ratio=weight_ratio)
        goals, weights = _old_goals(n_agents, heterogeneity, 3.0), _old_weights(n_agents, heterogeneity, weight_ratio)
        np.testing.assert_array_equal(reward_fn.goals, goals)
        np.testing.assert_array_equal(reward_fn.weights, weights)
        n = 64
        next_obs = render_cells(rng.integers(0, 7, size=(n, 2)))
        agent_ids = np.concatenate([np.arange(n_agents), rng.integers(0, n_agents, size=n - n_agents)])
        action = rng.integers(0, 5, size=n)
        new = reward_fn(next_obs, action, next_obs, np.zeros(n, dtype=np.float32), agent_ids)
        offset = pixel_grid_positions(next_obs) - goals[agent_ids]
        old = (-weights[agent_ids] * np.square(offset).sum(1) / 3**2).astype(np.float32)
        assert new.dtype == np.float32
        np.testing.assert_array_equal(new, old)
        positions = rng.integers(-3, 4, size=(n, 2)).astype(np.float64)
        old_average = (weights * np.square(positions[:, None, :] - goals[None]).sum(-1)).mean(1) / 3**2
        np.testing.assert_array_equal(reward_fn.average_cost(positions), old_average)


@pytest.mark.parametrize("n_agents", N_AGENTS)
@pytest.mark.parametrize("heterogeneity", HETEROGENEITIES)
def test_one_dimensional_targets_are_the_old_formulas(heterogeneity, n_agents):
    h, u = float(heterogeneity), _old_u(n_agents)
    np.testing.assert_array_equal(CartPoleTargetReward(n_agents, h).targets, (1.5 * h * u).astype(np.float32))
    np.testing.assert_array_equal(PendulumTargetReward(n_agents, h).targets, (np.pi / 4 * h * u).astype(np.float32))
    np.testing.assert_array_equal(MountainCarFuelReward(n_agents, h).prices, (0.1 * 10.0 ** (h * u)).astype(np.float32))
    np.testing.assert_array_equal(HalfCheetahVelocityReward(n_agents, h).targets, (2.0 + 1.5 * h * u).astype(np.float32))
    np.testing.assert_array_equal(LunarLanderTargetReward(n_agents, h).targets, (0.5 * h * u).astype(np.float32))


@pytest.mark.parametrize("env_id", ["sb3_fedpg/HeteroPointMass-v0", "sb3_fedpg/HeteroArm-v0", "sb3_fedpg/HeteroPixelGrid-v0"])
@pytest.mark.parametrize("heterogeneity", [-0.1, 1.5])
def test_heterogeneity_out_of_range_is_refused(env_id, heterogeneity):
    with pytest.raises(ValueError, match="heterogeneity must be in"):
        get_family(env_id).build(4, heterogeneity=heterogeneity)
