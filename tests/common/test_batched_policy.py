import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.utils import ConstantSchedule

from sb3_fedpg.common.batched_policy import BatchedActor, StackedCritics


def make_policy(action_space):
    obs_space = spaces.Box(-1, 1, shape=(3,), dtype=np.float32)
    return ActorCriticPolicy(obs_space, action_space, ConstantSchedule(1e-3), net_arch=[8, 8])


@pytest.mark.parametrize("action_space", [spaces.Discrete(3), spaces.Box(-1, 1, shape=(2,), dtype=np.float32)])
def test_batched_actor_matches_sb3_policy(action_space):
    policy = make_policy(action_space)
    actor = BatchedActor(policy)
    theta = actor.get_vector()
    assert theta.numel() == actor.n_params
    obs = th.randn(2, 5, 3)
    params = th.stack([theta, theta + 0.1 * th.randn_like(theta)])
    dist = actor.distribution(params, obs)
    # Row 0 is the SB3 policy itself.
    sb3_dist = policy.get_distribution(obs[0])
    actions = sb3_dist.sample()
    th.testing.assert_close(dist.log_prob(th.stack([actions, actions]))[0], sb3_dist.log_prob(actions))
    # Row 1 is the SB3 policy with row 1's parameters loaded.
    actor.set_vector(params[1])
    th.testing.assert_close(dist.log_prob(th.stack([actions, actions]))[1], policy.get_distribution(obs[1]).log_prob(actions))


def test_gumbel_sampling_follows_the_policy():
    policy = make_policy(spaces.Discrete(3))
    actor = BatchedActor(policy)
    params = actor.get_vector().unsqueeze(0) * 20  # sharpen the distribution
    obs = th.randn(1, 1, 3).expand(1, 20_000, 3)
    th.manual_seed(0)
    samples = actor.sample(params, obs)[0]
    freq = th.bincount(samples, minlength=3).float() / samples.numel()
    probs = actor.distribution(params, obs[:, :1]).probs[0, 0]
    th.testing.assert_close(freq, probs, atol=0.02, rtol=0)


def test_stacked_critics_are_independent():
    policy = make_policy(spaces.Discrete(2))
    critics = StackedCritics(policy, n_agents=3)
    obs = th.randn(1, 4, 3)
    with th.no_grad():
        expected = policy.predict_values(obs[0]).squeeze(-1)
    values = critics(obs.expand(3, 4, 3))
    th.testing.assert_close(values[0], expected)
    values[1].sum().backward()
    grads = critics.params.grad
    assert grads[1].abs().sum() > 0 and grads[0].abs().sum() == 0 and grads[2].abs().sum() == 0


@pytest.mark.parametrize("action_space", [spaces.Discrete(3), spaces.Box(-1, 1, shape=(2,), dtype=np.float32)])
@pytest.mark.parametrize("activation_fn", [th.nn.Tanh, th.nn.ReLU, th.nn.ELU])  # ELU: the generic fallback
def test_hand_written_backward_matches_autograd(action_space, activation_fn):
    # The PPO hot path's evaluate/backward against autograd through torch's own distributions.
    obs_space = spaces.Box(-1, 1, shape=(3,), dtype=np.float32)
    policy = ActorCriticPolicy(
        obs_space, action_space, ConstantSchedule(1e-3), net_arch=[8, 5], activation_fn=activation_fn
    ).double()
    actor, critics = BatchedActor(policy), StackedCritics(policy, n_agents=2)
    params = actor.get_vector().unsqueeze(0) + 0.3 * th.randn(2, actor.n_params, dtype=th.float64)
    critics.params.data += 0.3 * th.randn_like(critics.params)
    obs = th.randn(2, 7, 3, dtype=th.float64)
    actions = actor.sample(params, obs)
    grad_log_prob, grad_entropy = th.randn(2, 7, dtype=th.float64), 0.37

    log_prob, entropy, cache = actor.evaluate(params, obs, actions)
    grad = actor.backward(params, cache, grad_log_prob, grad_entropy)
    leaf = params.clone().requires_grad_(True)
    dist = actor.distribution(leaf, obs)
    th.testing.assert_close(log_prob, dist.log_prob(actions))
    th.testing.assert_close(entropy, dist.entropy())
    (expected,) = th.autograd.grad((dist.log_prob(actions) * grad_log_prob).sum() + grad_entropy * dist.entropy().sum(), leaf)
    th.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-12)

    grad_values = th.randn(2, 7, dtype=th.float64)
    with th.no_grad():
        values, critic_cache = critics.forward_cached(obs)
        critic_grad = critics.backward(critic_cache, grad_values)
    (expected,) = th.autograd.grad((critics(obs) * grad_values).sum(), critics.params)
    th.testing.assert_close(values, critics(obs).detach())
    th.testing.assert_close(critic_grad, expected, rtol=1e-10, atol=1e-12)
