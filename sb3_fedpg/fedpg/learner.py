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

from collections.abc import Callable
from typing import Any

import torch as th

from sb3_fedpg.common import fedmath
from sb3_fedpg.common.batch import RolloutBatch
from sb3_fedpg.common.batched_policy import BatchedActor, StackedCritics
from sb3_fedpg.common.estimators import Estimator, EstimatorWeights, critic_advantages
from sb3_fedpg.common.hyperparams import advantage_normalization
from sb3_fedpg.common.torch_optimizer import AgentOptimizer, StackedParameterOptimizer
from sb3_fedpg.fedpg.local_optim import LocalOptimizer, TorchLocalOptimizer

#: ``sample(stacked_params, step) -> batch``: fresh on-policy data for every agent under its own parameters.
BatchSampler = Callable[[th.Tensor, int], RolloutBatch]


class CorrectionStatistics(th.nn.Module):
    """
    Each agent's memory of its correction across rounds. Local to each agent; saved with the model.

    - running averages (exponential, bias-corrected) of the correction's signal and noise: the SNR that
      :func:`~sb3_fedpg.common.fedmath.snr_damping` acts on;
    - the state of the correction filter (``variance_control="filtered"``,
      :func:`~sb3_fedpg.common.fedmath.correction_filter_step`): the estimate ``ĉ_i`` (``estimate_rounds``
      counts the rounds it holds; none before the first), its error variance ``P_i`` and the running drift ``q_i``.

    :param n_agents: number of agents
    :param decay: weight of the past per round (running averages and drift)
    :param n_params: size of a correction (the actor's parameters ``p``): the estimate is allocated ``(n, p)`` up
        front, so the state dict never holds an empty tensor (SB3's ``get_parameters``/``set_parameters`` round
        trip randomises every tensor and checks that each changed)
    """

    # buffers (registered in __init__)
    signal: th.Tensor
    noise: th.Tensor
    weight: th.Tensor
    estimate: th.Tensor
    estimate_variance: th.Tensor
    drift: th.Tensor
    drift_weight: th.Tensor
    estimate_rounds: th.Tensor

    def __init__(self, n_agents: int, decay: float = 0.9, n_params: int = 0) -> None:
        super().__init__()
        self.decay = decay
        # registered first: SB3's get_parameters/set_parameters test leaves a state dict's last entry out
        self.register_buffer("estimate_rounds", th.zeros(()))
        self.register_buffer("signal", th.zeros(n_agents))
        self.register_buffer("noise", th.zeros(n_agents))
        self.register_buffer("weight", th.zeros(()))
        self.register_buffer("estimate", th.zeros(n_agents, n_params))
        self.register_buffer("estimate_variance", th.zeros(n_agents))
        self.register_buffer("drift", th.zeros(n_agents))
        self.register_buffer("drift_weight", th.zeros(()))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # Models saved before the filter existed lack its state; before estimate_rounds existed, an estimate was
        # allocated on first use (an empty tensor until then).
        saved = state_dict.get(prefix + "estimate")
        if prefix + "estimate_rounds" not in state_dict and saved is not None:
            state_dict[prefix + "estimate_rounds"] = th.tensor(float(saved.numel() > 0))
        if saved is not None and saved.numel() == 0:
            state_dict[prefix + "estimate"] = th.zeros_like(self.estimate)
        for name in ("estimate_rounds", "estimate", "estimate_variance", "drift", "drift_weight"):
            if prefix + name not in state_dict:
                state_dict[prefix + name] = getattr(self, name)
        self.estimate = th.empty_like(state_dict[prefix + "estimate"])
        super()._load_from_state_dict(state_dict, prefix, *args)

    @th.no_grad()
    def update(self, signal: th.Tensor, noise: th.Tensor) -> th.Tensor:
        """
        :param signal: this round's signal estimates ``(n,)``
        :param noise: this round's noise variances ``(n,)``
        :return: the running SNR ``(n,)``
        """
        self.signal.mul_(self.decay).add_((1 - self.decay) * signal.to(self.signal.dtype))
        self.noise.mul_(self.decay).add_((1 - self.decay) * noise.to(self.noise.dtype))
        self.weight.mul_(self.decay).add_(1 - self.decay)
        return fedmath.snr_from(self.signal / self.weight, self.noise / self.weight)

    @th.no_grad()
    def filter(self, observed: th.Tensor, noise: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """
        One round of the correction filter.

        :param observed: this round's corrections ``g − a_i``, ``(n, p)``
        :param noise: their noise variances ``tr Var(g − a_i)``, ``(n,)``
        :return: ``(ĉ, K)``: the filtered corrections ``(n, p)`` and the gains ``(n,)``
        """
        noise = noise.to(self.drift.dtype)
        if not bool(self.estimate_rounds > 0) or self.estimate.shape != observed.shape:  # first round: the observation
            self.estimate = observed.detach().clone()  # itself (gain 1)
            self.estimate_variance.copy_(noise)
            self.estimate_rounds.fill_(1)
            return self.estimate, th.ones_like(noise)
        sample = fedmath.correction_drift_sample(observed, noise, self.estimate, self.estimate_variance)
        self.drift.mul_(self.decay).add_((1 - self.decay) * sample)
        self.drift_weight.mul_(self.decay).add_(1 - self.decay)
        drift = (self.drift / self.drift_weight).clamp(min=0)
        estimate, variance, gain = fedmath.correction_filter_step(
            observed, noise, self.estimate, self.estimate_variance, drift
        )
        self.estimate.copy_(estimate)
        self.estimate_variance.copy_(variance)
        self.estimate_rounds.add_(1)
        return self.estimate, gain


class RoundStats:
    """Running means of the ``train/`` statistics over all batches of a round."""

    def __init__(self) -> None:
        self._sums: dict[str, float] = {}
        self._counts: dict[str, int] = {}
        #: every agent's advantage moments (count, M2, groups) summed over the round's batches, ``(n, 3)``; what the
        #: agents send for the shared normalisation scale (:func:`~sb3_fedpg.common.fedmath.shared_advantage_scale`)
        self.advantage_moments: th.Tensor | None = None

    def add_moments(self, moments: th.Tensor) -> None:
        """
        :param moments: one batch's per-agent :func:`~sb3_fedpg.common.fedmath.advantage_moments`, ``(n, 3)``
        """
        moments = moments.detach().double()  # on the agents' device: no host copy per batch
        previous = self.advantage_moments
        self.advantage_moments = moments if previous is None else previous + moments

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
    :param critic_optimizer: Adam over the critics (its moments are per parameter, so per agent), or
        ``policy_kwargs``' torch optimiser per agent (:class:`~sb3_fedpg.common.torch_optimizer.StackedParameterOptimizer`)
    :param local_optimizer: the local update rule and its per-agent state
    :param estimator: the gradient estimator
    :param normalize_advantage: ``True`` or ``"shared"``: centre each agent's weights and bring them to one scale
        shared by the agents (the anchor's batches are sent centred, the server divides them by the pooled standard
        deviation; a later batch is divided by its own and multiplied by :attr:`advantage_ratio`); ``"per_agent"``:
        divide each batch by its own standard deviation; ``False``: leave them
    :param ent_coef: entropy bonus coefficient
    :param max_grad_norm: clip each agent's direction to this norm (``None``: no clipping)
    :param correction_stats: each agent's running signal/noise of its correction (new ones if ``None``)
    """

    def __init__(
        self,
        actor: BatchedActor,
        critics: StackedCritics,
        critic_optimizer: th.optim.Optimizer | StackedParameterOptimizer,
        local_optimizer: LocalOptimizer | TorchLocalOptimizer,
        estimator: Estimator,
        normalize_advantage: bool | str = True,
        ent_coef: float = 0.0,
        max_grad_norm: float | None = None,
        correction_stats: CorrectionStatistics | None = None,
    ) -> None:
        self.actor = actor
        self.critics = critics
        self.critic_optimizer = critic_optimizer
        self.local_optimizer = local_optimizer
        self.estimator = estimator
        self.normalization = advantage_normalization(normalize_advantage)
        #: ``normalize_advantage="shared"``: every agent's own advantage scale relative to the shared one, ``(n,)``
        #: (:func:`~sb3_fedpg.common.fedmath.advantage_ratios`; set each round; ``None``: 1, each batch its own scale)
        self.advantage_ratio: th.Tensor | None = None
        self.ent_coef = ent_coef
        self.max_grad_norm = max_grad_norm
        self.correction_stats = (
            correction_stats
            if correction_stats is not None
            else CorrectionStatistics(critics.params.shape[0], n_params=actor.n_params)
        )
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
        weights = self.batch_weights(batch)
        grads = self.policy_gradient(params, batch, weights)
        # Undiscounted reward of a K-step segment, averaged over agents and trajectories.
        self.stats.add("train/batch_return", float(batch.rewards.sum(1).mean()))
        return grads

    def batch_weights(self, batch: RolloutBatch, centre_only: bool = False) -> EstimatorWeights:
        """
        The estimator's per-sample weights of a batch (normalised if asked); with a critic estimator, also one
        step of every agent's critic on that batch. With ``normalize_advantage="shared"`` the batch's moments are
        added to the round's statistics (:attr:`RoundStats.advantage_moments`).

        :param batch: the agents' batch
        :param centre_only: with ``"shared"``, centre the weights but leave their scale (the anchor's batches: the
            server sets the scale, :class:`~sb3_fedpg.common.fedmath.ScaledAnchors`)
        :return: the weights (``valid`` marks the samples that belong to the estimate)
        """
        weights = self._critic_weights(batch) if self.estimator.uses_critic else self.estimator.weights(batch)
        if self.normalization is None:
            return weights
        shared = self.normalization == "shared"
        if shared:
            self.stats.add_moments(fedmath.advantage_moments(weights.weights, weights.valid))
        normalized = fedmath.normalized_advantages(weights.weights, (1, 2), weights.valid, centre_only and shared)
        if shared and not centre_only and self.advantage_ratio is not None:  # in the shared scale's units
            normalized = normalized * self.advantage_ratio.view(-1, 1, 1)
        return EstimatorWeights(normalized, weights.valid, weights.time_reduce)

    def policy_gradient(
        self,
        params: th.Tensor,
        batch: RolloutBatch,
        weights: EstimatorWeights,
        behaviour_log_prob: th.Tensor | None = None,
        max_ratio: float = 2.0,
        ent_coef: float | None = None,
    ) -> th.Tensor:
        """
        ``∇ Σ w · log π(a|s)`` (reduced as the estimator says) at ``params`` for every agent; with
        ``behaviour_log_prob``, the batch was collected under other parameters and each sample is importance
        weighted by ``min(π_params(a|s) / π_behaviour(a|s), max_ratio)`` (per-step ratio, truncated: the estimate
        at ``params`` of a batch drawn elsewhere, biased by the truncation and the ignored state-distribution shift).

        :param params: stacked actor parameters ``(n, n_params)``
        :param batch: the batch
        :param weights: its weights (:meth:`batch_weights`)
        :param behaviour_log_prob: ``log π`` of the batch's actions under the parameters that collected it
        :param max_ratio: truncation of the importance ratios
        :param ent_coef: the entropy bonus's coefficient (``None``: the learner's)
        :return: gradients ``(n, n_params)``
        :raises FloatingPointError: naming the agents whose gradient is not finite
        """
        ent_coef = self.ent_coef if ent_coef is None else ent_coef
        n, k_steps, m = batch.n_agents, batch.n_steps, batch.n_envs
        params = params.detach().requires_grad_(True)
        log_prob, entropy = self.actor.log_prob_entropy(params, batch.obs, batch.actions)
        log_prob = log_prob.view(n, k_steps, m)
        w = weights.weights
        if behaviour_log_prob is not None:
            ratio = th.exp(log_prob.detach() - behaviour_log_prob.view(n, k_steps, m)).clamp(max=max_ratio)
            w = w * ratio
        # GPOMDP/REINFORCE: (1/M) Σ_m Σ_k w ∇log π ; GAE: mean over all samples (A2C-style).
        if weights.time_reduce == "sum":
            surrogate = (log_prob * w).sum(1).mean(1)
        else:
            surrogate = (log_prob * w).mean(dim=(1, 2))
        entropy = entropy.mean(1)
        objective = surrogate + ent_coef * entropy
        (grads,) = th.autograd.grad(objective.sum(), params)
        bad = fedmath.nonfinite_rows(grads)
        if bad:
            raise FloatingPointError(
                f"non-finite policy gradient (NaN/inf) from agent(s) {bad}; the round was stopped and the global "
                "parameters were kept at their last good value. Check those agents' rewards, or lower the learning rate."
            )
        self.stats.add("train/entropy", float(entropy.detach().mean()))
        return grads

    def importance_weighted_gradient(
        self,
        params: th.Tensor,
        batch: RolloutBatch,
        weights: EstimatorWeights,
        behaviour_log_prob: th.Tensor,
        max_weight: float | None = None,
    ) -> th.Tensor:
        """
        The gradient estimate at ``params`` of a batch collected under other (behaviour) parameters, importance
        weighted so that its expectation is the estimator's at ``params`` (FedSVRPG-M's ``ŵ ĝ_i(θ̄_{r−1}; B)``):

        - trajectory estimators (``gpomdp``/``reinforce``: every sub-environment's segment is a trajectory from ρ,
          ending at its first ``done``): each trajectory's terms are weighted by
          ``w(τ) = Π_h π_params(a_h|s_h) / π_behaviour(a_h|s_h)`` over its steps
          (:func:`~sb3_fedpg.common.fedmath.importance_weights`, the paper's ``w(τ | θ̄_{r−1}, θ_{i,k})``);
        - ``gae`` (samples from running episodes, not trajectories from ρ): each sample by its own ratio
          ``π_params(a|s) / π_behaviour(a|s)`` (:meth:`policy_gradient`; the state-distribution shift is ignored, as
          in PPO).

        Both are truncated at ``max_weight`` when given. The batch's weights (rewards-to-go, advantages) are not
        recomputed at ``params``, nor the entropy bonus importance weighted.

        :param params: stacked parameters to evaluate at ``(n, n_params)``
        :param batch: the batch
        :param weights: its weights (:meth:`batch_weights`)
        :param behaviour_log_prob: ``log π`` of the batch's actions under the parameters that collected it
            (:meth:`log_prob`)
        :param max_weight: truncation of the weights (``None``: untruncated)
        :return: gradients ``(n, n_params)``
        """
        if weights.time_reduce != "sum":
            max_ratio = float("inf") if max_weight is None else max_weight
            return self.policy_gradient(params, batch, weights, behaviour_log_prob=behaviour_log_prob, max_ratio=max_ratio)
        shape = weights.weights.shape  # (n, K, M)
        trajectory_weights = fedmath.importance_weights(
            self.log_prob(params, batch).view(shape),
            behaviour_log_prob.view(shape),
            time_axis=1,
            valid=weights.valid,
            max_weight=max_weight,
        )
        self.stats.add("train/importance_weight", float(trajectory_weights.mean()))
        weighted = EstimatorWeights(weights.weights * trajectory_weights.unsqueeze(1), weights.valid, weights.time_reduce)
        return self.policy_gradient(params, batch, weighted)

    def log_prob(self, params: th.Tensor, batch: RolloutBatch) -> th.Tensor:
        """
        :param params: stacked actor parameters ``(n, n_params)``
        :param batch: a batch
        :return: ``log π_params(a|s)`` of the batch's actions, ``(n, K·M)`` (no gradient)
        """
        with th.no_grad(), self.actor.evaluation():  # the behaviour policy of the rollout (eval mode)
            return self.actor.distribution(params, batch.obs).log_prob(batch.actions)

    def _critic_weights(self, batch: RolloutBatch) -> EstimatorWeights:
        n, k_steps, m = batch.n_agents, batch.n_steps, batch.n_envs
        if self.critics.mode_dependent:
            # the advantages' values come from an eval-mode pass before the train-mode one moves batch norm's running
            # statistics, as SB3 computes them in its rollout (and whether model.rollout_buffer was read changes nothing)
            critic_advantages(batch, self.critics, self.estimator)
        values = self.critics(batch.obs).view(n, k_steps, m)  # train mode: the value loss's pass
        rollout_values, weights = critic_advantages(batch, self.critics, self.estimator, train_values=values)
        returns = weights.weights + rollout_values
        value_loss = 0.5 * (returns - values).pow(2).mean(dim=(1, 2))
        self.critic_optimizer.zero_grad()
        value_loss.sum().backward()
        self.critic_optimizer.step()
        self.check_local_state("critic update")
        self.stats.add("train/value_loss", float(value_loss.detach().mean()))
        return weights

    # ------------------------------------------------------------------ one round
    def solver(
        self,
        sample: BatchSampler,
        learning_rate: float,
        local_steps: int,
        correction: bool = True,
        reuse_anchor: bool = True,
        variance_control: str = "none",
        anchor_batches: int = 1,
    ) -> NoiseAwareSteps:
        """
        The round's local solver: anchors at ``θ̄`` and ``H`` corrected steps, each on a fresh batch.

        :param sample: the batch sampler
        :param learning_rate: ``η`` for this round
        :param local_steps: ``H``
        :param correction: Fast-FedPG (``True``) or FedAvg-PG (``False``)
        :param reuse_anchor: reuse the (first) anchor batch for the first local step
        :param variance_control: ``"none"`` (the paper's correction), ``"control_variate"`` or ``"snr_damping"``
            (see :func:`~sb3_fedpg.common.fedmath.variance_controlled_gradient`)
        :param anchor_batches: batches averaged into each anchor (``k``; the extra env steps count like any other)
        :return: the solver to hand to :func:`~sb3_fedpg.common.fedmath.run_round`; its round's statistics
            (:attr:`NoiseAwareSteps.stats`) start empty
        """
        self.stats = RoundStats()
        local_update = self.local_optimizer.make_update(learning_rate, self.max_grad_norm)

        def update(params: th.Tensor, direction: th.Tensor, i: int) -> th.Tensor:
            new_params = local_update(params, direction, i)
            self.check_local_state("local update")  # an overflowing moment fails the round instead of freezing it
            return new_params

        return NoiseAwareSteps(self, sample, local_steps, update, correction, reuse_anchor, variance_control, anchor_batches)

    # ------------------------------------------------------------------ local memory
    def local_state_dict(self) -> dict[str, Any]:
        """:return: every agent's local memory (critics, critic optimiser, local optimiser state), as tensors"""
        return {
            "critics": self.critics.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "local_optimizer_state": self.local_optimizer.state_dict(),
            "correction_stats": self.correction_stats.state_dict(),
        }

    def load_local_state_dict(self, state: dict[str, Any]) -> None:
        """
        :param state: the output of :meth:`local_state_dict`
        """
        self.critics.load_state_dict(state["critics"])
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        self.local_optimizer.load_state_dict(state["local_optimizer_state"])
        if "correction_stats" in state:
            self.correction_stats.load_state_dict(state["correction_stats"])

    def nonfinite_local_state(self) -> dict[int, list[str]]:
        """
        :return: agent → the parts of its local state (critic parameters, critic optimiser moments, local optimiser
            moments) holding NaN/inf; empty when everything is finite
        """
        n = self.critics.params.shape[0]
        parts: list[tuple[str, th.Tensor]] = [("critic parameters", self.critics.params.detach())]
        bad: dict[int, list[str]] = {}
        if isinstance(self.critic_optimizer, AgentOptimizer):  # a torch optimiser per agent: its state, agent by agent
            for agent, keys in self.critic_optimizer.nonfinite_agents().items():
                bad.setdefault(agent, []).extend(f"critic optimiser {key}" for key in keys)
        else:
            for state in self.critic_optimizer.state.values():
                parts += [(f"critic optimiser {key}", v) for key, v in state.items() if th.is_tensor(v) and v.dim() > 0]
        if isinstance(self.local_optimizer, AgentOptimizer):
            for agent, keys in self.local_optimizer.nonfinite_agents().items():
                bad.setdefault(agent, []).extend(f"local optimiser {key}" for key in keys)
        else:
            parts += [(f"local optimiser {key}", v) for key, v in self.local_optimizer.state_dict().items() if v.dim() > 0]
        for name, tensor in parts:
            if tensor.shape[0] != n or not tensor.is_floating_point():
                continue
            for agent in fedmath.nonfinite_rows(tensor):
                bad.setdefault(int(agent), []).append(name)
        return bad

    def check_local_state(self, where: str = "round") -> None:
        """
        :param where: the step just done (for the message)
        :raises FloatingPointError: naming the agents whose local state is no longer finite (an inf second moment
            would freeze a critic for good: the round is stopped and rolled back instead)
        """
        bad = self.nonfinite_local_state()
        if bad:
            detail = "; ".join(f"agent {agent}: {', '.join(names)}" for agent, names in sorted(bad.items()))
            raise FloatingPointError(
                f"non-finite local state (NaN/inf) after the {where} of agent(s) {sorted(bad)} ({detail}); the round "
                "was stopped and every agent's local state rolled back to its value before the round. Check those "
                "agents' rewards (a reward beyond ~1e19 overflows Adam's float32 second moment), or lower the "
                "critic_learning_rate / learning_rate."
            )


class NoiseAwareSteps:
    """
    The neural local solver: the paper's corrected steps (``variance_control="none"``, exactly
    :func:`~sb3_fedpg.common.fedmath.run_local_steps`), or a variance-controlled variant, with the anchor's
    noise measured every round.

    **Noise.** With ``k = anchor_batches ≥ 2`` the ``k`` anchor batches are independent sub-batches; with
    ``k = 1`` the anchor batch is split in two halves (by sub-environment when ``M`` is even, else by time
    step) and their gradients computed in one extra batched backward (the anchor itself is unchanged).
    :func:`~sb3_fedpg.common.fedmath.anchor_noise_variance` gives ``v_i = tr Var a_i``; with ``g``,
    :func:`~sb3_fedpg.common.fedmath.correction_signal_noise` splits each agent's ``‖g − a_i‖²`` into signal
    and noise, averaged over rounds per agent (:class:`CorrectionStatistics`: one round's estimate is too noisy
    to act on) into its SNR. Logged as ``fed/anchor_noise`` (mean ``√v_i``), ``fed/correction_snr`` (median over
    agents) and ``fed/correction_beta`` (mean ``β_i``).

    **Variants** (:func:`~sb3_fedpg.common.fedmath.variance_controlled_gradient`): ``"control_variate"``
    evaluates each fresh batch ``B_ℓ`` also at ``θ̄`` by importance weighting (per-step ratios
    ``π_θ̄/π_{θ_{i,ℓ}}`` truncated at 2; the state-distribution shift is ignored, as in PPO/SVRPG
    approximations) — one extra backward per local step, no extra samples; ``"snr_damping"`` scales the
    correction by ``β_i = SNR_i / (1 + SNR_i)``; ``"filtered"`` replaces ``g − a_i`` by its Kalman-filtered value
    over rounds (:meth:`CorrectionStatistics.filter`: memory chosen each round from the measured drift and noise,
    gain logged as ``fed/correction_gain``) — no extra samples or backward passes.

    :param learner: the agents' learner
    :param sample: the batch sampler
    :param local_steps: ``H``
    :param local_update: the local update rule
    :param correction: Fast-FedPG or FedAvg-PG
    :param reuse_anchor: reuse the first anchor batch for the first local step
    :param variance_control: one of :data:`~sb3_fedpg.common.fedmath.VARIANCE_CONTROLS`
    :param anchor_batches: batches averaged into each anchor
    """

    def __init__(
        self,
        learner: PolicyGradientLearner,
        sample: BatchSampler,
        local_steps: int,
        local_update: fedmath.LocalUpdate,
        correction: bool,
        reuse_anchor: bool,
        variance_control: str = "none",
        anchor_batches: int = 1,
    ) -> None:
        self.learner = learner
        self.sample = sample
        self.local_steps = local_steps
        self.local_update = local_update
        self.correction = correction
        self.reuse_anchor = reuse_anchor
        self.variance_control = variance_control if correction else "none"
        self.anchor_batches = anchor_batches
        self.noise_variance: th.Tensor | None = None
        #: the anchor's independent sub-batch parts (policy, entropy) for its noise, once the scale is known
        self._halves: list[tuple[th.Tensor, th.Tensor | None]] = []
        #: the agents' advantage moments of the anchor's batches (``normalize_advantage="shared"``)
        self.anchor_moments: th.Tensor | None = None
        self.damping: th.Tensor | None = None
        self.filtered: th.Tensor | None = None

    @property
    def stats(self) -> RoundStats:
        """:return: this round's statistics (the learner's, which :meth:`PolicyGradientLearner.solver` renewed)"""
        return self.learner.stats

    def anchor(self, global_params: th.Tensor, n_agents: int) -> th.Tensor | fedmath.ScaledAnchors:
        learner = self.learner
        shared = learner.normalization == "shared"  # the server sets the scale: the anchor goes out in parts
        stacked = fedmath.broadcast_to_agents(global_params, n_agents)

        def parts(params: th.Tensor, batch: RolloutBatch, weights: EstimatorWeights) -> tuple[th.Tensor, th.Tensor | None]:
            if not shared:
                return learner.policy_gradient(params, batch, weights), None
            policy = learner.policy_gradient(params, batch, weights, ent_coef=0.0)
            if not learner.ent_coef:
                return policy, None
            no_advantage = EstimatorWeights(th.zeros_like(weights.weights), weights.valid, weights.time_reduce)
            with learner.actor.frozen_buffers():  # the same batch again: its statistics are counted once
                return policy, learner.policy_gradient(params, batch, no_advantage)

        first, sub_parts = None, []
        for _ in range(self.anchor_batches):
            batch = self.sample(stacked.detach(), -1)
            weights = learner.batch_weights(batch, centre_only=shared)
            sub_parts.append(parts(stacked, batch, weights))
            learner.stats.add("train/batch_return", float(batch.rewards.sum(1).mean()))
            first = first or (batch, weights)
        if len(sub_parts) == 1 and self.correction:
            # one batch: its two halves are the independent sub-batches (one extra batched backward); without the
            # correction nothing uses the anchor's noise, so it is not measured (and its metrics are not logged)
            assert first is not None  # anchor_batches >= 1
            half_batch, half_weights = split_in_halves(*first)
            half = parts(stacked.repeat_interleave(2, dim=0), half_batch, half_weights)
            policy_half, entropy_half = half
            self._halves = [
                (
                    policy_half.view(n_agents, 2, -1)[:, j],
                    None if entropy_half is None else entropy_half.view(n_agents, 2, -1)[:, j],
                )
                for j in (0, 1)
            ]
        else:
            self._halves = sub_parts if self.correction else []
        policy = th.stack([p for p, _ in sub_parts]).mean(0)
        entropies = [e for _, e in sub_parts if e is not None]
        entropy = th.stack(entropies).mean(0) if entropies else None
        if shared:
            assert learner.stats.advantage_moments is not None  # recorded by batch_weights
            self.anchor_moments = learner.stats.advantage_moments.clone()
            return fedmath.ScaledAnchors(policy, entropy, self.anchor_moments)
        self.use_advantage_scale(1.0)
        return policy

    def round_memory(self) -> dict[str, th.Tensor]:
        """:return: what phase 2 needs from phase 1 in another process: the anchor's advantage moments (if shared)"""
        return {} if self.anchor_moments is None else {"advantage_moments": self.anchor_moments}

    def load_round_memory(self, memory: dict[str, th.Tensor]) -> None:
        """
        :param memory: the output of :meth:`round_memory` of this round's phase 1
        """
        self.anchor_moments = memory.get("advantage_moments")

    def use_advantage_scale(self, scale: float) -> None:
        """
        The scale the server set for this round (``normalize_advantage="shared"``): the local steps' batches are
        brought to its units (:attr:`PolicyGradientLearner.advantage_ratio`), and the anchor's noise is measured in
        them.

        :param scale: ``σ`` (1 when the anchor was not sent in parts)
        """
        learner = self.learner
        if learner.normalization == "shared" and self.anchor_moments is not None:
            device = learner.critics.params.device
            learner.advantage_ratio = fedmath.advantage_ratios(self.anchor_moments, scale).float().to(device)
        halves = self._halves
        if halves:  # the sub-batches' anchors, as the server assembles the anchor itself
            subs = [
                p / (scale + 1e-8) + (0 if e is None else e) if learner.normalization == "shared" else p for p, e in halves
            ]
            self.noise_variance = fedmath.anchor_noise_variance(th.stack(subs))
            learner.stats.add("fed/anchor_noise", float(self.noise_variance.sqrt().mean()))

    def local_round(self, global_params: th.Tensor, anchor_grads: th.Tensor, global_grad: th.Tensor) -> th.Tensor:
        learner, mode = self.learner, self.variance_control
        if self.correction and self.noise_variance is not None:
            signal, noise = fedmath.correction_signal_noise(anchor_grads, global_grad, self.noise_variance)
            snr = learner.correction_stats.update(signal, noise)
            self.damping = fedmath.snr_damping(snr)
            learner.stats.add("fed/correction_snr", float(snr.median()))
            learner.stats.add("fed/correction_beta", float(self.damping.mean()))
            if mode == "filtered":
                self.filtered, gain = learner.correction_stats.filter(global_grad - anchor_grads, noise)
                learner.stats.add("fed/correction_gain", float(gain.mean()))
        if mode in ("snr_damping", "filtered") and self.noise_variance is None:
            raise ValueError(f"{mode} needs the anchor's noise: use anchor_batches >= 2 or n_envs_per_agent * n_steps >= 2.")
        n = anchor_grads.shape[0]
        at_bar = fedmath.broadcast_to_agents(global_params, n)

        def grad_fn(params: th.Tensor, step: int) -> th.Tensor:
            if step == 0 and self.reuse_anchor:
                local = at_step = anchor_grads  # θ_{i,0} = θ̄: the anchor is ĝ_i(θ_{i,0})
            else:
                batch = self.sample(params.detach(), step)
                weights = learner.batch_weights(batch)
                local = learner.policy_gradient(params, batch, weights)
                learner.stats.add("train/batch_return", float(batch.rewards.sum(1).mean()))
                at_step = None
                if mode == "control_variate":
                    behaviour = learner.log_prob(params.detach(), batch)
                    with learner.actor.frozen_buffers():  # the same batch at θ̄: its statistics are counted once
                        at_step = learner.policy_gradient(at_bar, batch, weights, behaviour_log_prob=behaviour)
            return fedmath.variance_controlled_gradient(
                local, anchor_grads, global_grad, mode, at_step, self.damping, self.filtered
            )

        # The anchor reuse is handled by grad_fn (so that every variant sees it), hence reuse_anchor=False here.
        return fedmath.run_local_steps(
            global_params, anchor_grads, global_grad, grad_fn, self.local_steps, self.local_update, self.correction, False
        )


def split_in_halves(batch: RolloutBatch, weights: EstimatorWeights) -> tuple[RolloutBatch, EstimatorWeights]:
    """
    Two disjoint halves of every agent's batch as ``2N`` rows (agent ``i``'s halves at rows ``2i``, ``2i+1``):
    by sub-environment when ``M`` is even (independent trajectories), else by time step.

    :param batch: the batch ``(N, K, M)``
    :param weights: its weights
    :return: the halves and their weights
    """
    n, k_steps, m = batch.n_agents, batch.n_steps, batch.n_envs
    obs = batch.obs.view(n, k_steps, m, *batch.obs.shape[2:])
    actions = batch.actions.view(n, k_steps, m, *batch.actions.shape[2:])
    if m % 2 == 0:

        def halve(x: th.Tensor) -> th.Tensor:  # (n, K, M, ...) -> (2n, K, M/2, ...)
            x = x.reshape(n, k_steps, 2, m // 2, *x.shape[3:]).transpose(1, 2)
            return x.reshape(2 * n, k_steps, m // 2, *x.shape[4:])

    else:
        k_half = k_steps // 2

        def halve(x: th.Tensor) -> th.Tensor:  # (n, K, M, ...) -> (2n, K/2, M, ...), the odd last step dropped
            return x[:, : 2 * k_half].reshape(2 * n, k_half, *x.shape[2:])

    h_obs, h_actions = halve(obs), halve(actions)
    rows, k2, m2 = h_obs.shape[0], h_obs.shape[1], h_obs.shape[2]
    half = RolloutBatch(
        obs=h_obs.reshape(rows, k2 * m2, *obs.shape[3:]),
        actions=h_actions.reshape(rows, k2 * m2, *actions.shape[3:]),
        rewards=halve(batch.rewards),
        dones=halve(batch.dones),
    )
    return half, EstimatorWeights(halve(weights.weights), halve(weights.valid), weights.time_reduce)
