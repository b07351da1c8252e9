"""
Per-sample weights of the local policy-gradient estimators.

Every estimator is ``ĝ_i = ∇ Σ_samples w · log π(a|s)`` with the weights ``w`` below,
computed for all agents at once on tensors of shape ``(n_agents, n_steps, n_envs_per_agent)``
(``K`` steps of ``M`` trajectories per agent). The strategy classes at the end
(:class:`GAE`, :class:`GPOMDP`, :class:`Reinforce`, built by :func:`make_estimator`) say what
an estimator needs from the rollout and how its weights are reduced over time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch as th

from sb3_fedpg.common.batch import RolloutBatch
from sb3_fedpg.common.hyperparams import BASELINES, ESTIMATORS

if TYPE_CHECKING:
    from sb3_fedpg.common.batched_policy import StackedCritics

__all__ = [
    "BASELINES",
    "ESTIMATORS",
    "GAE",
    "GPOMDP",
    "Estimator",
    "Reinforce",
    "bootstrap_truncations",
    "critic_advantages",
    "make_estimator",
]


def alive_mask(dones: th.Tensor) -> th.Tensor:
    """
    1 up to and including each trajectory's first ``done``, 0 after.

    Trajectories start at the batch start; once one ends, the rest of that env's
    steps belong to another episode and are not part of the truncated trajectory.

    :param dones: done flags ``(n, K, M)`` (1 where the episode ended at that step)
    :return: the mask ``(n, K, M)``
    """
    ended_before = th.cumsum(dones, dim=1) - dones
    return (ended_before == 0).to(dones.dtype)


def discounts(n_steps: int, gamma: float, like: th.Tensor) -> th.Tensor:
    """
    :param n_steps: ``K``
    :param gamma: discount factor
    :param like: tensor giving dtype and device
    :return: ``γ^k`` for ``k < K``, shaped ``(1, K, 1)``
    """
    return (gamma ** th.arange(n_steps, dtype=like.dtype, device=like.device)).view(1, n_steps, 1)


def gpomdp_weights(rewards: th.Tensor, dones: th.Tensor, gamma: float, baseline: str = "none") -> th.Tensor:
    """
    GPOMDP (the paper's estimator): ``w_h = Σ_{k=h}^{K−1} γ^k r_k`` on the truncated trajectory.

    :param rewards: ``(n, K, M)``
    :param dones: ``(n, K, M)``
    :param gamma: discount factor
    :param baseline: ``"none"`` or ``"mean"`` (subtract, at each step, the mean weight over the agent's ``M`` trajectories)
    :return: weights ``(n, K, M)`` (0 after a trajectory's end)
    """
    alive = alive_mask(dones)
    discounted = rewards * alive * discounts(rewards.shape[1], gamma, rewards)
    to_go = th.flip(th.cumsum(th.flip(discounted, [1]), dim=1), [1])
    if baseline == "mean":
        to_go = to_go - to_go.mean(dim=2, keepdim=True)
    return to_go * alive


def reinforce_weights(rewards: th.Tensor, dones: th.Tensor, gamma: float, baseline: str = "none") -> th.Tensor:
    """
    REINFORCE: the whole truncated discounted return weights every step's score.

    :param rewards: ``(n, K, M)``
    :param dones: ``(n, K, M)``
    :param gamma: discount factor
    :param baseline: ``"none"`` or ``"mean"`` (subtract the mean return over the agent's trajectories)
    :return: weights ``(n, K, M)``
    """
    alive = alive_mask(dones)
    ret = (rewards * alive * discounts(rewards.shape[1], gamma, rewards)).sum(dim=1, keepdim=True)
    if baseline == "mean":
        ret = ret - ret.mean(dim=2, keepdim=True)
    return ret * alive


def gae_advantages(
    rewards: th.Tensor, values: th.Tensor, dones: th.Tensor, last_values: th.Tensor, gamma: float, gae_lambda: float
) -> th.Tensor:
    """
    Generalised advantage estimation with each agent's local critic.

    :param rewards: ``(n, K, M)`` (time-limit truncations already bootstrapped into the reward)
    :param values: ``V(s_k)``, ``(n, K, M)``
    :param dones: ``(n, K, M)``, 1 where the episode ended at step ``k``
    :param last_values: ``V`` of the observation after the last step, ``(n, M)``
    :param gamma: discount factor
    :param gae_lambda: GAE λ
    :return: advantages ``(n, K, M)``
    """
    # The backward recursion runs K small steps: NumPy's per-op overhead on (n, M) arrays
    # is ~10x below torch's, which made this loop a visible share of a gradient batch.
    r, v, d = (x.detach().cpu().numpy() for x in (rewards, values, dones))
    next_values = last_values.detach().cpu().numpy()
    advantages = np.zeros_like(r)
    next_adv = np.zeros_like(next_values)
    for k in reversed(range(r.shape[1])):
        not_done = 1.0 - d[:, k]
        delta = r[:, k] + gamma * next_values * not_done - v[:, k]
        next_adv = delta + gamma * gae_lambda * not_done * next_adv
        advantages[:, k] = next_adv
        next_values = v[:, k]
    return th.as_tensor(advantages, device=rewards.device)


@dataclass
class EstimatorWeights:
    """
    Per-sample weights of a batch and how to reduce them.

    :param weights: ``w``, ``(n, K, M)``
    :param valid: 1 where a sample belongs to the estimate, ``(n, K, M)`` (used by normalisation)
    :param time_reduce: ``"sum"`` over the steps of a trajectory then mean over trajectories
        (GPOMDP/REINFORCE), or ``"mean"`` over all samples (A2C-style, GAE)
    """

    weights: th.Tensor
    valid: th.Tensor
    time_reduce: str


class Estimator:
    """
    A local policy-gradient estimator: weights for ``∇ Σ w · log π``.

    :param gamma: discount factor
    """

    #: needs a local critic (its values are passed to :meth:`weights`)
    uses_critic: ClassVar[bool] = False
    #: every batch starts from the initial distribution ρ (the environments are reset first)
    starts_from_reset: ClassVar[bool] = False

    def __init__(self, gamma: float) -> None:
        self.gamma = gamma

    def weights(
        self, batch: RolloutBatch, values: th.Tensor | None = None, last_values: th.Tensor | None = None
    ) -> EstimatorWeights:
        """
        :param batch: the batch
        :param values: the agents' critics' values ``V(s_k)``, ``(n, K, M)`` (critic estimators only)
        :param last_values: ``V`` after the last step, ``(n, M)`` (critic estimators only)
        :return: the weights
        """
        raise NotImplementedError


class GAE(Estimator):
    """
    Advantages from each agent's local critic with GAE(λ); time-limit truncations are bootstrapped.

    :param gamma: discount factor
    :param gae_lambda: GAE λ
    """

    uses_critic = True

    def __init__(self, gamma: float, gae_lambda: float) -> None:
        super().__init__(gamma)
        self.gae_lambda = gae_lambda

    def weights(
        self, batch: RolloutBatch, values: th.Tensor | None = None, last_values: th.Tensor | None = None
    ) -> EstimatorWeights:
        assert values is not None and last_values is not None, "GAE needs the critics' values"
        adv = gae_advantages(batch.rewards, values, batch.dones, last_values, self.gamma, self.gae_lambda)
        return EstimatorWeights(adv, th.ones_like(adv), "mean")


class GPOMDP(Estimator):
    """
    The paper's estimator on truncated trajectories from ρ: ``w_h = Σ_{k≥h} γ^k r_k``.

    :param gamma: discount factor
    :param baseline: ``"none"`` or ``"mean"``
    """

    starts_from_reset = True
    _weights = staticmethod(gpomdp_weights)

    def __init__(self, gamma: float, baseline: str = "none") -> None:
        super().__init__(gamma)
        self.baseline = baseline

    def weights(
        self, batch: RolloutBatch, values: th.Tensor | None = None, last_values: th.Tensor | None = None
    ) -> EstimatorWeights:
        w = self._weights(batch.rewards, batch.dones, self.gamma, self.baseline)
        # Steps after a trajectory's end are not part of it.
        return EstimatorWeights(w, alive_mask(batch.dones), "sum")


class Reinforce(GPOMDP):
    """
    REINFORCE on truncated trajectories from ρ: the whole discounted return weights every step.

    :param gamma: discount factor
    :param baseline: ``"none"`` or ``"mean"``
    """

    _weights = staticmethod(reinforce_weights)


def make_estimator(name: str, gamma: float, gae_lambda: float = 0.95, baseline: str = "none") -> Estimator:
    """
    :param name: one of :data:`ESTIMATORS`
    :param gamma: discount factor
    :param gae_lambda: GAE λ (``"gae"``)
    :param baseline: baseline of ``"gpomdp"``/``"reinforce"``
    :return: the estimator
    """
    if name == "gae":
        return GAE(gamma, gae_lambda)
    if name == "gpomdp":
        return GPOMDP(gamma, baseline)
    if name == "reinforce":
        return Reinforce(gamma, baseline)
    raise ValueError(f"unknown estimator {name!r}: choose one of {ESTIMATORS}.")


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
    with th.no_grad(), critics.evaluation():  # SB3 bootstraps in the rollout (eval mode)
        # Every critic sees every terminal obs (one batched call); keep the owner's value.
        values = critics(batch.terminal_obs.unsqueeze(0).expand(n, -1, -1))
    for j, (step, env_idx) in enumerate(batch.truncations):
        agent = env_idx // m
        batch.rewards[agent, step, env_idx % m] += gamma * values[agent, j]
    batch.truncations = ()


def critic_advantages(
    batch: RolloutBatch, critics: StackedCritics, estimator: Estimator, train_values: th.Tensor | None = None
) -> tuple[th.Tensor, EstimatorWeights]:
    """
    A batch's values and advantages as SB3 computes them in its rollout: time-limit truncations bootstrapped
    (:func:`bootstrap_truncations`), each agent's own critic's values of the observations and of the last
    observations in eval mode, then the estimator's weights (GAE). Computed once per batch and kept in it
    (``batch.values``, ``batch.advantages``): the local solver and the model's ``rollout_buffer`` read the same
    numbers, whichever asks first.

    :param batch: the batch (its rewards are bootstrapped in place, once)
    :param critics: the agents' critics
    :param estimator: a critic estimator (``uses_critic``: GAE)
    :param train_values: values of ``batch.obs`` from a train-mode pass the caller already ran (the value loss's):
        the rollout's values when the critics do not depend on the mode (no dropout or batch norm), so no second pass
    :return: the values ``(N, K, M)`` and the estimator's weights (not normalised)
    """
    if batch.values is None or batch.advantages is None:
        n, k_steps, m = batch.n_agents, batch.n_steps, batch.n_envs
        assert batch.last_obs is not None, "a critic estimator needs the batch's last observations"
        bootstrap_truncations(batch, critics, estimator.gamma)
        with th.no_grad(), critics.evaluation():  # as SB3 computes them in the rollout (eval mode)
            if train_values is not None and not critics.mode_dependent:
                values = train_values.detach().view(n, k_steps, m)
            else:
                values = critics(batch.obs).view(n, k_steps, m)
            last_values = critics(batch.last_obs)
            weights = estimator.weights(batch, values, last_values)
        batch.values, batch.advantages = values, weights.weights
        return values, weights
    # the batch's weights from the kept advantages (a critic estimator: GAE, every sample valid, mean over samples)
    return batch.values, EstimatorWeights(batch.advantages, th.ones_like(batch.advantages), "mean")
