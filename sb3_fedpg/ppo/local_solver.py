"""
PPO's clipped-surrogate epochs as the local solver of a federated round, batched over agents.

Every agent collects its rollout under ``θ̄``; its **local** critic gives GAE advantages; then each
agent runs ``n_epochs`` of minibatch updates on its own rollout. All agents' minibatches go through
one batched forward/backward (stacked parameters, :class:`~sb3_fedpg.common.batched_policy.BatchedActor`),
with per-agent Adam moments, per-agent gradient clipping and a per-agent KL early stop. With
``correction=True`` each agent's objective gets the linear term ``⟨g − a_i, θ⟩`` (SCAFFOLD-style):
its gradient adds ``g − a_i`` at every step, where ``a_i`` is the agent's policy gradient at ``θ̄`` on
its own rollout (the PPO surrogate's gradient at ratio 1) and ``g`` their aggregate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch as th

from sb3_fedpg.common.batch import RolloutBatch
from sb3_fedpg.common.batched_policy import BatchedActor, StackedCritics
from sb3_fedpg.common.estimators import gae_advantages
from sb3_fedpg.fedpg.learner import RoundStats, bootstrap_truncations

#: The per-minibatch statistics, averaged over the round.
STEP_STATS = ("train/policy_gradient_loss", "train/value_loss", "train/entropy_loss", "train/approx_kl", "train/clip_fraction")


class BatchedAdam(th.nn.Module):
    """
    Adam on stacked per-agent rows ``(n_agents, n_params)``, with a mask of the agents that step.

    Masked rows keep their parameters *and* their moments (an agent that stopped early is frozen).

    :param n_agents: number of agents
    :param n_params: parameters per agent
    :param betas: Adam's decay rates
    :param eps: Adam's epsilon
    """

    def __init__(self, n_agents: int, n_params: int, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        super().__init__()
        self.betas = betas
        self.eps = eps
        self.register_buffer("exp_avg", th.zeros(n_agents, n_params))
        self.register_buffer("exp_avg_sq", th.zeros(n_agents, n_params))
        self.register_buffer("steps", th.zeros(n_agents))

    @th.no_grad()
    def descend(self, params: th.Tensor, grad: th.Tensor, learning_rate: float, active: th.Tensor) -> th.Tensor:
        """
        :param params: ``(n, p)``
        :param grad: gradient of the loss to minimise, ``(n, p)``
        :param learning_rate: step size
        :param active: boolean ``(n,)``: the agents that step
        :return: the new parameters
        """
        beta1, beta2 = self.betas
        if bool(active.all()):  # the common case: plain batched Adam, fewest ops
            self.steps += 1
            self.exp_avg.lerp_(grad, 1 - beta1)
            self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            mask: th.Tensor | float = 1.0
        else:
            mask = active.to(params.dtype).unsqueeze(1)
            self.steps += active.to(self.steps.dtype)
            self.exp_avg.mul_(1 - mask * (1 - beta1)).add_(mask * (1 - beta1) * grad)
            self.exp_avg_sq.mul_(1 - mask * (1 - beta2)).add_(mask * (1 - beta2) * grad * grad)
        steps = self.steps.clamp(min=1).unsqueeze(1)
        # Adam's update with the bias corrections folded into the step size (per agent: steps may differ)
        step_size = learning_rate / (1 - beta1**steps)
        denom = (self.exp_avg_sq / (1 - beta2**steps)).sqrt_().add_(self.eps)
        return params - mask * step_size * self.exp_avg / denom


def clip_rows(grad: th.Tensor, max_norm: float | None) -> th.Tensor:
    """
    :param grad: per-agent gradients ``(n, p)``
    :param max_norm: clip each row to this norm (``None``: unchanged)
    :return: the clipped gradients
    """
    if max_norm is None:
        return grad
    norms = th.linalg.vector_norm(grad, dim=1, keepdim=True)
    return grad * (max_norm / (norms + 1e-6)).clamp(max=1.0)


@dataclass
class PPOSettings:
    """
    One round's PPO settings (schedules already evaluated).

    :param learning_rate: Adam step size
    :param clip_range: PPO clipping parameter
    :param clip_range_vf: value clipping (``None``: off)
    :param n_epochs: epochs per round
    :param batch_size: minibatch size per agent
    :param gamma: discount factor
    :param gae_lambda: GAE λ
    :param normalize_advantage: normalise each agent's minibatch advantages
    :param ent_coef: entropy bonus
    :param vf_coef: value loss weight
    :param max_grad_norm: per-agent gradient clipping (``None``: off)
    :param target_kl: per-agent early stop (``None``: off)
    :param correction: add ``g − a_i`` to every step's gradient
    """

    learning_rate: float
    clip_range: float
    clip_range_vf: float | None
    n_epochs: int
    batch_size: int
    gamma: float
    gae_lambda: float
    normalize_advantage: bool
    ent_coef: float
    vf_coef: float
    max_grad_norm: float | None
    target_kl: float | None
    correction: bool


class PPOEpochs:
    """
    The PPO local solver of one round (a :class:`~sb3_fedpg.common.fedmath.LocalSolver`).

    :param actor: the batched actor
    :param critics: the agents' local critics
    :param critic_optimizer: the agents' local Adam on the critic rows
    :param actor_optimizer: the agents' local Adam on the actor rows
    :param settings: this round's settings
    :param sample: ``sample(stacked_params) -> batch``: every agent's rollout under the given parameters
    """

    def __init__(
        self,
        actor: BatchedActor,
        critics: StackedCritics,
        critic_optimizer: BatchedAdam,
        actor_optimizer: BatchedAdam,
        settings: PPOSettings,
        sample: Any,
    ) -> None:
        self.actor = actor
        self.critics = critics
        self.critic_optimizer = critic_optimizer
        self.actor_optimizer = actor_optimizer
        self.settings = settings
        self.sample = sample
        self.stats = RoundStats()
        self._data: dict[str, th.Tensor] = {}
        self._step_stats: list[th.Tensor] = []

    # ------------------------------------------------------------ phase 1
    def anchor(self, global_params: th.Tensor, n_agents: int) -> th.Tensor:
        """
        Collect every agent's rollout under ``θ̄``, compute its advantages with its own critic, and return
        ``a_i``: the gradient of its PPO objective at ``θ̄`` (ratio 1: the policy gradient plus the entropy term).

        :param global_params: ``θ̄``
        :param n_agents: ``N``
        :return: anchors ``(N, p)``
        """
        s = self.settings
        stacked = global_params.unsqueeze(0).repeat(n_agents, 1)
        batch: RolloutBatch = self.sample(stacked)
        n, k_steps, m = batch.n_agents, batch.n_steps, batch.n_envs
        bootstrap_truncations(batch, self.critics, s.gamma)
        with th.no_grad():
            values = self.critics(batch.obs).view(n, k_steps, m)
            last_values = self.critics(batch.last_obs)
            advantages = gae_advantages(batch.rewards, values, batch.dones, last_values, s.gamma, s.gae_lambda)
            with self.actor.evaluation():  # the behaviour policy: the rollout's (eval mode), as SB3 stores it
                old_log_prob = self.actor.distribution(stacked, batch.obs).log_prob(batch.actions)
        returns = advantages + values
        self._data = {
            "obs": batch.obs,
            "actions": batch.actions,
            "old_log_prob": old_log_prob,
            "advantages": advantages.reshape(n, k_steps * m),
            "returns": returns.reshape(n, k_steps * m),
            "old_values": values.reshape(n, k_steps * m),
        }
        self.stats.add("train/batch_return", float(batch.rewards.sum(1).mean()))
        # ratio = 1 at θ̄: the clipped surrogate's gradient is mean(A ∇log π); same normalisation as the epochs
        adv = self._data["advantages"]
        if s.normalize_advantage:
            adv = (adv - adv.mean(1, keepdim=True)) / (adv.std(1, keepdim=True) + 1e-8)
        params = stacked.detach().requires_grad_(True)
        dist = self.actor.distribution(params, batch.obs)
        objective = (dist.log_prob(batch.actions) * adv).mean(1) + s.ent_coef * dist.entropy().mean(1)
        (grads,) = th.autograd.grad(objective.sum(), params)
        return grads

    # ------------------------------------------------------------ phase 2
    def local_round(self, global_params: th.Tensor, anchor_grads: th.Tensor, global_grad: th.Tensor) -> th.Tensor:
        """
        ``n_epochs`` of clipped-surrogate minibatch updates per agent on its own rollout, from ``θ̄``.

        :param global_params: ``θ̄``
        :param anchor_grads: ``a_i``
        :param global_grad: ``g``
        :return: ``θ_{i,final}``
        """
        s, data = self.settings, self._data
        n, n_samples = data["advantages"].shape
        params = global_params.unsqueeze(0).repeat(n, 1)
        correction = (global_grad.unsqueeze(0) - anchor_grads) if s.correction else None
        active = th.ones(n, dtype=th.bool, device=params.device)
        rows = th.arange(n, device=params.device).unsqueeze(1)
        batch_size = min(s.batch_size, n_samples)
        n_batches = max(1, n_samples // batch_size)
        keys = ("obs", "actions", "advantages", "old_log_prob", "returns", "old_values")
        for _ in range(s.n_epochs):
            # torch's global generator: saved in checkpoints, so a resumed run draws the same minibatches
            order = th.argsort(th.rand(n, n_samples), dim=1).to(params.device)
            shuffled = {key: data[key][rows, order] for key in keys}  # one gather per epoch, then slices
            for b in range(n_batches):
                minibatch = {key: value[:, b * batch_size : (b + 1) * batch_size] for key, value in shuffled.items()}
                params, kl = self._minibatch_step(params, minibatch, correction, active)
                if s.target_kl is not None:
                    active = active & (kl <= 1.5 * s.target_kl)
            if not bool(active.any()):
                break
        self.stats.add("train/early_stopped_agents", float((~active).sum()))
        if self._step_stats:
            means = th.stack(self._step_stats).mean(0).tolist()
            for key, value in zip(STEP_STATS, means, strict=True):
                self.stats.add(key, value)
        return params

    def _minibatch_step(
        self, params: th.Tensor, mb: dict[str, th.Tensor], correction: th.Tensor | None, active: th.Tensor
    ) -> tuple[th.Tensor, th.Tensor]:
        s = self.settings
        adv = mb["advantages"]
        if s.normalize_advantage and adv.shape[1] > 1:
            adv = (adv - adv.mean(1, keepdim=True)) / (adv.std(1, keepdim=True) + 1e-8)
        params = params.detach().requires_grad_(True)
        critic_params = self.critics.params

        # actor: clipped surrogate, per agent; critic: value regression on the agent's own returns
        dist = self.actor.distribution(params, mb["obs"])
        log_ratio = dist.log_prob(mb["actions"]) - mb["old_log_prob"]
        ratio = th.exp(log_ratio)
        surrogate = th.min(ratio * adv, th.clamp(ratio, 1 - s.clip_range, 1 + s.clip_range) * adv)
        entropy = dist.entropy().mean(1)
        values = self.critics(mb["obs"])
        if s.clip_range_vf is not None:
            values = mb["old_values"] + th.clamp(values - mb["old_values"], -s.clip_range_vf, s.clip_range_vf)
        value_loss = (mb["returns"] - values).pow(2).mean(1)
        # Actor and critics are separate networks: one backward gives both (per-agent rows of each).
        loss = (-surrogate.mean(1) - s.ent_coef * entropy).sum() + s.vf_coef * value_loss.sum()
        grad, critic_grad = th.autograd.grad(loss, (params, critic_params))
        if correction is not None:
            grad = grad - correction  # ascent on ⟨g − a_i, θ⟩ = descent on its negative
        new_params = self.actor_optimizer.descend(params.detach(), clip_rows(grad, s.max_grad_norm), s.learning_rate, active)
        with th.no_grad():
            critic_params.copy_(
                self.critic_optimizer.descend(critic_params, clip_rows(critic_grad, s.max_grad_norm), s.learning_rate, active)
            )
            kl = ((ratio - 1) - log_ratio).mean(1)
            # one small tensor per step, turned into numbers once per round (see local_round)
            self._step_stats.append(
                th.stack(
                    [
                        -surrogate.mean(),
                        value_loss.mean(),
                        -entropy.mean(),
                        kl.mean(),
                        ((ratio - 1).abs() > s.clip_range).float().mean(),
                    ]
                )
            )
        if not bool(th.isfinite(new_params).all()):
            bad = th.nonzero(~th.isfinite(new_params).all(dim=1)).flatten().tolist()
            raise FloatingPointError(f"non-finite local parameters from agent(s) {bad}; the round was discarded.")
        return new_params, kl
