"""
PPO's clipped-surrogate epochs as the local solver of a federated round, batched over agents.

Every agent collects its rollout under ``θ̄``; its **local** critic gives GAE advantages; then each
agent runs ``n_epochs`` of minibatch updates on its own rollout. All agents' minibatches go through
one batched forward/backward (stacked parameters, :class:`~sb3_fedpg.common.batched_policy.BatchedActor`),
with per-agent Adam moments, per-agent gradient clipping and a per-agent KL early stop.

The drift correction (``a_i``: the agent's surrogate gradient at ``θ̄`` on its own rollout, i.e. at ratio 1;
``g``: their aggregate) comes in two forms:

- ``"surrogate"``: a per-sample shift of the advantages, ``Â_i = A_i + δ_i`` with ``δ_i(s, a) = ∇log π_θ̄(a|s)ᵀ x_i``
  and ``F_i x_i = g − a_i`` (``F_i`` the agent's empirical Fisher matrix, solved by conjugate gradient), so that the
  corrected surrogate's gradient at ``θ̄`` is ``g``. All agents sample the same state-action distribution (shared
  dynamics, shared ``θ̄``), so the global surrogate differs from agent ``i``'s by a per-sample advantage
  difference, ``Ā − A_i``; ``δ_i`` is its least-squares projection on the score functions, the part a gradient can
  see. Being inside ``min(r·Â, clip(r)·Â)``, the correction is importance-weighted as the policy moves and is
  clipped with the ratio: it stops pushing where PPO's trust region stops the rest of the update.
- ``"linear"``: the SCAFFOLD-style term ``⟨g − a_i, θ⟩`` added to every step's gradient, outside the clipped
  surrogate and before Adam's rescaling (kept for comparison: nothing bounds it once an agent's ratios leave the
  clip range).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch as th

from sb3_fedpg.common import fedmath
from sb3_fedpg.common.batch import RolloutBatch
from sb3_fedpg.common.batched_policy import BatchedActor, StackedCritics
from sb3_fedpg.common.estimators import GAE, critic_advantages
from sb3_fedpg.common.torch_optimizer import AgentOptimizer
from sb3_fedpg.fedpg.learner import CorrectionStatistics, RoundStats

#: The per-minibatch statistics, averaged over the round.
STEP_STATS = ("train/policy_gradient_loss", "train/value_loss", "train/entropy_loss", "train/approx_kl", "train/clip_fraction")


class BatchedAdam(th.nn.Module):
    """
    Adam on stacked per-agent rows ``(n_agents, n_params)``; the agents left out of a step keep their
    parameters *and* their moments (an agent that stopped early is frozen).

    :param n_agents: number of agents
    :param n_params: parameters per agent
    :param betas: Adam's decay rates
    :param eps: Adam's epsilon
    """

    # buffers (registered in __init__)
    exp_avg: th.Tensor
    exp_avg_sq: th.Tensor
    steps: th.Tensor

    def __init__(self, n_agents: int, n_params: int, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        super().__init__()
        self.betas = betas
        self.eps = eps
        self.register_buffer("exp_avg", th.zeros(n_agents, n_params))
        self.register_buffer("exp_avg_sq", th.zeros(n_agents, n_params))
        self.register_buffer("steps", th.zeros(n_agents))

    @classmethod
    def joined(cls, *optimizers: BatchedAdam) -> BatchedAdam:
        """
        One optimiser over the side-by-side rows of several (Adam is element-wise: stepping the joined rows
        is stepping each, in one call instead of one per optimiser). Write back with :meth:`split_into`.

        :param optimizers: optimisers with the same agents, settings and step counts
        :return: the joined optimiser (its own copies of the moments)
        """
        first = optimizers[0]
        if any(opt.betas != first.betas or opt.eps != first.eps or not th.equal(opt.steps, first.steps) for opt in optimizers):
            raise ValueError("Only optimisers with the same betas, eps and step counts can be joined.")
        joined = cls(first.exp_avg.shape[0], sum(opt.exp_avg.shape[1] for opt in optimizers), first.betas, first.eps)
        joined.exp_avg = th.cat([opt.exp_avg for opt in optimizers], dim=1)
        joined.exp_avg_sq = th.cat([opt.exp_avg_sq for opt in optimizers], dim=1)
        joined.steps = first.steps.clone()
        return joined.to(first.exp_avg.device)

    @th.no_grad()
    def split_into(self, *optimizers: BatchedAdam) -> None:
        """
        :param optimizers: the optimisers given to :meth:`joined`, in the same order: receive their rows back
        """
        start = 0
        for opt in optimizers:
            width = opt.exp_avg.shape[1]
            opt.exp_avg.copy_(self.exp_avg[:, start : start + width])
            opt.exp_avg_sq.copy_(self.exp_avg_sq[:, start : start + width])
            opt.steps.copy_(self.steps)
            start += width

    @th.no_grad()
    def step_(self, params: th.Tensor, grad: th.Tensor, learning_rate: float, agents: list[int] | None = None) -> None:
        """
        One Adam step on ``params`` in place: torch's fused Adam kernel (what ``th.optim.Adam(fused=True)``
        runs), one call for the chosen agents' rows.

        :param params: ``(n, p)``, changed in place
        :param grad: gradient of the loss to minimise, ``(n, p)``
        :param learning_rate: step size
        :param agents: the agents that step (``None``: all)
        """
        if agents is None:
            self.steps += 1
            agents = list(range(params.shape[0]))
        else:
            self.steps[agents] += 1
        tensors = [t.unbind(0) for t in (params, grad, self.exp_avg, self.exp_avg_sq, self.steps)]
        params_rows, grad_rows, avg_rows, sq_rows, step_rows = ([rows[i] for i in agents] for rows in tensors)
        beta1, beta2 = self.betas
        th._fused_adam_(
            params_rows,
            grad_rows,
            avg_rows,
            sq_rows,
            [],
            step_rows,
            lr=learning_rate,
            beta1=beta1,
            beta2=beta2,
            weight_decay=0.0,
            eps=self.eps,
            amsgrad=False,
            maximize=False,
        )


def clip_rows_(grad: th.Tensor, max_norm: float | None) -> None:
    """
    Clip each agent's gradient to a norm, as ``th.nn.utils.clip_grad_norm_`` does.

    :param grad: per-agent gradients ``(n, p)``, changed in place
    :param max_norm: clip each row to this norm (``None``: unchanged)
    """
    if max_norm is not None:
        norms = th.linalg.vector_norm(grad, dim=1, keepdim=True)
        grad.mul_((max_norm / (norms + 1e-6)).clamp_(max=1.0))


def conjugate_gradient(matvec: Any, rhs: th.Tensor, steps: int, tol: float = 1e-10) -> th.Tensor:
    """
    Solve ``A x = b`` for every row (agent) at once, ``A`` symmetric positive definite given as a batched product.

    :param matvec: ``matvec(v) -> A v`` for ``v`` of shape ``(n, p)``, each row its own system
    :param rhs: ``b``, ``(n, p)``
    :param steps: iterations
    :param tol: stop once every row's squared residual is below this
    :return: ``x``, ``(n, p)``
    """
    x = th.zeros_like(rhs)
    residual = rhs.clone()
    direction = rhs.clone()
    rr = (residual * residual).sum(1, keepdim=True)
    for _ in range(steps):
        if bool((rr < tol).all()):
            break
        product = matvec(direction)
        alpha = rr / (direction * product).sum(1, keepdim=True).clamp_min(1e-30)
        x += alpha * direction
        residual -= alpha * product
        rr_new = (residual * residual).sum(1, keepdim=True)
        direction = residual + (rr_new / rr.clamp_min(1e-30)) * direction
        rr = rr_new
    return x


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
    :param normalize_advantage: ``"shared"`` (one scale for all agents: the anchor's advantages go out centred and
        the server divides them by the pooled standard deviation; the minibatches are normalised as SB3's and
        multiplied by ``advantage_ratio``), ``"per_agent"`` (each minibatch by its own standard deviation, as SB3's
        PPO) or ``None`` (off)
    :param ent_coef: entropy bonus
    :param vf_coef: value loss weight
    :param max_grad_norm: per-agent gradient clipping (``None``: off)
    :param target_kl: per-agent early stop (``None``: off)
    :param correction: ``None`` (no correction), ``"surrogate"`` (advantage shift inside the clipped surrogate) or
        ``"linear"`` (``g − a_i`` added to every step's gradient)
    :param correction_damping: damping ``λ`` of the Fisher solve ``(F_i + λI) x_i = g − a_i`` of the surrogate
        correction (TRPO's conjugate-gradient default)
    :param correction_cg_steps: conjugate-gradient iterations of that solve
    :param correction_fisher_samples: samples per agent in the Fisher products of the solve (``None``: the whole
        rollout; else an evenly strided subset, as TRPO can subsample its Fisher products — cheaper, but with more
        parameters than samples the subset's Fisher misses directions the whole rollout's has, and the fit suffers;
        the shift itself is always evaluated on every sample)
    :param variance_control: ``"none"`` or ``"snr_damping"``: each agent's ``g − a_i`` scaled by
        ``β_i = SNR_i / (1 + SNR_i)`` (:func:`~sb3_fedpg.common.fedmath.snr_damping`), its signal-to-noise ratio
        measured on two half-rollouts and averaged over rounds
    :param advantage_ratio: ``normalize_advantage="shared"``: every agent's advantage scale relative to the one
        the server set this round (:func:`~sb3_fedpg.common.fedmath.advantage_ratios`, ``(N,)``); each minibatch,
        divided by its own standard deviation as in SB3, is multiplied by it (``None``: 1)
    """

    learning_rate: float
    clip_range: float
    clip_range_vf: float | None
    n_epochs: int
    batch_size: int
    gamma: float
    gae_lambda: float
    normalize_advantage: str | None
    ent_coef: float
    vf_coef: float
    max_grad_norm: float | None
    target_kl: float | None
    correction: str | None
    correction_damping: float = 0.1
    correction_cg_steps: int = 10
    correction_fisher_samples: int | None = None
    advantage_ratio: th.Tensor | None = None
    variance_control: str = "none"


