"""
The local gradient estimates are the gradients of each agent's own objective.

One-step bandits: every agent sees the same state and has its own reward, so ``J_i(θ) = E_{a~π_θ}[r_i(a)]`` is
known in closed form. Actions are drawn with SB3's own distribution (independently of the batched actor),
fed to the learner as a batch, and the estimate is compared with the autograd gradient of the exact ``J_i``
computed through SB3's policy. A flipped sign, a wrong weight, a mixed-up agent or a wrong log-probability fails.
"""

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces

from sb3_fedpg import FederatedPG, make_federated_vec_env
from sb3_fedpg.common.batch import RolloutBatch

N_SAMPLES = 200_000
DISCRETE_REWARDS = np.array([[1.0, 0.0, -1.0, 0.5], [-1.0, 0.2, 1.0, 0.0]])
BOX_TARGETS = np.array([0.7, -0.4])


class Bandit(gym.Env):
    """One step from a constant state; the reward is agent-specific (but only the learner sees it here)."""

    def __init__(self, action_space):
        self.observation_space = spaces.Box(-2, 2, (3,))
        self.action_space = action_space

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        return np.array([0.5, -1.0, 1.0], dtype=np.float32), {}

    def step(self, action):
        return np.array([0.5, -1.0, 1.0], dtype=np.float32), 0.0, True, False, {}


def make_model(action_space, estimator):
    env = make_federated_vec_env([lambda: Bandit(action_space)] * 2, n_envs_per_agent=1)
    model = FederatedPG(
        "MlpPolicy", env, estimator=estimator, normalize_advantage=False, n_steps=1, seed=0, policy_kwargs={"net_arch": [8]}
    )
    # move away from the initial (near-uniform / zero-mean) policy so the gradient is not tiny
    gen = th.Generator().manual_seed(3)
    theta = model.get_global_parameters()
    model.set_global_parameters(theta + 0.5 * th.randn(theta.shape, generator=gen).to(theta.device))
    return model


def exact_gradient(model, objective):
    """∇_θ J for the global parameters, through SB3's policy (not the batched actor)."""
    policy = model.policy
    params = model._actor.parameters
    obs = th.tensor([[0.5, -1.0, 1.0]], device=model.device)
    dist = policy.get_distribution(obs).distribution
    value = objective(dist)
    grads = th.autograd.grad(value, params)
    return th.cat([g.flatten() for g in grads])


def batch_from(model, actions, rewards):
    n = 2
    obs = th.tensor([0.5, -1.0, 1.0], device=model.device).expand(n, N_SAMPLES, 3).contiguous()
    return RolloutBatch(
        obs=obs,
        actions=actions,
        rewards=th.as_tensor(rewards, dtype=th.float32, device=model.device).view(n, 1, N_SAMPLES),
        dones=th.ones(n, 1, N_SAMPLES, device=model.device),
        last_obs=obs[:, :1].expand(n, N_SAMPLES, 3).contiguous(),
    )


@pytest.mark.parametrize("estimator", ["gpomdp", "reinforce", "gae"])
def test_discrete_estimate_is_the_gradient_of_each_agents_objective(estimator):
    model = make_model(spaces.Discrete(4), estimator)
    th.manual_seed(5)
    dist = model.policy.get_distribution(th.tensor([[0.5, -1.0, 1.0]], device=model.device)).distribution
    actions = dist.sample((2, N_SAMPLES)).squeeze(-1)  # (2, M) drawn by SB3's own distribution
    rewards = DISCRETE_REWARDS[np.arange(2)[:, None], actions.cpu().numpy()]
    theta = model.get_global_parameters().unsqueeze(0).repeat(2, 1)
    estimate = model.learner.gradients(theta, batch_from(model, actions, rewards))
    for i in range(2):
        r = th.as_tensor(DISCRETE_REWARDS[i], dtype=th.float32, device=model.device)
        exact = exact_gradient(model, lambda d, r=r: (d.probs[0] * r).sum())
        error = th.linalg.vector_norm(estimate[i] - exact) / th.linalg.vector_norm(exact)
        assert error < 0.1, (i, float(error))


