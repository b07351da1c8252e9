"""
The agents' side of Fast-FedPG: everything local to each agent, and how its batches become gradients.

:class:`PolicyGradientLearner` owns each agent's local state — its critic and the critic's
optimiser, the moments of its local update rule — and offers one method per phase of the round
(:meth:`~PolicyGradientLearner.solver` gives the :class:`~sb3_fedpg.common.fedmath.LocalSolver`
whose ``anchor`` / ``local_round`` the round calls). It never touches an environment: batches
come from a sampler, so the same learner serves the in-process :class:`~sb3_fedpg.FederatedPG`
(all agents batched) and a Flower agent (one row).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch as th

from sb3_fedpg.common import fedmath
from sb3_fedpg.common.batch import RolloutBatch
from sb3_fedpg.common.batched_policy import BatchedActor, StackedCritics
from sb3_fedpg.common.estimators import Estimator, EstimatorWeights
from sb3_fedpg.fedpg.local_optim import LocalOptimizer

#: ``sample(stacked_params, step) -> batch``: fresh on-policy data for every agent under its own parameters.
BatchSampler = Callable[[th.Tensor, int], RolloutBatch]


def bootstrap_truncations(batch: RolloutBatch, critics: StackedCritics, gamma: float) -> None:
    """
    Time-limit truncations are not terminal: add ``γ·V_i(final obs)`` to the last reward, as SB3 does,
    with the owning agent's own critic. Applied once (the batch then records no truncations).

    :param batch: the batch (its rewards are changed in place)
    :param critics: the agents' critics
    :param gamma: discount factor
    """
    if not batch.truncations:
        return
    n, m = batch.n_agents, batch.n_envs
    assert batch.terminal_obs is not None
    with th.no_grad():
        # Every critic sees every terminal obs (one batched call); keep the owner's value.
        values = critics(batch.terminal_obs.unsqueeze(0).expand(n, -1, -1))
    for j, (step, env_idx) in enumerate(batch.truncations):
        agent = env_idx // m
        batch.rewards[agent, step, env_idx % m] += gamma * values[agent, j]
    batch.truncations = ()


class RoundStats:
    """Running means of the ``train/`` statistics over all batches of a round."""

    def __init__(self) -> None:
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    def add(self, key: str, value: float) -> None:
        """
        :param key: logger key
        :param value: one batch's value
        """
        self._sums[key] = self._sums.get(key, 0.0) + float(value)
        self._counts[key] = self._counts.get(key, 0) + 1

    def means(self) -> dict[str, float]:
        """:return: key → mean over the batches added"""
        return {key: total / self._counts[key] for key, total in self._sums.items()}


class PolicyGradientLearner:
    """
    Local policy-gradient learning for ``N`` agents at once (rows of stacked parameters).

    :param actor: the batched actor (the federated policy network, evaluated at per-agent parameters)
    :param critics: one critic per agent (used when the estimator needs one), never averaged
    :param critic_optimizer: Adam over the critics (its moments are per parameter, so per agent)
    :param local_optimizer: the local update rule and its per-agent state
    :param estimator: the gradient estimator
    :param normalize_advantage: normalise each agent's weights to zero mean and unit variance
    :param ent_coef: entropy bonus coefficient
    :param max_grad_norm: clip each agent's direction to this norm (``None``: no clipping)
    """

    def __init__(
        self,
        actor: BatchedActor,
        critics: StackedCritics,
        critic_optimizer: th.optim.Optimizer,
        local_optimizer: LocalOptimizer,
        estimator: Estimator,
        normalize_advantage: bool = True,
        ent_coef: float = 0.0,
        max_grad_norm: float | None = None,
    ) -> None:
        self.actor = actor
        self.critics = critics
        self.critic_optimizer = critic_optimizer
        self.local_optimizer = local_optimizer
        self.estimator = estimator
        self.normalize_advantage = normalize_advantage
        self.ent_coef = ent_coef
        self.max_grad_norm = max_grad_norm
        self.stats = RoundStats()

    # ------------------------------------------------------------------ one batch
    def gradients(self, params: th.Tensor, batch: RolloutBatch) -> th.Tensor:
        """
        Every agent's policy-gradient estimate (ascent direction) from its own batch; with a critic
        estimator, also one step of every agent's critic on that batch.

        :param params: stacked actor parameters ``(n_agents, n_params)``
        :param batch: the agents' batch, collected under ``params``
        :return: gradients ``(n_agents, n_params)``
        :raises FloatingPointError: naming the agents whose gradient is not finite
        """
        weights = self._critic_weights(batch) if self.estimator.uses_critic else self.estimator.weights(batch)
        w = self._normalized(weights) if self.normalize_advantage else weights.weights
        n, k_steps, m = batch.n_agents, batch.n_steps, batch.n_envs
        params = params.detach().requires_grad_(True)
        dist = self.actor.distribution(params, batch.obs)
        log_prob = dist.log_prob(batch.actions).view(n, k_steps, m)
        # GPOMDP/REINFORCE: (1/M) Σ_m Σ_k w ∇log π ; GAE: mean over all samples (A2C-style).
        if weights.time_reduce == "sum":
            surrogate = (log_prob * w).sum(1).mean(1)
        else:
            surrogate = (log_prob * w).mean(dim=(1, 2))
        entropy = dist.entropy().mean(1)
        objective = surrogate + self.ent_coef * entropy
        (grads,) = th.autograd.grad(objective.sum(), params)
        finite = th.isfinite(grads).all(dim=1)
        if not bool(finite.all()):
            bad = th.nonzero(~finite).flatten().tolist()
            raise FloatingPointError(
                f"non-finite policy gradient (NaN/inf) from agent(s) {bad}; the round was stopped and the global "
                "parameters were kept at their last good value. Check those agents' rewards, or lower the learning rate."
            )
        self.stats.add("train/entropy", float(entropy.detach().mean()))
        # Undiscounted reward of a K-step segment, averaged over agents and trajectories.
        self.stats.add("train/batch_return", float(batch.rewards.sum(1).mean()))
        return grads

    def _critic_weights(self, batch: RolloutBatch) -> EstimatorWeights:
        n, k_steps, m = batch.n_agents, batch.n_steps, batch.n_envs
        bootstrap_truncations(batch, self.critics, self.estimator.gamma)
        values = self.critics(batch.obs).view(n, k_steps, m)
        with th.no_grad():
            assert batch.last_obs is not None, "a critic estimator needs the batch's last observations"
            last_values = self.critics(batch.last_obs)
            weights = self.estimator.weights(batch, values.detach(), last_values)
        returns = weights.weights + values.detach()
        value_loss = 0.5 * (returns - values).pow(2).mean(dim=(1, 2))
        self.critic_optimizer.zero_grad()
        value_loss.sum().backward()
        self.critic_optimizer.step()
        self.stats.add("train/value_loss", float(value_loss.detach().mean()))
        return weights

    @staticmethod
    def _normalized(weights: EstimatorWeights) -> th.Tensor:
        # Per agent, over the samples that belong to the estimate only.
        w, valid = weights.weights, weights.valid
        count = valid.sum(dim=(1, 2), keepdim=True).clamp(min=2)
        mean = (w * valid).sum(dim=(1, 2), keepdim=True) / count
        std = (((w - mean) * valid).pow(2).sum(dim=(1, 2), keepdim=True) / (count - 1)).sqrt()
        return (w - mean) / (std + 1e-8) * valid

    # ------------------------------------------------------------------ one round
    def solver(
        self, sample: BatchSampler, learning_rate: float, local_steps: int, correction: bool = True, reuse_anchor: bool = True
    ) -> fedmath.CorrectedGradientSteps:
        """
        The round's local solver: anchors at ``θ̄`` and ``H`` corrected steps, each on a fresh batch.

        :param sample: the batch sampler
        :param learning_rate: ``η`` for this round
        :param local_steps: ``H``
        :param correction: Fast-FedPG (``True``) or FedAvg-PG (``False``)
        :param reuse_anchor: reuse the anchor batch for the first local step
        :return: the solver to hand to :func:`~sb3_fedpg.common.fedmath.run_round`
        """

        def grad_fn(params: th.Tensor, step: int) -> th.Tensor:
            return self.gradients(params, sample(params.detach(), step))

        update = self.local_optimizer.make_update(learning_rate, self.max_grad_norm)
        return fedmath.CorrectedGradientSteps(grad_fn, local_steps, update, correction, reuse_anchor)

    # ------------------------------------------------------------------ local memory
    def local_state_dict(self) -> dict[str, Any]:
        """:return: every agent's local memory (critics, critic optimiser, local optimiser state), as tensors"""
        return {
            "critics": self.critics.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "local_optimizer_state": self.local_optimizer.state_dict(),
        }

    def load_local_state_dict(self, state: dict[str, Any]) -> None:
        """
        :param state: the output of :meth:`local_state_dict`
        """
        self.critics.load_state_dict(state["critics"])
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        self.local_optimizer.load_state_dict(state["local_optimizer_state"])

    def snapshot(self) -> dict[str, Any]:
        """:return: a deep copy of the local memory, to roll a failed round back with :meth:`load_local_state_dict`"""
        return copy.deepcopy(self.local_state_dict())