class PPOEpochs:
    """
    The PPO local solver of one round (a :class:`~sb3_fedpg.common.fedmath.LocalSolver`).

    :param actor: the batched actor
    :param critics: the agents' local critics
    :param critic_optimizer: the agents' local Adam on the critic rows (or ``policy_kwargs``' torch optimiser per agent,
        :class:`~sb3_fedpg.common.torch_optimizer.AgentOptimizer`)
    :param actor_optimizer: the agents' local Adam on the actor rows (or the torch optimiser, as the critics')
    :param settings: this round's settings
    :param sample: ``sample(stacked_params) -> batch``: every agent's rollout under the given parameters
    :param correction_stats: each agent's running signal and noise of its correction (``variance_control``; new
        ones if ``None``)
    """

    def __init__(
        self,
        actor: BatchedActor,
        critics: StackedCritics,
        critic_optimizer: BatchedAdam | AgentOptimizer,
        actor_optimizer: BatchedAdam | AgentOptimizer,
        settings: PPOSettings,
        sample: Any,
        correction_stats: CorrectionStatistics | None = None,
    ) -> None:
        self.actor = actor
        self.critics = critics
        self.critic_optimizer = critic_optimizer
        self.actor_optimizer = actor_optimizer
        self.settings = settings
        self.sample = sample
        self.correction_stats = (
            correction_stats
            if correction_stats is not None
            else CorrectionStatistics(critics.params.shape[0], n_params=actor.n_params)
        )
        self.stats = RoundStats()
        #: the anchors' advantage units: 1, or the server's scale once known (``normalize_advantage="shared"``)
        self._anchor_scale = 1.0
        #: the federation's size and ``Σ_j v_j`` (the agents' anchor noise, in the anchors' units) when this solver
        #: computes only some agents (a Flower agent: the server sends them); ``None``: its own rows are all
        self.federation_noise: tuple[int, float] | None = None
        self._data: dict[str, th.Tensor] = {}
        #: the hand-written forward/backward applies (flat observations, MLPs without Dropout, Discrete/Box);
        #: otherwise each minibatch is differentiated with autograd (CNN/Dict extractors, Dropout, Multi* spaces)
        self.hand_written = actor.hand_backward_ready and critics.hand_backward_ready

    # ------------------------------------------------------------ phase 1
    def anchor(self, global_params: th.Tensor, n_agents: int) -> th.Tensor | fedmath.ScaledAnchors:
        """
        Collect every agent's rollout under ``θ̄``, compute its advantages with its own critic, and return
        ``a_i``: the gradient of its PPO objective at ``θ̄`` (ratio 1: the policy gradient plus the entropy term).

        :param global_params: ``θ̄``
        :param n_agents: ``N``
        :return: anchors ``(N, p)``; with ``normalize_advantage="shared"`` their parts (policy gradient of the
            centred advantages, entropy gradient, advantage moments) for the server to scale
        """
        s = self.settings
        stacked = global_params.unsqueeze(0).repeat(n_agents, 1)
        batch: RolloutBatch = self.sample(stacked)
        n, k_steps, m = batch.n_agents, batch.n_steps, batch.n_envs
        # the rollout's values (eval mode) and GAE advantages, as SB3 computes them (kept in the batch: the model's
        # rollout_buffer reads the same)
        values, gae = critic_advantages(batch, self.critics, GAE(s.gamma, s.gae_lambda))
        advantages = gae.weights
        with th.no_grad():
            if self.hand_written:
                old_log_prob, _, cache = self.actor.evaluate(stacked, batch.obs, batch.actions)
            else:
                with self.actor.evaluation():  # the behaviour policy: the rollout's (eval mode), as SB3 stores it
                    old_log_prob = self.actor.distribution(stacked, batch.obs).log_prob(batch.actions)
        batch.log_probs = old_log_prob
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
        shared = s.normalize_advantage == "shared"  # the server sets the scale: the anchor goes out in parts
        if shared:
            self.stats.add_moments(fedmath.advantage_moments(adv))
        if s.normalize_advantage is not None:
            adv = fedmath.normalized_advantages(adv, (1,), centre_only=shared)
        n_samples = adv.shape[1]
        if s.correction is not None and s.variance_control == "snr_damping":
            # the anchor's noise: its policy part on two disjoint halves of the rollout (by sub-environment, else by
            # time), in the units the anchor's policy part goes out in
            halves = []
            for mask in _half_masks(k_steps, m, adv.device):
                weights = adv * mask / mask.sum()
                if self.hand_written:
                    halves.append(self.actor.backward(stacked, cache, weights, 0.0))
                else:
                    halves.append(self._autograd_anchor(stacked, batch, weights * n_samples, 0.0))
            self._data["anchor_halves"] = th.stack(halves)
        if self.hand_written:
            # ∇ of mean(A log π) + ent_coef · mean(H), from the forward pass that gave old_log_prob
            if not shared:
                return self.actor.backward(stacked, cache, adv / n_samples, s.ent_coef / n_samples)
            policy = self.actor.backward(stacked, cache, adv / n_samples, 0.0)
            entropy = self.actor.backward(stacked, cache, th.zeros_like(adv), s.ent_coef / n_samples) if s.ent_coef else None
        else:
            policy, entropy = self._autograd_anchor(stacked, batch, adv, s.ent_coef if not shared else 0.0), None
            if shared and s.ent_coef:
                entropy = self._autograd_anchor(stacked, batch, th.zeros_like(adv), s.ent_coef)
            if not shared:
                return policy
        assert self.stats.advantage_moments is not None
        self._data["advantage_moments"] = self.stats.advantage_moments.clone()
        return fedmath.ScaledAnchors(policy, entropy, self._data["advantage_moments"])

    def _autograd_anchor(self, stacked: th.Tensor, batch: RolloutBatch, adv: th.Tensor, ent_coef: float) -> th.Tensor:
        params = stacked.detach().requires_grad_(True)
        # the extractor's running statistics move in the epochs' minibatch passes only, as in SB3's train()
        with self.actor.frozen_buffers():
            log_prob, entropy = self.actor.log_prob_entropy(params, batch.obs, batch.actions)
        objective = (log_prob * adv).mean(1) + ent_coef * entropy.mean(1)
        (grads,) = th.autograd.grad(objective.sum(), params)
        return grads

    def use_advantage_scale(self, scale: float) -> None:
        """
        :param scale: the round's advantage scale set by the server (``normalize_advantage="shared"``): the local
            epochs bring their minibatches to its units (``PPOSettings.advantage_ratio``)
        """
        self._anchor_scale = scale
        moments = self._data.get("advantage_moments")
        if self.settings.normalize_advantage == "shared" and moments is not None:
            device = self.critics.params.device
            self.settings.advantage_ratio = fedmath.advantage_ratios(moments, scale).float().to(device)

    def round_memory(self) -> dict[str, th.Tensor]:
        """
        What phase 2 needs from phase 1: the rollout, its advantages and behaviour log-probabilities. A distributed
        agent whose two phases may run in different processes stores it between them
        (:class:`sb3_fedpg.flower.agent.NeuralAgent`).

        :return: the tensors by name (empty before :meth:`anchor`)
        """
        return dict(self._data)

    def load_round_memory(self, memory: dict[str, th.Tensor]) -> None:
        """
        :param memory: the output of :meth:`round_memory` of this round's phase 1
        """
        self._data = dict(memory)

    # ------------------------------------------------------------ phase 2
    @th.no_grad()
    def local_round(self, global_params: th.Tensor, anchor_grads: th.Tensor, global_grad: th.Tensor) -> th.Tensor:
        """
        ``n_epochs`` of clipped-surrogate minibatch updates per agent on its own rollout, from ``θ̄``.

        :param global_params: ``θ̄``
        :param anchor_grads: ``a_i``
        :param global_grad: ``g``
        :return: ``θ_{i,final}``
        """
        if not self._data:
            raise RuntimeError("local_round before anchor: this round's rollout is missing (run anchor, or load_round_memory)")
        s, data = self.settings, self._data
        n, n_samples = data["advantages"].shape
        n_actor = anchor_grads.shape[1]
        # Actor and critic rows side by side: one gradient buffer, one Adam call per step (Adam is element-wise).
        params = th.cat([global_params.unsqueeze(0).expand(n, -1), self.critics.params], dim=1)
        grad = th.empty_like(params)
        actor_params, critic_params = params[:, :n_actor], params[:, n_actor:]
        actor_grad, critic_grad = grad[:, :n_actor], grad[:, n_actor:]
        joined: BatchedAdam | None = None
        if isinstance(self.actor_optimizer, BatchedAdam) and isinstance(self.critic_optimizer, BatchedAdam):
            joined = BatchedAdam.joined(self.actor_optimizer, self.critic_optimizer)
        difference = global_grad.unsqueeze(0) - anchor_grads
        if s.correction is not None and s.variance_control == "snr_damping":
            difference = difference * self.snr_damping(anchor_grads, global_grad).unsqueeze(1)
        correction = difference if s.correction == "linear" else None
        keys = ("obs", "actions", "advantages", "old_log_prob", "returns", "old_values")
        if s.correction == "surrogate":
            data = {**data, "shift": self.surrogate_shift(global_params, difference)}
        active = th.ones(n, dtype=th.bool, device=params.device)
        agents: list[int] | None = None  # all agents step
        rows = th.arange(n, device=params.device).unsqueeze(1)
        batch_size = min(s.batch_size, n_samples)
        n_batches = max(1, n_samples // batch_size)
        used = n_batches * batch_size
        step_outputs: list[tuple[th.Tensor, ...]] = []
        for _ in range(s.n_epochs):
            # torch's global generator: saved in checkpoints, so a resumed run draws the same minibatches
            order = th.argsort(th.rand(n, n_samples), dim=1).to(params.device)[:, :used]
            # one gather per key and epoch, then views of (n, n_batches, batch_size, ...)
            shuffled = {key: data[key][rows, order].unflatten(1, (n_batches, batch_size)) for key in keys}
            adv = shuffled["advantages"]
            if s.normalize_advantage is not None and batch_size > 1:  # per agent and minibatch, all at once
                adv = fedmath.normalized_advantages(adv, (2,))
                if s.normalize_advantage == "shared" and s.advantage_ratio is not None:
                    adv = adv * s.advantage_ratio.view(-1, 1, 1)
            if "shift" in data:  # in the units of the anchors' advantages, after their normalisation
                adv = adv + data["shift"][rows, order].unflatten(1, (n_batches, batch_size))
            shuffled["advantages"] = adv
            for minibatch in zip(*(shuffled[key].unbind(1) for key in keys), strict=True):
                kl, outputs = self._minibatch_grad(actor_params, critic_params, actor_grad, critic_grad, *minibatch)
                if s.target_kl is not None:
                    # SB3's early stop: an agent whose minibatch KL (at its current parameters) passes 1.5 × target_kl
                    # does not take this step and stops its epochs
                    assert kl is not None  # computed whenever target_kl is set
                    active &= kl <= 1.5 * s.target_kl
                    agents = None if bool(active.all()) else th.nonzero(active).flatten().tolist()
                    if not agents and agents is not None:
                        break
                if correction is not None:
                    actor_grad.sub_(correction)  # ascent on ⟨g − a_i, θ⟩ = descent on its negative
                clip_rows_(actor_grad, s.max_grad_norm)
                clip_rows_(critic_grad, s.max_grad_norm)
                if joined is not None:
                    joined.step_(params, grad, s.learning_rate, agents)
                else:  # policy_kwargs' torch optimiser: the same agents step their actor and their critic rows
                    self.actor_optimizer.step_(actor_params, actor_grad, s.learning_rate, agents)
                    self.critic_optimizer.step_(critic_params, critic_grad, s.learning_rate, agents)
                step_outputs.append(outputs)
            if not bool(active.any()):
                break
        # Checked once per round, not per step: a non-finite value stays non-finite through the later steps
        # (and an agent stopped early keeps its parameters), and the round is discarded either way.
        bad = fedmath.nonfinite_rows(actor_params)
        if bad:
            raise FloatingPointError(f"non-finite local parameters from agent(s) {bad}; the round was discarded.")
        self.critics.params.copy_(critic_params)
        if joined is not None:
            joined.split_into(cast(BatchedAdam, self.actor_optimizer), cast(BatchedAdam, self.critic_optimizer))
        self.stats.add("train/early_stopped_agents", float((~active).sum()))
        self._record_step_stats(step_outputs)
        return actor_params.clone()

    @th.no_grad()
    def snr_damping(self, anchor_grads: th.Tensor, global_grad: th.Tensor) -> th.Tensor:
        """
        Each agent's ``β_i = SNR_i / (1 + SNR_i)`` for this round (``variance_control="snr_damping"``), the same rule
        as FederatedPG's (:func:`~sb3_fedpg.common.fedmath.correction_signal_noise`, averaged over rounds by
        :class:`~sb3_fedpg.fedpg.learner.CorrectionStatistics`).

        :param anchor_grads: ``a_i``, ``(n, p)``
        :param global_grad: ``g``
        :return: ``β``, ``(n,)``
        """
        halves = self._data.get("anchor_halves")
        if halves is None:
            raise RuntimeError("snr_damping needs the anchor's two half-rollout gradients: run anchor first")
        noise_variance = fedmath.anchor_noise_variance(halves / (self._anchor_scale + 1e-8))
        if self.federation_noise is None:
            signal, noise = fedmath.correction_signal_noise(anchor_grads, global_grad, noise_variance)
        else:
            n_agents, noise_sum = self.federation_noise
            signal, noise = fedmath.correction_signal_noise(anchor_grads, global_grad, noise_variance, n_agents, noise_sum)
        snr = self.correction_stats.update(signal, noise)
        beta = fedmath.snr_damping(snr)
        self.stats.add("fed/anchor_noise", float(noise_variance.sqrt().mean()))
        self.stats.add("fed/correction_snr", float(snr.median()))
        self.stats.add("fed/correction_beta", float(beta.mean()))
        return beta.to(anchor_grads.dtype)

    def anchor_noise(self) -> th.Tensor | None:
        """:return: every agent's anchor noise ``v_i`` in the anchors' units (``None`` without ``snr_damping``)"""
        halves = self._data.get("anchor_halves")
        return None if halves is None else fedmath.anchor_noise_variance(halves / (self._anchor_scale + 1e-8))

    @th.no_grad()
    def surrogate_shift(self, global_params: th.Tensor, correction: th.Tensor) -> th.Tensor:
        """
        The surrogate correction's per-sample advantage shift ``δ_i = J_i x_i``, with ``(F_i + λI) x_i = g − a_i``,
        ``J_i`` the ``(samples, params)`` matrix of agent ``i``'s scores ``∇log π_θ̄(a|s)`` on its rollout and
        ``F_i = J_iᵀJ_i / n`` its empirical Fisher matrix; then ``J_iᵀδ_i / n = F_i x_i ≈ g − a_i``, so the corrected
        surrogate's gradient at ``θ̄`` (ratio 1) is ``a_i + g − a_i = g``. Jacobian products by ``torch.func``
        (one linearisation, reused by every conjugate-gradient step); the solve is batched over agents.

        :param global_params: ``θ̄``
        :param correction: ``g − a_i``, ``(N, p)``
        :return: ``δ``, ``(N, samples)``; the relative residual ``‖J_iᵀδ_i/n − (g − a_i)‖ / ‖g − a_i‖`` (mean over
            agents) is recorded as ``train/correction_fit``
        """
        s, data = self.settings, self._data
        n, n_samples = data["advantages"].shape
        stacked = global_params.unsqueeze(0).expand(n, -1).contiguous()
        obs, actions = data["obs"], data["actions"]
        stride = 1 if s.correction_fisher_samples is None else max(1, n_samples // s.correction_fisher_samples)
        sub_jvp, sub_vjp = self._score_products(stacked, obs[:, ::stride], actions[:, ::stride])
        n_sub = obs[:, ::stride].shape[1]

        def fisher(v: th.Tensor) -> th.Tensor:
            return sub_vjp(sub_jvp(v)) / n_sub + s.correction_damping * v

        x = conjugate_gradient(fisher, correction, s.correction_cg_steps)
        jvp, vjp = (sub_jvp, sub_vjp) if stride == 1 else self._score_products(stacked, obs, actions)
        shift = jvp(x)
        fit = vjp(shift)
        residual = th.linalg.vector_norm(fit / n_samples - correction, dim=1)
        scale = th.linalg.vector_norm(correction, dim=1).clamp_min(1e-12)
        self.stats.add("train/correction_fit", float((residual / scale).mean()))
        self.stats.add("train/correction_shift_std", float(shift.std(1).mean()))
        return shift

    def _score_products(self, params: th.Tensor, obs: th.Tensor, actions: th.Tensor) -> tuple[Any, Any]:
        """
        Products with each agent's score matrix ``J_i`` (rows ``∇log π(a|s)`` at the agent's row of ``params``, in
        eval mode: the behaviour policy of the rollout).

        :return: ``jvp(v) -> J v`` (``(N, p) -> (N, samples)``) and ``vjp(u) -> Jᵀ u`` (``(N, samples) -> (N, p)``).
            With the hand-written backward, ``Jᵀu`` reuses one cached forward pass and ``Jv`` is a central difference
            of two forward passes (step ``1e-3 / max|v_i|`` per agent: relative error ~1e-4 in float32, far below the
            damping of the solve); otherwise both come from ``torch.func``.
        """
        if self.hand_written:
            _, _, cache = self.actor.evaluate(params, obs, actions)

            def vjp(u: th.Tensor) -> th.Tensor:
                return self.actor.backward(params, cache, u, 0.0)

            def jvp(v: th.Tensor) -> th.Tensor:
                step = 1e-3 / v.abs().amax(1, keepdim=True).clamp_min(1e-12)
                ahead, _, _ = self.actor.evaluate(params + step * v, obs, actions)
                behind, _, _ = self.actor.evaluate(params - step * v, obs, actions)
                return (ahead - behind) / (2 * step)

            return jvp, vjp

        def log_prob(p: th.Tensor) -> th.Tensor:
            with self.actor.evaluation():
                return self.actor.distribution(p, obs).log_prob(actions)

        def vjp_autograd(u: th.Tensor) -> th.Tensor:
            with th.enable_grad():
                pullback = th.func.vjp(log_prob, params)[1]
                return pullback(u)[0].detach()

        def jvp_autograd(v: th.Tensor) -> th.Tensor:
            with th.enable_grad():
                return th.func.jvp(log_prob, (params,), (v,))[1].detach()

        return jvp_autograd, vjp_autograd

    def _minibatch_grad(
        self,
        actor_params: th.Tensor,
        critic_params: th.Tensor,
        actor_grad: th.Tensor,
        critic_grad: th.Tensor,
        obs: th.Tensor,
        actions: th.Tensor,
        adv: th.Tensor,
        old_log_prob: th.Tensor,
        returns: th.Tensor,
        old_values: th.Tensor,
    ) -> tuple[th.Tensor | None, tuple[th.Tensor, ...]]:
        """
        Every agent's gradient of PPO's loss on its minibatch (each agent's gradient is its own row)

            −mean(min(r·A, clip(r)·A)) − ent_coef·mean(H) + vf_coef·mean((R − V)²)

        written out (:meth:`BatchedActor.backward`, :meth:`StackedCritics.backward`): no autograd graph.

        :return: the per-agent approximate KL (``None`` without ``target_kl``) and the step's tensors for the
            round's statistics
        """
        s = self.settings
        if not self.hand_written:
            return self._autograd_minibatch_grad(
                actor_params, critic_params, actor_grad, critic_grad, obs, actions, adv, old_log_prob, returns, old_values
            )
        batch = adv.shape[1]
        # actor: clipped surrogate
        log_prob, entropy, actor_cache = self.actor.evaluate(actor_params, obs, actions)
        log_ratio = log_prob - old_log_prob
        ratio = th.exp(log_ratio)
        unclipped = ratio * adv
        clipped = th.clamp(ratio, 1 - s.clip_range, 1 + s.clip_range) * adv
        # ∂ min/∂r is A where the unclipped term is the smaller (ties: r inside the range, also A), else 0
        grad_log_prob = (adv * (unclipped <= clipped)).mul_(ratio).mul_(-1.0 / batch)
        self.actor.backward(actor_params, actor_cache, grad_log_prob, -s.ent_coef / batch, out=actor_grad)
        # critic: value regression on the agent's own returns
        values, critic_cache = self.critics.forward_cached(obs, critic_params)
        if s.clip_range_vf is not None:
            change = values - old_values
            values = old_values + th.clamp(change, -s.clip_range_vf, s.clip_range_vf)
        error = values - returns
        grad_values = error * (2 * s.vf_coef / batch)
        if s.clip_range_vf is not None:  # clamp passes the gradient inside [−c, c], bounds included
            grad_values.mul_(change.abs() <= s.clip_range_vf)
        self.critics.backward(critic_cache, grad_values, out=critic_grad)
        kl = None if s.target_kl is None else ((ratio - 1) - log_ratio).mean(1)
        return kl, (unclipped, clipped, entropy, ratio, log_ratio, error)

    def _autograd_minibatch_grad(
        self,
        actor_params: th.Tensor,
        critic_params: th.Tensor,
        actor_grad: th.Tensor,
        critic_grad: th.Tensor,
        obs: th.Tensor,
        actions: th.Tensor,
        adv: th.Tensor,
        old_log_prob: th.Tensor,
        returns: th.Tensor,
        old_values: th.Tensor,
    ) -> tuple[th.Tensor | None, tuple[th.Tensor, ...]]:
        """
        :meth:`_minibatch_grad` through autograd, for the policies the hand-written backward does not cover
        (features extractors, Dropout, MultiDiscrete/MultiBinary). Same loss, same outputs.
        """
        s = self.settings
        with th.enable_grad():
            params = actor_params.detach().requires_grad_(True)
            c_params = critic_params.detach().requires_grad_(True)
            log_prob, entropy = self.actor.log_prob_entropy(params, obs, actions)
            log_ratio = log_prob - old_log_prob
            ratio = th.exp(log_ratio)
            unclipped = ratio * adv
            clipped = th.clamp(ratio, 1 - s.clip_range, 1 + s.clip_range) * adv
            values = self.critics.values(obs, c_params)
            if s.clip_range_vf is not None:
                values = old_values + th.clamp(values - old_values, -s.clip_range_vf, s.clip_range_vf)
            error = values - returns
            loss = (-th.min(unclipped, clipped).mean(1) - s.ent_coef * entropy.mean(1)).sum()
            loss = loss + s.vf_coef * error.square().mean(1).sum()
            grads = th.autograd.grad(loss, (params, c_params))
        actor_grad.copy_(grads[0])
        critic_grad.copy_(grads[1])
        kl = None if s.target_kl is None else ((ratio - 1) - log_ratio).detach().mean(1)
        return kl, tuple(t.detach() for t in (unclipped, clipped, entropy, ratio, log_ratio, error))

    def _record_step_stats(self, step_outputs: list[tuple[th.Tensor, ...]]) -> None:
        # Reduced once per round (not per step): every minibatch has the same size, so the mean over all
        # samples of all steps is the mean of the per-step means.
        if not step_outputs:
            return
        unclipped, clipped, entropy, ratio, log_ratio, error = (th.stack(x) for x in zip(*step_outputs, strict=True))
        values = [
            -th.minimum(unclipped, clipped).mean(),
            error.square().mean(),
            -entropy.mean(),
            ((ratio - 1) - log_ratio).mean(),
            ((ratio - 1).abs() > self.settings.clip_range).float().mean(),
        ]
        for key, value in zip(STEP_STATS, th.stack(values).tolist(), strict=True):
            self.stats.add(key, value)


def _half_masks(k_steps: int, n_envs: int, device: th.device) -> tuple[th.Tensor, th.Tensor]:
    """
    Two disjoint halves of a rollout flattened step-major (``k · M + m``): by sub-environment when ``M`` is even
    (independent trajectories), else by time step (the odd last step in neither).

    :param k_steps: steps per sub-environment ``K``
    :param n_envs: sub-environments ``M``
    :param device: the tensors' device
    :return: two 0/1 masks of length ``K · M``
    """
    steps = th.arange(k_steps, device=device).unsqueeze(1).expand(k_steps, n_envs)
    envs = th.arange(n_envs, device=device).unsqueeze(0).expand(k_steps, n_envs)
    if n_envs % 2 == 0:
        first, second = envs < n_envs // 2, envs >= n_envs // 2
    else:
        half = k_steps // 2
        first, second = steps < half, (steps >= half) & (steps < 2 * half)
    return first.reshape(-1).float(), second.reshape(-1).float()
