"""Fast-FedPG: federated policy gradient with memory-based drift correction."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import torch as th
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule

from sb3_fedpg.common.batch import RolloutBatch
from sb3_fedpg.common.batched_policy import BatchedActor, StackedCritics
from sb3_fedpg.common.estimators import Estimator, make_estimator
from sb3_fedpg.common.federated_algorithm import FederatedAlgorithm
from sb3_fedpg.common.hyperparams import FedPGHyperparams, resolve_anchor_batches
from sb3_fedpg.common.torch_optimizer import StackedParameterOptimizer, requested_optimizer
from sb3_fedpg.fedpg.learner import CorrectionStatistics, NoiseAwareSteps, PolicyGradientLearner
from sb3_fedpg.fedpg.local_optim import LOCAL_OPTIMIZERS, LocalOptimizer, TorchLocalOptimizer
from sb3_fedpg.fedpg.policies import CnnPolicy, MlpPolicy, MultiInputPolicy

SelfFederatedPG = TypeVar("SelfFederatedPG", bound="FederatedPG")


class FederatedPG(FederatedAlgorithm):
    """
    Fast-FedPG: federated and multi-task policy gradient with drift correction.

    Paper: Zhu, Heath, Mitra, "Towards Fast Rates for Federated and Multi-Task
    Reinforcement Learning", https://arxiv.org/abs/2409.05291

    ``N`` agents share the dynamics but each has its own reward; they find one policy
    maximising the average return. Each round: anchor gradients ``a_i`` at the global
    parameters ``θ̄`` and their average ``g``; ``H`` local steps along the corrected
    direction ``ĝ_i(θ_i) − a_i + g``; the server averages the parameter changes
    (the math lives in :mod:`sb3_fedpg.common.fedmath`). Only the actor is federated:
    critics stay local to each agent. All agents' networks run as one batched
    forward/backward per gradient batch.

    The environment is an SB3 ``VecEnv`` whose ``n_agents * M`` sub-environments are
    split into contiguous blocks, one per agent (see :func:`make_federated_vec_env`);
    an env id or a plain ``VecEnv`` gives identical agents.

    Defaults learn well on classic control (``estimator="gae"`` with a local critic,
    plain gradient ascent). The paper-faithful configuration is
    ``estimator="gpomdp", normalize_advantage=False`` (with ``n_steps`` = the truncation ``K``).

    :param policy: The policy model to use (``MlpPolicy``, ``CnnPolicy`` for images, ``MultiInputPolicy`` for ``Dict``
        observations)
    :param env: The environment to learn from (a federated ``VecEnv``, any ``VecEnv``, or an env id)
    :param n_agents: Number of agents ``N``; ``None`` takes it from a federated env (else 1)
    :param learning_rate: Local step size ``η`` (float or schedule of the remaining progress)
    :param local_steps: Local steps ``H`` per communication round
    :param n_steps: Steps per trajectory segment in one gradient batch (the truncation ``K`` for ``gpomdp``/``reinforce``)
    :param server_learning_rate: Server step size ``η_g`` applied to the averaged parameter change
    :param gamma: Discount factor
    :param gae_lambda: GAE λ (``estimator="gae"``)
    :param estimator: Local gradient estimator: ``"gae"``, ``"gpomdp"`` or ``"reinforce"``
    :param baseline: Baseline for ``gpomdp``/``reinforce``: ``"none"`` or ``"mean"`` (batch mean per step)
    :param correction: Fast-FedPG's drift correction; ``False`` gives FedAvg-PG
    :param variance_control: How the correction copes with sampling noise: ``"none"`` (the paper's ``ĝ_i − a_i + g``),
        ``"control_variate"`` (``ĝ_i(θ_{i,ℓ}; B_ℓ) − ĝ_i(θ̄; B_ℓ) + g``, the second term by truncated importance
        weighting of the same fresh batch), ``"snr_damping"`` (``ĝ_i + β_i (g − a_i)``, ``β_i`` from the measured
        signal-to-noise ratio) or ``"filtered"`` (``ĝ_i + ĉ_i``, ``ĉ_i`` the correction Kalman-filtered over rounds);
        all equal the paper's update with exact gradients (see
        :class:`~sb3_fedpg.fedpg.learner.NoiseAwareSteps`)
    :param anchor_batches: Batches averaged into each anchor ``a_i`` (the extra env steps count in ``num_timesteps``);
        ``"auto"``: ``(H / 10)²`` rounded, between 1 and ``H``, with the correction (the paper's single batch up to
        ``H = 12``, 4 at ``H = 20``, 25 at ``H = 50``), 1 without
        (:func:`~sb3_fedpg.common.hyperparams.resolve_anchor_batches`)
    :param reuse_anchor_batch: Use the anchor batch for the first local step (saves one batch per round;
        then ``d_{i,0} = g`` exactly with correction)
    :param normalize_advantage: Centre the weights of each agent's batch and divide them by one standard deviation
        shared by all agents (``"shared"``, or ``True``: pooled over the agents' batches of the previous round from
        the moments they send, so every agent's gradient keeps its reward's scale and the federation climbs the
        average return; each agent's own in the first round), by each agent's own (``"per_agent"``: the federation
        then climbs ``Σ_i ∇J_i / σ_i``, another objective when the reward scales differ) or not at all (``False``)
    :param ent_coef: Entropy bonus coefficient in each agent's local objective
    :param critic_learning_rate: Adam step size of the local critics (``estimator="gae"``)
    :param local_optimizer: ``"sgd"`` (plain gradient ascent, what the paper analyses) or ``"adam"`` applied to the
        corrected direction (a heuristic outside the theory; its state is local to each agent). A torch optimiser given
        as ``policy_kwargs['optimizer_class']`` replaces it (it must then stay ``"sgd"``, its default)
    :param max_grad_norm: Clip each agent's corrected direction to this norm (heuristic; ``None`` disables)
    :param aggregator: Server reduction over agents for both the anchors and the parameter changes: ``"mean"`` (the
        paper's), or a Byzantine-robust ``"median"``, ``"trimmed_mean"``, ``"norm_clipped_mean"``, ``"geometric_median"``,
        or any callable ``(n, p) -> (p,)`` (see :mod:`sb3_fedpg.common.aggregators`)
    :param aggregator_kwargs: Parameters of a named aggregator (e.g. ``{"trim": 0.2}``)
    :param participation: Fraction of agents sampled (without replacement) to take part in each round; only their
        anchors form ``g`` and only their parameter changes are averaged. ``1.0``: every agent, every round
    :param attack: For robustness experiments only: a :class:`~sb3_fedpg.common.adversarial.ByzantineAttack` (or any
        ``attack(stacked, phase)``) that corrupts what some agents send to the server
    :param use_sde: Whether to use generalized State Dependent Exploration (gSDE) instead of action noise
        (``Box`` actions only): SB3's state-dependent noise, with ``log_std`` (a ``(latent_dim, action_dim)`` matrix)
        federated like the rest of the actor and one exploration matrix per sub-environment of every agent, drawn from
        that agent's own ``log_std`` (docs/migrating.md)
    :param sde_sample_freq: Sample a new noise matrix every n steps of a rollout when using gSDE
        (default: -1, only at the beginning of each rollout; refused without ``use_sde``)
    :param n_envs_per_agent: Sub-environments per agent (``M``) when ``env`` is an env id (1, as SB3 builds one env
        from an env id; more envs per agent give larger, less noisy batches per round)
    :param env_kwargs: Keyword arguments for the env when ``env`` is an env id (e.g. ``heterogeneity``)
    :param rollout_buffer_class: SB3's rollout buffer class of :attr:`rollout_buffer` (``None``: ``RolloutBuffer``,
        ``DictRolloutBuffer`` for ``Dict`` observations, as SB3 chooses); a subclass of ``RolloutBuffer`` is filled
        through its ``add()``; it does not change training (the rounds train on their own batches)
    :param rollout_buffer_kwargs: Keyword arguments of ``rollout_buffer_class`` (besides those the model sets)
    :param stats_window_size: Window size for the rollout logging, specifying the number of episodes to average
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments to be passed to the policy on creation. ``optimizer_class`` (any torch
        optimiser but ``LBFGS``, ``SparseAdam``, ``Muon``) and ``optimizer_kwargs`` (as SB3 reads them: the class defaults
        to ``th.optim.Adam``, with ``eps=1e-5`` when no keyword arguments are given) become every agent's **local**
        optimiser: on its actor row, along the corrected direction, with ``learning_rate``, and on its critic with
        ``critic_learning_rate``; each agent's state is its own and kept across rounds
        (:class:`~sb3_fedpg.fedpg.local_optim.TorchLocalOptimizer`)
    :param verbose: Verbosity level: 0 for no output, 1 for info messages, 2 for debug messages
    :param seed: Seed for the pseudo random generators
    :param device: Device (cpu, cuda, ...) on which the code should be run
    :param _init_setup_model: Whether or not to build the network at the creation of the instance
    """

    correction: bool  # Fast-FedPG (True) or FedAvg-PG; FederatedPPO's also names its form
    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MlpPolicy,
        "CnnPolicy": CnnPolicy,
        "MultiInputPolicy": MultiInputPolicy,
    }
    #: the hyperparameters' one definition and validation (also used by the zoo and Flower configs)
    hyperparams_class: ClassVar[type[FedPGHyperparams]] = FedPGHyperparams
    #: policy_kwargs' optimizer_class / optimizer_kwargs are the agents' local optimiser (actor rows and critics)
    optimizer_refusal: ClassVar[str | None] = None
    # hyperparameters (set from the constructor's arguments by FederatedAlgorithm.__init__)
    local_steps: int
    estimator: str
    baseline: str
    variance_control: str
    anchor_batches: int | str
    reuse_anchor_batch: bool
    critic_learning_rate: float
    local_optimizer: str
    policy: ActorCriticPolicy

    def __init__(
        self,
        policy: str | type[ActorCriticPolicy],
        env: GymEnv | str | None,
        n_agents: int | None = None,
        learning_rate: float | Schedule = 0.05,
        local_steps: int = 4,
        n_steps: int = 64,
        server_learning_rate: float = 1.0,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        estimator: str = "gae",
        baseline: str = "none",
        correction: bool = True,
        variance_control: str = "none",
        anchor_batches: int | str = "auto",
        reuse_anchor_batch: bool = True,
        normalize_advantage: bool | str = "shared",
        ent_coef: float = 0.0,
        critic_learning_rate: float = 1e-3,
        local_optimizer: str = "sgd",
        max_grad_norm: float | None = None,
        aggregator: str | Callable[[Any], Any] = "mean",
        aggregator_kwargs: dict[str, Any] | None = None,
        participation: float = 1.0,
        attack: Callable[[Any, str], Any] | None = None,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        n_envs_per_agent: int = 1,
        env_kwargs: dict[str, Any] | None = None,
        rollout_buffer_class: type[RolloutBuffer] | None = None,
        rollout_buffer_kwargs: dict[str, Any] | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        super().__init__(policy, env, locals())  # validates, builds the env of an id, sets every hyperparameter
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        self._check_hyperparams()
        torch_optimizer = requested_optimizer(self.policy_kwargs)
        if torch_optimizer is not None and self.local_optimizer != "sgd":
            raise ValueError(
                f"local_optimizer={self.local_optimizer!r} and policy_kwargs['optimizer_class'] both set FederatedPG's "
                "local update rule: policy_kwargs' torch optimiser replaces local_optimizer, which must then stay 'sgd' "
                "(its default). Use one of them (local_optimizer='adam' is the built-in per-agent Adam; "
                "optimizer_class=th.optim.Adam with optimizer_kwargs=dict(eps=1e-8) steps the same)."
            )
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        assert self.n_agents is not None, "n_agents is unknown: pass it or a federated env"
        self.policy = self._make_policy()
        self._check_policy()
        self._actor = BatchedActor(self.policy)
        self.critics = StackedCritics(self.policy, self.n_agents).to(self.device)
        self.critic_optimizer: th.optim.Optimizer | StackedParameterOptimizer
        self.local_optimizer_state: LocalOptimizer | TorchLocalOptimizer
        if torch_optimizer is None:
            self.critic_optimizer = th.optim.Adam(self.critics.parameters(), lr=self.critic_learning_rate)
            self.local_optimizer_state = LOCAL_OPTIMIZERS[self.local_optimizer](self.n_agents, self._actor.n_params).to(
                self.device
            )
        else:  # policy_kwargs' torch optimiser: every agent's own, on its actor row and on its critic
            optimizer_class, optimizer_kwargs = torch_optimizer
            self.critic_optimizer = StackedParameterOptimizer(
                optimizer_class, optimizer_kwargs, self.critics.params, self.critic_learning_rate
            )
            self.local_optimizer_state = TorchLocalOptimizer(
                optimizer_class, optimizer_kwargs, self.n_agents, self._actor.n_params, self.lr_schedule(1), self.device
            )
        self._setup_federated_buffers()
        self.correction_stats = CorrectionStatistics(self.n_agents, n_params=self._actor.n_params).to(self.device)
        self.learner = PolicyGradientLearner(
            self._actor,
            self.critics,
            self.critic_optimizer,
            self.local_optimizer_state,
            make_estimator(self.estimator, self.gamma, self.gae_lambda, self.baseline),
            normalize_advantage=self.normalize_advantage,
            ent_coef=self.ent_coef,
            max_grad_norm=self.max_grad_norm,
            correction_stats=self.correction_stats,
        )

    def _excluded_save_params(self) -> list[str]:
        return [
            *super()._excluded_save_params(),
            "_actor",
            "_last_round",
            "_numpy_rollout",
            "critics",
            "critic_optimizer",
            "correction_stats",
            "learner",
            "local_optimizer_state",
        ]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", "critics", "critic_optimizer", "local_optimizer_state", "correction_stats"], []

    @property
    def n_anchor_batches(self) -> int:
        """The batches averaged into each anchor this model uses (``anchor_batches`` with ``"auto"`` resolved)."""
        return resolve_anchor_batches(self.anchor_batches, self.local_steps, self.correction)

    @property
    def steps_per_round(self) -> int:
        """Env steps of one round: the anchor batches and the local steps' batches (the first reuses the anchor's)."""
        batches = self.n_anchor_batches + self.local_steps - int(self.reuse_anchor_batch)
        return self.n_envs * self.n_steps * batches

    def rollout_estimator(self) -> Estimator:
        """:return: the local gradient estimator (its weights are the advantages of :attr:`rollout_buffer`)"""
        return self.learner.estimator

    def sample_batch(self, params: th.Tensor, callback: BaseCallback) -> RolloutBatch:
        """
        A fresh batch for every agent under its own parameters (from ρ for ``gpomdp``/``reinforce``).

        :param params: stacked actor parameters ``(n_agents, n_params)``
        :param callback: SB3 callback, called at every env step
        :return: the batch
        """
        estimator = self.learner.estimator
        with self._actor.evaluation():  # rollouts in eval mode (dropout off), the update in train mode, as in SB3
            return self.collect_batch(
                params, callback, reset=estimator.starts_from_reset, keep_truncations=estimator.uses_critic
            )

    def train(self, callback: BaseCallback | None = None) -> None:
        """
        One communication round: anchors, ``H`` corrected local steps, server averaging.

        Rollouts are collected inside the round (each local step needs fresh on-policy data). The
        round is atomic: if it does not complete (a callback stops it, an env fails, a gradient is
        not finite), the global policy and every agent's local state (critics and their optimiser, local
        optimiser moments) stay as they were before it (see :meth:`run_atomic_round` for ``num_timesteps``).

        :param callback: SB3 callback called at every env step (a no-op if ``None``)
        """
        callback = self._round_callback(callback)
        self.policy.set_training_mode(True)
        learning_rate = self.current_learning_rate()
        solver = self.local_solver(callback, learning_rate)
        result = self.run_atomic_round(solver)
        self.record_round(result, learning_rate, self.local_steps, solver.stats.means())

    def local_solver(self, callback: BaseCallback, learning_rate: float) -> NoiseAwareSteps:
        """
        :param callback: SB3 callback called at every env step
        :param learning_rate: the local step size ``η`` of this round
        :return: the corrected gradient steps of this round (fresh batches from this algorithm's env)
        """
        return self.learner.solver(
            lambda params, step: self.sample_batch(params, callback),
            learning_rate,
            self.local_steps,
            correction=self.correction,
            reuse_anchor=self.reuse_anchor_batch,
            variance_control=self.variance_control,
            anchor_batches=self.n_anchor_batches,
        )

    def local_state_dict(self) -> dict[str, Any]:
        return self.learner.local_state_dict()

    def load_local_state_dict(self, state: dict[str, Any]) -> None:
        self.learner.load_local_state_dict(state)

    def learn(
        self: SelfFederatedPG,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "FederatedPG",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfFederatedPG:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