@pytest.mark.parametrize("estimator", ["gpomdp", "gae"])
def test_gaussian_estimate_is_the_gradient_of_each_agents_objective(estimator):
    model = make_model(spaces.Box(-3, 3, (1,)), estimator)
    th.manual_seed(6)
    dist = model.policy.get_distribution(th.tensor([[0.5, -1.0, 1.0]], device=model.device)).distribution
    actions = dist.sample((2, N_SAMPLES)).squeeze(2)  # (2, M, 1)
    targets = th.as_tensor(BOX_TARGETS, dtype=th.float32, device=model.device).view(2, 1, 1)
    rewards = -((actions - targets) ** 2).squeeze(-1).cpu().numpy()
    theta = model.get_global_parameters().unsqueeze(0).repeat(2, 1)
    estimate = model.learner.gradients(theta, batch_from(model, actions, rewards))
    for i in range(2):
        c = float(BOX_TARGETS[i])
        # J_i = −E(a − c)² = −((μ − c)² + σ²)
        exact = exact_gradient(model, lambda d, c=c: -((d.mean[0, 0] - c) ** 2 + d.stddev[0, 0] ** 2))
        error = th.linalg.vector_norm(estimate[i] - exact) / th.linalg.vector_norm(exact)
        assert error < 0.1, (i, float(error))


def test_local_critics_learn_their_own_agents_values():
    model = make_model(spaces.Discrete(4), "gae")
    th.manual_seed(7)
    dist = model.policy.get_distribution(th.tensor([[0.5, -1.0, 1.0]], device=model.device)).distribution
    actions = dist.sample((2, 4096)).squeeze(-1)
    rewards = DISCRETE_REWARDS[np.arange(2)[:, None], actions.cpu().numpy()]
    obs = th.tensor([0.5, -1.0, 1.0], device=model.device).expand(2, 4096, 3).contiguous()
    theta = model.get_global_parameters().unsqueeze(0).repeat(2, 1)
    before = model.critics.params.detach().clone()
    for _ in range(300):
        batch = RolloutBatch(
            obs=obs,
            actions=actions,
            rewards=th.as_tensor(rewards, dtype=th.float32, device=model.device).view(2, 1, 4096),
            dones=th.ones(2, 1, 4096, device=model.device),
            last_obs=obs[:, :1],
        )
        model.learner.gradients(theta, batch)
    assert not th.allclose(before, model.critics.params)
    with th.no_grad():
        values = model.critics(obs[:, :1]).squeeze(-1)
    # Each critic converges to its own agent's expected reward under the policy (critic lr 1e-3, 300 steps).
    expected = th.as_tensor(rewards.mean(1), dtype=th.float32, device=model.device)
    th.testing.assert_close(values, expected, atol=0.05, rtol=0)


class RewardedBandit(Bandit):
    def __init__(self, rewards):
        super().__init__(spaces.Discrete(len(rewards)))
        self.rewards = rewards

    def step(self, action):
        return np.array([0.5, -1.0, 1.0], dtype=np.float32), float(self.rewards[int(action)]), True, False, {}


def train_bandit(local_optimizer, learning_rate, correction):
    # Agents disagree (agent 0 prefers action 0, agent 1 action 2); the average reward is best at action 3.
    env = make_federated_vec_env([lambda r=r: RewardedBandit(r) for r in DISCRETE_REWARDS], n_envs_per_agent=32)
    model = FederatedPG(
        "MlpPolicy",
        env,
        n_steps=1,
        local_steps=4,
        learning_rate=learning_rate,
        local_optimizer=local_optimizer,
        correction=correction,
        seed=0,
        policy_kwargs={"net_arch": [8]},
    )

    def objective():
        with th.no_grad():
            obs = th.tensor([[0.5, -1.0, 1.0]], device=model.device)
            probs = model.policy.get_distribution(obs).distribution.probs[0].cpu().numpy()
        return float(probs @ DISCRETE_REWARDS.mean(0)), probs

    start, _ = objective()
    model.learn(8000)
    return start, *objective()


@pytest.mark.parametrize("local_optimizer, learning_rate", [("sgd", 0.5), ("adam", 0.01)])
def test_federated_training_raises_the_average_objective(local_optimizer, learning_rate):
    start, end, probs = train_bandit(local_optimizer, learning_rate, correction=True)
    assert end > start + 0.1, (start, end, probs)
    assert probs.argmax() == 3


def test_fedavg_drifts_to_one_agents_optimum_where_the_correction_does_not():
    # Same seed, steps and step size: H = 4 local steps of FedAvg-PG pull the policy to the agents' own optima
    # (actions 0 and 2); Fast-FedPG's correction keeps the average objective's optimum (action 3).
    _, fast, _ = train_bandit("sgd", 0.5, correction=True)
    _, fedavg, probs = train_bandit("sgd", 0.5, correction=False)
    assert fast > fedavg + 0.1, (fast, fedavg, probs)
