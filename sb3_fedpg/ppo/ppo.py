"""FederatedPPO: PPO's clipped-surrogate epochs as each agent's local solver, parameter changes averaged."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import torch as th
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import FloatSchedule

from sb3_fedpg.common.batch import RolloutBatch
from sb3_fedpg.common.batched_policy import BatchedActor, StackedCritics
from sb3_fedpg.common.estimators import GAE, Estimator
from sb3_fedpg.common.federated_algorithm import FederatedAlgorithm, FederatedDifferenceWarning
from sb3_fedpg.common.hyperparams import (
    FedPPOHyperparams,
    HyperparameterError,
    advantage_normalization,
    ppo_correction_mode,
)
from sb3_fedpg.common.torch_optimizer import AgentOptimizer, requested_optimizer
from sb3_fedpg.fedpg.learner import CorrectionStatistics
from sb3_fedpg.ppo.local_solver import BatchedAdam, PPOEpochs, PPOSettings
from sb3_fedpg.ppo.policies import CnnPolicy, MlpPolicy, MultiInputPolicy

SelfFederatedPPO = TypeVar("SelfFederatedPPO", bound="FederatedPPO")


class FederatedPPO(FederatedAlgorithm):
    """
    Federated PPO: every agent runs PPO's clipped-surrogate epochs on its own rollouts with its own critic;
    the server averages the actors' parameter changes (FedAvg-PPO), optionally with Fast-FedPG's drift
    correction as a linear term in each agent's objective.

    Paper (the correction): Zhu, Heath, Mitra, "Towards Fast Rates for Federated and Multi-Task
    Reinforcement Learning", https://arxiv.org/abs/2409.05291 ; PPO: https://arxiv.org/abs/1707.06347

    One round: every agent collects ``n_steps`` steps on each of its ``M`` sub-environments under the global
    actor ``θ̄``; its local critic gives GAE advantages; it runs ``n_epochs`` epochs of ``batch_size``
    minibatches of its own rollout (all agents' minibatches in one batched forward/backward) with its own
    Adam moments; the server aggregates ``Δ_i = θ_i − θ̄``. With ``correction=True`` the anchors
    ``a_i`` (each agent's policy gradient at ``θ̄`` on its rollout, no extra samples) are aggregated to ``g``
    and corrected inside each agent's clipped surrogate (``"surrogate"``) or added to every local step's gradient
    (``"linear"``, SCAFFOLD-style). Critics, their optimiser, the actors'
    Adam moments and advantage statistics are local to each agent and never averaged.

    :param policy: The policy model to use (``MlpPolicy``, ``CnnPolicy`` for images, ``MultiInputPolicy`` for ``Dict``
        observations)
    :param env: The environment to learn from (a federated ``VecEnv``, any ``VecEnv``, or an env id)
    :param n_agents: Number of agents ``N``; ``None`` takes it from a federated env (else 1)
    :param learning_rate: Step size of the local actor and critic updates (each agent's Adam, or the torch optimiser of
        ``policy_kwargs``; float or schedule)
    :param n_steps: Steps per sub-environment in one round's rollout (per agent: ``n_steps × M`` samples)
    :param batch_size: Minibatch size, per agent (all agents' minibatches run as one batched step)
    :param n_epochs: Epochs over each agent's own rollout per round
    :param gamma: Discount factor
    :param gae_lambda: GAE λ
    :param clip_range: PPO's clipping parameter (float or schedule)
    :param clip_range_vf: Clipping of the local critics' value updates (``None``: off)
    :param normalize_advantage: Centre the advantages of each agent's minibatch and divide them by one standard
        deviation shared by all agents (``"shared"``, or ``True``: that of the previous round's rollouts pooled over the
        agents, from the moments they send, so each agent's gradient keeps its reward's scale and the anchors ``a_i``
        average to the average return's gradient; each minibatch's own in the first round), by each minibatch's own as
        SB3's PPO does (``"per_agent"``: the federation then climbs ``Σ_i ∇J_i / σ_i``, another objective when the
        reward scales differ) or not at all (``False``)
    :param ent_coef: Entropy bonus coefficient
    :param vf_coef: Weight of the value loss in each agent's critic update
    :param max_grad_norm: Clip each agent's actor gradient and its critic gradient to this norm, each on its own
        (``None``: off). SB3's PPO clips the norm of both together, so there a large value loss (unnormalised
        returns) shrinks the actor's step as well
    :param target_kl: Stop an agent's epochs once its approximate KL passes ``1.5 × target_kl`` (``None``: off)
    :param correction: The drift correction: ``"surrogate"`` (the default: a per-sample advantage shift inside
        PPO's clipped surrogate whose gradient at ``θ̄`` turns ``a_i`` into ``g``; clipped with the ratio), ``False``
        (none: the federation then does not optimise the average return, each agent's Adam removing its gradient's
        scale) or ``"linear"`` (``True``: the term ``⟨g − a_i, θ⟩`` added to every step's gradient, outside the clip)
    :param variance_control: Noise control of the correction: ``"snr_damping"`` (the default: each agent's
        ``g − a_i`` scaled by ``β_i = SNR_i / (1 + SNR_i)``: the anchor's noise is measured on two half-rollouts, one
        extra backward pass each, and the signal-to-noise ratio averaged over rounds; logged as
        ``fed/correction_snr`` and ``fed/correction_beta``) or ``"none"``
    :param server_learning_rate: Server step size ``η_g`` applied to the aggregated parameter change
    :param aggregator: Server reduction over agents (``"mean"`` or a Byzantine-robust rule, or a callable)
    :param aggregator_kwargs: Parameters of a named aggregator
    :param participation: Fraction of agents sampled to take part in each round
    :param attack: For robustness experiments only: corrupts what some agents send to the server
    :param use_sde: Whether to use generalized State Dependent Exploration (gSDE) instead of action noise
        (``Box`` actions only): SB3's state-dependent noise, with ``log_std`` (a ``(latent_dim, action_dim)`` matrix)
        federated like the rest of the actor and one exploration matrix per sub-environment of every agent, drawn from
        that agent's own ``log_std`` (docs/migrating.md)
    :param sde_sample_freq: Sample a new noise matrix every n steps of a rollout when using gSDE
        (default: -1, only at the beginning of each rollout; refused without ``use_sde``)
    :param n_envs_per_agent: Sub-environments per agent (``M``) when ``env`` is an env id (1, as SB3 builds one env
        from an env id; more envs per agent give larger, less noisy batches per round)
    :param env_kwargs: Keyword arguments for the env when ``env`` is an env id
    :param rollout_buffer_class: SB3's rollout buffer class of :attr:`rollout_buffer` (``None``: ``RolloutBuffer``,
        ``DictRolloutBuffer`` for ``Dict`` observations, as SB3 chooses); a subclass of ``RolloutBuffer`` is filled
        through its ``add()``; it does not change training (the rounds train on their own batches)
    :param rollout_buffer_kwargs: Keyword arguments of ``rollout_buffer_class`` (besides those the model sets)
    :param stats_window_size: Window size for the rollout logging, specifying the number of episodes to average
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments to be passed to the policy on creation. ``optimizer_class`` (any torch
        optimiser but ``LBFGS``, ``SparseAdam``, ``Muon``) and ``optimizer_kwargs`` (as SB3 reads them: the class defaults
        to ``th.optim.Adam``, with ``eps=1e-5`` when no keyword arguments are given) replace each agent's built-in Adam
        (``betas=(0.9, 0.999), eps=1e-8``) on its actor row and its critic, both with ``learning_rate`` as SB3's one
        optimiser; each agent's state is its own, kept across rounds, and an agent stopped by ``target_kl`` keeps its
        parameters and state (:class:`~sb3_fedpg.common.torch_optimizer.AgentOptimizer`)
    :param verbose: Verbosity level: 0 for no output, 1 for info messages, 2 for debug messages
    :param seed: Seed for the pseudo random generators
    :param device: Device (cpu, cuda, ...) on which the code should be run
    :param _init_setup_model: Whether or not to build the network at the creation of the instance
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MlpPolicy,
        "CnnPolicy": CnnPolicy,
        "MultiInputPolicy": MultiInputPolicy,
    }
    #: the hyperparameters' one definition and validation
    hyperparams_class: ClassVar[type[FedPPOHyperparams]] = FedPPOHyperparams
    #: policy_kwargs' optimizer_class / optimizer_kwargs are the agents' local optimiser (actor rows and critics)
    optimizer_refusal: ClassVar[str | None] = None
    # hyperparameters (set from the constructor's arguments by FederatedAlgorithm.__init__)
    batch_size: int
    n_epochs: int
    # the constructor's number or schedule, made a FloatSchedule by _setup_model (as SB3's PPO does)
    clip_range: Schedule
    clip_range_vf: Schedule | None
    vf_coef: float
    target_kl: float | None
    variance_control: str
    policy: ActorCriticPolicy

    def __init__(
        self,
        policy: str | type[ActorCriticPolicy],
        env: GymEnv | str | None,
        n_agents: int | None = None,
        learning_rate: float | Schedule = 3e-4,
        n_steps: int = 256,
        batch_size: int = 64,
        n_epochs: int = 10,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        clip_range: float | Schedule = 0.2,
        clip_range_vf: float | Schedule | None = None,
        normalize_advantage: bool | str = "shared",
        ent_coef: float = 0.0,
        vf_coef: float = 0.5,
        max_grad_norm: float | None = 0.5,
        target_kl: float | None = None,
        correction: bool | str = "surrogate",
        variance_control: str = "snr_damping",
        server_learning_rate: float = 1.0,
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
            if self.env is not None:
                self._check_rollout_size()  # as SB3's PPO: at construction (not again at load)

    def _setup_model(self) -> None:
        self._check_hyperparams()
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        assert self.n_agents is not None, "n_agents is unknown: pass it or a federated env"
        self.policy = self._make_policy()
        self._check_policy()
        self._actor = BatchedActor(self.policy)
        self.critics = StackedCritics(self.policy, self.n_agents).to(self.device)
        self.critic_optimizer: BatchedAdam | AgentOptimizer
        self.actor_optimizer: BatchedAdam | AgentOptimizer
        torch_optimizer = requested_optimizer(self.policy_kwargs)
        if torch_optimizer is None:
            self.critic_optimizer = BatchedAdam(self.n_agents, self.critics.params.shape[1]).to(self.device)
            self.actor_optimizer = BatchedAdam(self.n_agents, self._actor.n_params).to(self.device)
        else:  # policy_kwargs' torch optimiser, every agent's own: on its critic and its actor row, one learning rate
            optimizer_class, optimizer_kwargs = torch_optimizer
            lr = self.lr_schedule(1)
            n_critic = self.critics.params.shape[1]
            self.critic_optimizer = AgentOptimizer(optimizer_class, optimizer_kwargs, self.n_agents, n_critic, lr, self.device)
            self.actor_optimizer = AgentOptimizer(
                optimizer_class, optimizer_kwargs, self.n_agents, self._actor.n_params, lr, self.device
            )
        self.correction_stats = CorrectionStatistics(self.n_agents, n_params=self._actor.n_params).to(self.device)
        # as SB3's PPO: the attributes become schedules (a number or a saved FloatSchedule gives the same schedule)
        self.clip_range = FloatSchedule(self.clip_range)
        if self.clip_range_vf is not None:
            self.clip_range_vf = FloatSchedule(self.clip_range_vf)
        self._setup_federated_buffers()

    def _check_rollout_size(self) -> None:
        """
        SB3's PPO checks on the rollout: refuse one that the advantage normalisation cannot scale (a single sample
        pooled; SB3: ``n_steps * n_envs`` must be greater than 1), and warn, as SB3 does, when the agent's rollout is
        not a whole number of minibatches.

        :raises HyperparameterError: a rollout of one sample with advantage normalisation on
        """
        assert self.n_envs_per_agent is not None and self.n_agents is not None
        per_agent = self.n_envs_per_agent * self.n_steps
        mode = advantage_normalization(self.normalize_advantage)
        # the samples one advantage scale is computed from (without normalisation there is none to compute)
        pooled = self.n_agents * per_agent if mode == "shared" else per_agent
        if mode is not None and pooled <= 1:
            raise HyperparameterError(
                f"n_steps * n_envs must be greater than 1 with normalize_advantage={self.normalize_advantage!r}: "
                f"currently n_steps={self.n_steps} and {self.n_envs_per_agent} env(s) per agent "
                f"({self.n_agents} agent(s)), a single advantage to normalise. Use more steps or envs, or "
                "normalize_advantage=False."
            )
        if per_agent > self.batch_size and per_agent % self.batch_size:
            warnings.warn(
                f"You have specified a mini-batch size of {self.batch_size}, but because each agent's rollout is of "
                f"size n_steps * n_envs_per_agent = {per_agent}, after every {per_agent // self.batch_size} untruncated "
                f"mini-batches, there will be a truncated mini-batch of size {per_agent % self.batch_size}. "
                "FederatedPPO leaves those samples out of that epoch (all agents' minibatches run as one batched step "
                "of one size; each epoch reshuffles, so every sample is used across epochs). Pass a batch_size that "
                f"divides {per_agent} to use every sample in every epoch.",
                FederatedDifferenceWarning,
                stacklevel=3,  # the user's FederatedPPO(...) call
            )

    def _excluded_save_params(self) -> list[str]:
        return [
            *super()._excluded_save_params(),
            "_actor",
            "_last_round",
            "_numpy_rollout",
            "critics",
            "critic_optimizer",
            "actor_optimizer",
            "correction_stats",
        ]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", "critics", "critic_optimizer", "actor_optimizer", "correction_stats"], []

    #: saved tensors a file written before they existed may lack (they start fresh)
    _optional_torch_params = ("correction_stats",)

    def local_state_dict(self) -> dict[str, Any]:
        """:return: every agent's local memory (critics, their optimiser, the actors' Adam moments)"""
        return {
            "critics": self.critics.state_dict(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "actor_optimizer": self.actor_optimizer.state_dict(),
            "correction_stats": self.correction_stats.state_dict(),
        }

    def load_local_state_dict(self, state: dict[str, Any]) -> None:
        """
        :param state: the output of :meth:`local_state_dict`
        """
        self.critics.load_state_dict(state["critics"])
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        self.actor_optimizer.load_state_dict(state["actor_optimizer"])
        if "correction_stats" in state:
            self.correction_stats.load_state_dict(state["correction_stats"])

    @property
    def steps_per_round(self) -> int:
        """Env steps of one round: one rollout of ``n_steps`` per sub-environment."""
        return self.n_envs * self.n_steps

    def rollout_estimator(self) -> Estimator:
        """:return: GAE with each agent's critic, as the PPO epochs compute the advantages (:attr:`rollout_buffer`)"""
        return GAE(self.gamma, self.gae_lambda)

    def sample_batch(self, params: th.Tensor, callback: BaseCallback) -> RolloutBatch:
        """
        Every agent's rollout under its own parameters, in eval mode (dropout off) as SB3 collects rollouts.

        :param params: stacked actor parameters ``(n_agents, n_params)``
        :param callback: SB3 callback, called at every env step
        :return: the batch
        """
        with self._actor.evaluation():
            return self.collect_batch(params, callback, keep_truncations=True)

    def train(self, callback: BaseCallback | None = None) -> None:
        """
        One communication round: rollouts under ``θ̄``, every agent's PPO epochs, server aggregation.
        Atomic like :meth:`sb3_fedpg.FederatedPG.train`: a round that does not complete changes nothing.

        :param callback: SB3 callback called at every env step (a no-op if ``None``)
        """
        callback = self._round_callback(callback)
        self.policy.set_training_mode(True)
        learning_rate = self.current_learning_rate()
        solver = self.local_solver(callback, learning_rate)
        result = self.run_atomic_round(solver)
        self.logger.record("train/clip_range", solver.settings.clip_range)
        means = solver.stats.means()
        if "train/policy_gradient_loss" in means:  # SB3's total loss, from the round's mean terms
            terms = (means["train/policy_gradient_loss"], means["train/entropy_loss"], means["train/value_loss"])
            self.logger.record("train/loss", terms[0] + self.ent_coef * terms[1] + self.vf_coef * terms[2])
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())
        self.record_round(result, learning_rate, self.n_epochs, means)

    def local_solver(self, callback: BaseCallback, learning_rate: float) -> PPOEpochs:
        """
        :param callback: SB3 callback called at every env step
        :param learning_rate: the agents' optimiser step size of this round
        :return: this round's PPO epochs (clip ranges at the current progress; rollouts from this algorithm's env)
        """
        progress = self._current_progress_remaining
        settings = PPOSettings(
            learning_rate=learning_rate,
            clip_range=float(self.clip_range(progress)),
            clip_range_vf=None if self.clip_range_vf is None else float(self.clip_range_vf(progress)),
            n_epochs=self.n_epochs,
            batch_size=self.batch_size,
            gamma=self.gamma,
            gae_lambda=self.gae_lambda,
            normalize_advantage=advantage_normalization(self.normalize_advantage),
            ent_coef=self.ent_coef,
            vf_coef=self.vf_coef,
            max_grad_norm=self.max_grad_norm,
            target_kl=self.target_kl,
            correction=ppo_correction_mode(self.correction),
            variance_control=self.variance_control,
        )
        return PPOEpochs(
            self._actor,
            self.critics,
            self.critic_optimizer,
            self.actor_optimizer,
            settings,
            lambda params: self.sample_batch(params, callback),
            self.correction_stats,
        )

    def learn(
        self: SelfFederatedPPO,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "FederatedPPO",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfFederatedPPO:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
