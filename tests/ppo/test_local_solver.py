"""The batched PPO epochs (hand-written gradients, joined fused Adam) against SB3's PPO update, one agent at a time."""

import copy

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.utils import ConstantSchedule
from torch.nn import functional as F

from sb3_fedpg.common.batched_policy import BatchedActor, StackedCritics
from sb3_fedpg.ppo.local_solver import BatchedAdam, PPOEpochs, PPOSettings

N_AGENTS, N_SAMPLES = 3, 48


def sb3_style_epochs(policy, data, correction, settings, orders):
    """
    One agent's PPO epochs written as SB3's ``PPO.train`` writes them (``evaluate_actions``, autograd,
    ``th.optim.Adam``), with this library's per-network gradient clipping and the drift correction.
    """
    actor_params, critic_params = BatchedActor(policy).parameters, StackedCritics(policy, 1)._net.parameters
    optimizer = th.optim.Adam([*actor_params, *critic_params], lr=settings.learning_rate, eps=1e-8)
    batch = settings.batch_size
    steps = 0
    for order in orders:
        for start in range(0, len(order) - batch + 1, batch):
            mb = {key: value[order[start : start + batch]] for key, value in data.items()}
            # policy.evaluate_actions after its float32 cast of the observations (this test runs in float64)
            latent_pi, latent_vf = policy.mlp_extractor(mb["obs"])
            distribution = policy._get_action_dist_from_latent(latent_pi)
            values, log_prob = policy.value_net(latent_vf), distribution.log_prob(mb["actions"])
            entropy = distribution.entropy()
            advantages = mb["advantages"]
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
            ratio = th.exp(log_prob - mb["old_log_prob"])
            with th.no_grad():  # SB3's approx_kl_div and early stop (before the step)
                log_ratio = log_prob - mb["old_log_prob"]
                approx_kl = th.mean((th.exp(log_ratio) - 1) - log_ratio)
            if settings.target_kl is not None and approx_kl > 1.5 * settings.target_kl:
                return _vectors(actor_params, critic_params, steps)
            policy_loss = -th.min(advantages * ratio, advantages * th.clamp(ratio, 0.8, 1.2)).mean()
            values_pred = mb["old_values"] + th.clamp(values.flatten() - mb["old_values"], -0.3, 0.3)
            value_loss = F.mse_loss(mb["returns"], values_pred)
            loss = policy_loss + settings.ent_coef * -th.mean(entropy) + settings.vf_coef * value_loss
            optimizer.zero_grad()
            loss.backward()
            if correction is not None:
                th.nn.utils.vector_to_parameters(
                    th.nn.utils.parameters_to_vector([p.grad for p in actor_params]) - correction,
                    [p.grad for p in actor_params],
                )
            th.nn.utils.clip_grad_norm_(actor_params, settings.max_grad_norm)
            th.nn.utils.clip_grad_norm_(critic_params, settings.max_grad_norm)
            optimizer.step()
            steps += 1
    return _vectors(actor_params, critic_params, steps)


def _vectors(actor_params, critic_params, steps):
    return th.nn.utils.parameters_to_vector(actor_params), th.nn.utils.parameters_to_vector(critic_params), steps


@pytest.mark.parametrize("action_space", [spaces.Discrete(3), spaces.Box(-2, 2, shape=(2,), dtype=np.float32)])
@pytest.mark.parametrize("with_correction, target_kl", [(False, None), (True, None), (True, 0.04)])
def test_batched_epochs_equal_sb3_style_per_agent_updates(action_space, with_correction, target_kl):
    th.manual_seed(0)
    obs_space = spaces.Box(-1, 1, shape=(4,), dtype=np.float32)
    # float64: both computations agree to ~1e-12, far below any real error
    policy = ActorCriticPolicy(obs_space, action_space, ConstantSchedule(1e-3), net_arch=[16, 16]).double()
    actor, critics = BatchedActor(policy), StackedCritics(policy, N_AGENTS)
    theta = actor.get_vector()
    critics.params.data += 0.1 * th.randn_like(critics.params)  # every agent its own critic
    actor_opt = BatchedAdam(N_AGENTS, actor.n_params).double()
    critic_opt = BatchedAdam(N_AGENTS, critics.params.shape[1]).double()
    settings = PPOSettings(
        learning_rate=3e-3,
        clip_range=0.2,
        clip_range_vf=0.3,
        n_epochs=3,
        batch_size=16,
        gamma=0.99,
        gae_lambda=0.95,
        normalize_advantage=True,
        ent_coef=0.05,
        vf_coef=0.5,
        max_grad_norm=0.2,  # binds on some steps
        target_kl=target_kl,  # 0.04: the agents stop after different numbers of steps
        correction="linear" if with_correction else None,
    )
    obs = th.randn(N_AGENTS, N_SAMPLES, 4, dtype=th.float64)
    with th.no_grad():
        stacked = theta.unsqueeze(0).repeat(N_AGENTS, 1)
        actions = actor.sample(stacked, obs)
        log_prob = actor.distribution(stacked, obs).log_prob(actions)
        values = critics(obs)
    data = {
        "obs": obs,
        "actions": actions,
        # the behaviour policy differs from θ̄: ratios start away from 1 and both clippings bind
        "old_log_prob": log_prob + 0.3 * th.randn_like(log_prob),
        "advantages": th.randn(N_AGENTS, N_SAMPLES, dtype=th.float64),
        "returns": values + th.randn_like(values),
        "old_values": values + 0.3 * th.randn_like(values),
    }
    anchors = 0.1 * th.randn(N_AGENTS, actor.n_params, dtype=th.float64)
    global_grad = anchors.mean(0)
    solver = PPOEpochs(actor, critics, critic_opt, actor_opt, settings, sample=None)
    solver._data = data
    critics_before = critics.params.detach().clone()
    th.manual_seed(1)
    local = solver.local_round(theta, anchors, global_grad)
    th.manual_seed(1)  # the same minibatches: one permutation per agent and epoch from torch's generator
    orders = [th.argsort(th.rand(N_AGENTS, N_SAMPLES), dim=1) for _ in range(settings.n_epochs)]

    steps = []
    for i in range(N_AGENTS):
        agent = copy.deepcopy(policy)
        BatchedActor(agent).set_vector(theta)
        th.nn.utils.vector_to_parameters(critics_before[i], StackedCritics(agent, 1)._net.parameters)
        agent_data = {key: value[i] for key, value in data.items()}
        correction = (global_grad - anchors[i]) if with_correction else None
        actor_i, critic_i, steps_i = sb3_style_epochs(agent, agent_data, correction, settings, [o[i] for o in orders])
        steps.append(steps_i)
        assert int(actor_opt.steps[i]) == int(critic_opt.steps[i]) == steps_i
        th.testing.assert_close(local[i], actor_i, rtol=0, atol=1e-10)
        th.testing.assert_close(critics.params[i].detach(), critic_i, rtol=0, atol=1e-10)
    assert (local - theta).abs().max() > 1e-3  # the update did move the parameters
    # every agent's Adam moments and step count were written back
    full = settings.n_epochs * (N_SAMPLES // settings.batch_size)
    if target_kl is None:
        assert steps == [full] * N_AGENTS
    else:  # the early stop bound, at different steps for different agents (a test of the per-agent bookkeeping)
        assert min(steps) < full and len(set(steps)) > 1, steps
    assert actor_opt.exp_avg.abs().sum() > 0 and critic_opt.exp_avg_sq.abs().sum() > 0
