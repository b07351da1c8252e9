"""The point-mass and two-link-arm families: shared dynamics, rewards that disagree in goal and curvature."""

import gymnasium as gym
import numpy as np
import pytest
from sb3_fedpg.envs import ArmGoalReward, PointMassGoalReward, get_family
from sb3_fedpg.envs.arm import hand_position
from stable_baselines3.common.env_checker import check_env

from sb3_fedpg import FederatedPG, make_federated_vec_env

POINT_MASS = "sb3_fedpg/HeteroPointMass-v0"
ARM = "sb3_fedpg/HeteroArm-v0"
FAMILIES = [POINT_MASS, ARM]


@pytest.mark.parametrize("env_id", [*FAMILIES, "sb3_fedpg/PointMass-v0", "sb3_fedpg/TwoLinkArm-v0"])
def test_check_env(env_id):
    if env_id in FAMILIES:
        for agent in range(4):
            check_env(gym.make(env_id, agent=agent, n_agents=4, heterogeneity=1.0), warn=False)
    else:
        check_env(gym.make(env_id), warn=False)


@pytest.mark.parametrize("env_id", FAMILIES)
@pytest.mark.parametrize("heterogeneity", [0.0, 0.5, 1.0])
def test_same_transitions_different_rewards(rollout_agents, check_shared_transitions, env_id, heterogeneity):
    record = rollout_agents(env_id, n_agents=4, n_steps=60, heterogeneity=heterogeneity)
    check_shared_transitions(record, heterogeneity)
    assert record["truncated"][-1].all() and len(record["rewards"]) == 50  # 50-step episodes, no termination


@pytest.mark.parametrize("env_id", FAMILIES)
def test_zero_heterogeneity_is_the_base_env(env_id):
    spec = get_family(env_id)
    base = gym.make(spec.base_id)
    agent = gym.make(env_id, agent=2, n_agents=4, heterogeneity=0.0)
    base.reset(seed=4)
    agent.reset(seed=4)
    for action in np.random.default_rng(0).uniform(-1.5, 1.5, size=(20, 2)).astype(np.float32):
        base_step, agent_step = base.step(action), agent.step(action)
        np.testing.assert_array_equal(base_step[0], agent_step[0])
        assert agent_step[1] == pytest.approx(base_step[1], rel=1e-5, abs=1e-5)


def test_goals_weights_and_optimal_hold_point():
    reward = PointMassGoalReward(4, heterogeneity=1.0)
    np.testing.assert_allclose(reward.goals, [[1, 0], [0, 1], [-1, 0], [0, -1]], atol=1e-12)
    np.testing.assert_allclose(reward.weights, [0.25, 4 ** (-1 / 3), 4 ** (1 / 3), 4.0])
    c_star = reward.optimal_hold_point()
    # c* minimises the average cost (1/N) Σ w_i ‖p − g_i‖²: its gradient vanishes there ...
    np.testing.assert_allclose((reward.weights[:, None] * (c_star - reward.goals)).sum(0), 0.0, atol=1e-12)

    def average_cost(p):
        obs = np.tile(np.r_[p, 0.0, 0.0], (4, 1)).astype(np.float32)
        return -reward(obs, np.zeros((4, 2)), obs, np.zeros(4), np.arange(4)).mean()

    # ... and it is far better than the unweighted centroid (what averaging the agents' optima gives) or any own goal.
    assert average_cost(c_star) < 0.75 * average_cost(reward.goals.mean(0))
    assert average_cost(c_star) < 0.5 * np.mean([average_cost(g) for g in reward.goals])
    half = PointMassGoalReward(4, heterogeneity=0.5)
    np.testing.assert_allclose(np.linalg.norm(half.goals, axis=1), 0.5)
    np.testing.assert_allclose(half.weights.max() / half.weights.min(), 4.0)


def test_arm_reward_uses_the_hand_position():
    reward = ArmGoalReward(4, heterogeneity=1.0)
    q = np.array([[0.3, -1.2], [2.0, 0.5], [-1.0, 2.5], [0.0, 0.0]])
    obs = np.zeros((4, 8), dtype=np.float32)
    obs[:, 6:] = hand_position(q)
    r = reward(obs, np.zeros((4, 2)), obs, np.zeros(4), np.arange(4))
    expected = -reward.weights * np.square(hand_position(q) - reward.goals).sum(1)
    np.testing.assert_allclose(r, expected, rtol=1e-5)
    np.testing.assert_allclose(hand_position(np.zeros((1, 2))), [[1.8, 0.0]])


@pytest.mark.parametrize("env_id", FAMILIES)
def test_native_vector_env_matches_single_envs(env_id):
    n_agents = 2
    fed = make_federated_vec_env(env_id, n_agents=n_agents, n_envs_per_agent=3, seed=1)
    assert type(fed.venv).__name__.startswith("SameStep")
    obs = fed.reset()
    singles = [gym.make(env_id, agent=i, n_agents=n_agents) for i in range(n_agents)]
    rng = np.random.default_rng(0)
    for step in range(55):
        actions = rng.uniform(-1, 1, size=(fed.num_envs, 2)).astype(np.float32)
        state = fed.venv.state.copy()
        next_obs, rewards, dones, infos = fed.step(actions)
        for k in range(fed.num_envs):
            env = singles[k // 3]
            env.reset(seed=0)
            env.unwrapped.state = state[k].copy()
            single_obs, single_reward, *_ = env.step(actions[k])
            seen = infos[k]["terminal_observation"] if dones[k] else next_obs[k]
            np.testing.assert_allclose(seen, single_obs, rtol=1e-5, atol=1e-6)
            assert rewards[k] == pytest.approx(single_reward, rel=1e-4, abs=1e-5)
        # SAME_STEP auto-reset: the 50th step ends every episode and returns the next episode's first observation
        assert dones.all() == (step == 49)
        if step == 49:
            assert np.all(fed.venv.state[:, 2:] == 0.0)
        obs = next_obs
    assert obs.shape == (fed.num_envs, fed.observation_space.shape[0])


def test_bad_arguments():
    for env_id in FAMILIES:
        with pytest.raises(ValueError, match=r"heterogeneity must be in \[0, 1\]"):
            make_federated_vec_env(env_id, n_agents=2, env_kwargs={"heterogeneity": -0.1})
        with pytest.raises(ValueError, match="weight_ratio must be >= 1"):
            make_federated_vec_env(env_id, n_agents=2, env_kwargs={"weight_ratio": 0.5})
        with pytest.raises(TypeError, match="unknown keyword argument"):
            make_federated_vec_env(env_id, n_agents=2, env_kwargs={"goal": 1.0})


@pytest.mark.parametrize("env_id", FAMILIES)
def test_fedpg_trains(env_id):
    model = FederatedPG("MlpPolicy", env_id, n_agents=2, n_envs_per_agent=2, n_steps=10, local_steps=2, seed=0)
    model.learn(200)
    assert model.num_timesteps >= 200
