"""The agent-aware central baseline: the critic reads the agent one-hot, the shared actor does not."""

import numpy as np
import pytest
import torch as th
from stable_baselines3 import PPO

from sb3_fedpg import make_federated_vec_env
from sb3_fedpg.common.agent_aware import AgentAwareCriticPolicy, AgentIdVecEnv


def _env(n_agents=3, m=2, env_id="sb3_fedpg/HeteroPendulum-v0"):
    return AgentIdVecEnv(make_federated_vec_env(env_id, n_agents=n_agents, n_envs_per_agent=m, seed=0))


def test_observations_carry_their_agents_one_hot_terminal_ones_too():
    env = _env(env_id="sb3_fedpg/HeteroCartPole-v0")
    obs = env.reset()
    assert obs.shape == (6, 4 + 3)
    np.testing.assert_array_equal(obs[:, 4:], np.repeat(np.eye(3), 2, axis=0))
    assert env.observation_space.contains(obs[0].astype(np.float32))
    for _ in range(200):
        obs, _, dones, infos = env.step(np.array([env.action_space.sample() for _ in range(env.num_envs)]))
        for e in np.flatnonzero(dones):
            terminal = infos[e]["terminal_observation"]
            assert terminal.shape == (7,) and terminal[4 + e // 2] == 1 and terminal[4:].sum() == 1
        if dones.any():
            break
    assert dones.any()


def test_actor_ignores_the_agent_and_the_critic_reads_it():
    env = _env()
    model = PPO(AgentAwareCriticPolicy, env, policy_kwargs={"n_agent_ids": 3}, seed=0, device="cpu")
    policy = model.policy
    with th.no_grad():  # a critic that uses its inputs
        for p in policy.value_net.parameters():
            p.add_(0.5)
    obs = th.as_tensor(env.reset()[:1]).repeat(3, 1)
    obs[:, -3:] = th.eye(3)  # the same state, as each agent
    with th.no_grad():
        dist = policy.get_distribution(obs).distribution
        values = policy.predict_values(obs)
    th.testing.assert_close(dist.mean, dist.mean[:1].expand_as(dist.mean))
    assert float(values.max() - values.min()) > 1e-3
    # the actor's first layer never sees the id: its weights on those inputs get no gradient
    loss = policy.evaluate_actions(obs, th.zeros(3, 1))[1].sum()
    loss.backward()
    first = policy.mlp_extractor.policy_net[0].weight.grad
    assert th.count_nonzero(first[:, -3:]) == 0 and th.count_nonzero(first[:, :-3]) > 0


def test_ppo_learns_saves_and_loads_with_it(tmp_path):
    env = _env()
    model = PPO(AgentAwareCriticPolicy, env, n_steps=32, batch_size=64, policy_kwargs={"n_agent_ids": 3}, seed=0)
    model.learn(256)
    model.save(tmp_path / "m")
    loaded = PPO.load(tmp_path / "m", env=env)
    obs = env.reset()
    np.testing.assert_allclose(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    assert loaded.policy.n_agent_ids == 3


def test_refusals():
    with pytest.raises(ValueError, match="separate actor and critic"):
        PPO(AgentAwareCriticPolicy, _env(), policy_kwargs={"n_agent_ids": 3, "share_features_extractor": True})
    from stable_baselines3.common.env_util import make_vec_env

    with pytest.raises(ValueError, match=r"needs a federated VecEnv .*make_federated_vec_env"):
        AgentIdVecEnv(make_vec_env("Pendulum-v1", n_envs=2))
    with pytest.raises(ValueError, match="flat Box observations"):
        AgentIdVecEnv(make_federated_vec_env("sb3_fedpg/HeteroPixelGrid-v0", n_agents=2, n_envs_per_agent=1))
