"""The HeteroLQR-v0 family: per-agent Gymnasium envs, native vector env, FederatedPG smoke run."""

import warnings

import gymnasium as gym
import numpy as np
import pytest
import sb3_fedpg.envs  # noqa: F401  (registers the families)
from sb3_fedpg.envs.lqr import LQRVectorEnv, lqr_problem
from stable_baselines3.common.env_checker import check_env

from sb3_fedpg import FederatedPG, make_federated_vec_env
from sb3_fedpg.lqr import agent_costs, optimal_gain

ENV_ID = "sb3_fedpg/HeteroLQR-v0"


@pytest.mark.parametrize("agent", range(3))
def test_check_env_per_agent(agent):
    env = gym.make(ENV_ID, agent=agent, n_agents=3, heterogeneity=1.0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="We recommend you to use a symmetric and normalized Box action space")
        check_env(env)


def test_agent_rewards_are_their_own_costs_and_episodes_truncate():
    env = gym.make(ENV_ID, agent=1, n_agents=3, max_episode_steps=7)
    problem = lqr_problem(3)
    obs, _ = env.reset(seed=0)
    action = np.array([0.3, -0.2], dtype=np.float32)
    x = obs.astype(np.float64)
    _, reward, terminated, truncated, _ = env.step(action)
    u = action.astype(np.float64)
    assert reward == pytest.approx(-(x @ problem.Q[1] @ x + u @ problem.R[1] @ u), rel=1e-5)
    for step in range(2, 8):
        _, _, terminated, truncated, _ = env.step(action)
        assert not terminated and truncated == (step == 7)


def test_vector_env_matches_exact_cost_of_a_linear_policy():
    """Monte Carlo returns of u = −K x on the native vector env match C_i(K) from the Lyapunov equation."""
    n_agents, per_agent, horizon = 2, 2000, 60
    venv = make_federated_vec_env(
        ENV_ID, n_agents=n_agents, n_envs_per_agent=per_agent, seed=0, env_kwargs={"max_episode_steps": horizon}
    )
    assert isinstance(venv.venv, LQRVectorEnv)
    problem = lqr_problem(n_agents, gamma=0.9)
    K = 0.5 * optimal_gain(problem).gain
    obs = venv.reset()
    returns = np.zeros(venv.num_envs)
    for t in range(horizon):
        obs, rewards, dones, infos = venv.step((-(obs @ K.T)).astype(np.float32))
        returns += 0.9**t * rewards
    assert dones.all() and "terminal_observation" in infos[0]
    mc = returns.reshape(n_agents, per_agent).mean(1)
    se = returns.reshape(n_agents, per_agent).std(1) / np.sqrt(per_agent)
    exact = -agent_costs(problem, K)  # truncation at 60 steps: γ^60 ≈ 2e-3 of the tail, far below 4 se
    assert np.all(np.abs(mc - exact) < 4 * se + 1e-3 * np.abs(exact)), (mc, exact, se)


def test_sync_and_native_vectorisation_agree():
    kwargs = dict(n_agents=2, n_envs_per_agent=3, seed=5)
    native = make_federated_vec_env(ENV_ID, **kwargs, vectorization_mode="native")
    sync = make_federated_vec_env(ENV_ID, **kwargs, vectorization_mode="sync")
    for venv in (native, sync):
        obs = venv.reset()
        assert obs.shape == (6, 4) and np.all(np.isfinite(obs))
        obs, rewards, _, _ = venv.step(np.zeros((6, 2), dtype=np.float32))
        assert rewards.shape == (6,) and np.all(rewards <= 0)


def test_family_parameters_are_checked():
    with pytest.raises(ValueError, match="open-loop stable"):
        gym.make(ENV_ID, spectral_radius=1.2)
    with pytest.raises(TypeError, match="unknown keyword"):
        make_federated_vec_env(ENV_ID, n_agents=2, env_kwargs={"bogus": 1})


def test_federated_pg_smoke_train():
    model = FederatedPG(
        "MlpPolicy", ENV_ID, n_agents=4, n_envs_per_agent=2, n_steps=16, local_steps=2, learning_rate=1e-3, seed=0
    )
    model.learn(1024)
    assert 0 < model.num_timesteps <= 2000
    action, _ = model.predict(np.zeros(4, dtype=np.float32), deterministic=True)
    assert action.shape == (2,) and np.all(np.isfinite(action))


def test_lqr_problem_and_env_modules_stay_torch_free():
    import subprocess
    import sys

    code = (
        "import sys, gymnasium as gym, sb3_fedpg, sb3_fedpg.lqr\n"
        "env = gym.make('sb3_fedpg/HeteroLQR-v0', agent=0, n_agents=2)\n"
        "print(','.join(m for m in ('torch', 'stable_baselines3') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""
