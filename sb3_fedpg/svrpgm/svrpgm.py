"""FedSVRPG-M: federated momentum-based variance-reduced policy gradient (Wang et al., ICML 2024)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import torch as th
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule

from sb3_fedpg.common import fedmath
from sb3_fedpg.common.batch import RolloutBatch
from sb3_fedpg.common.batched_policy import BatchedActor, StackedCritics
from sb3_fedpg.common.estimators import Estimator, make_estimator
from sb3_fedpg.common.federated_algorithm import FederatedAlgorithm
from sb3_fedpg.common.hyperparams import FedSVRPGMHyperparams
from sb3_fedpg.fedpg.learner import PolicyGradientLearner
from sb3_fedpg.fedpg.local_optim import LocalOptimizer
from sb3_fedpg.svrpgm.local_solver import MomentumMemory, MomentumPolicyGradientSteps
from sb3_fedpg.svrpgm.policies import CnnPolicy, MlpPolicy, MultiInputPolicy

SelfFederatedSVRPGM = TypeVar("SelfFederatedSVRPGM", bound="FederatedSVRPGM")


class FederatedSVRPGM(FederatedAlgorithm):
    """
    FedSVRPG-M: federated policy gradient whose agents track the global gradient with an importance-weighted,
    variance-reduced momentum.

    Paper: Wang, He, Zhang, Miao, Anderson, "Momentum for the Win: Collaborative Federated Reinforcement Learning
    across Heterogeneous Environments", ICML 2024, https://arxiv.org/abs/2405.19499 (Algorithm 1)

    Round ``r`` (``θ̄_r`` the global parameters, ``u_r`` the server's momentum, ``θ̄_{r−1}`` the previous global
    parameters, all sent to the agents): every agent starts at ``θ_{i,0} = θ̄_r`` and for ``k = 0 … H−1`` samples a
    fresh batch ``B_k`` under ``θ_{i,k}`` and steps

    - ``u_{i,k} = β ĝ_i(θ_{i,k}; B_k) + (1 − β) (u_r + ĝ_i(θ_{i,k}; B_k) − ŵ ĝ_i(θ̄_{r−1}; B_k))`` (the paper's Eq. (4)),
    - ``θ_{i,k+1} = θ_{i,k} + η u_{i,k}``,

    where ``ŵ ĝ_i(θ̄_{r−1}; B_k)`` is the same batch's gradient at ``θ̄_{r−1}`` with each trajectory weighted by
    ``w(τ | θ̄_{r−1}, θ_{i,k}) = p(τ | θ̄_{r−1}) / p(τ | θ_{i,k})``. The server averages the parameter changes:
    ``u_{r+1} = (1 / (η H)) mean_i (θ_{i,H} − θ̄_r)`` (the agents' momenta averaged over agents and steps) and
    ``θ̄_{r+1} = θ̄_r + λ u_{r+1}`` with ``λ = η_g η H`` (``η_g = 1``: plain averaging of the local models, as in the
    authors' experiments). The math lives in :mod:`sb3_fedpg.common.fedmath` (:func:`~sb3_fedpg.common.fedmath.
    momentum_direction`, :func:`~sb3_fedpg.common.fedmath.server_momentum`); only the actor is federated, critics
    (``estimator="gae"``) stay local.

    Implementation choices (see ``docs/algorithms.md``, "FedSVRPG-M"): the first round has no momentum: its anchors
    ``ĝ_i(θ̄_0)`` are averaged into ``u_0`` (``θ̄_{−1} = θ̄_0``; the anchor batch is the first local step's); a
    batch is ``M`` trajectory segments of ``n_steps`` steps per agent (the paper: one trajectory); with ``gae`` the
    importance weights are per-sample ratios (no trajectories from ρ); the weights are truncated at
    ``max_importance_weight`` (the authors' experiments do; the paper's algorithm does not: ``None``).

    With exact gradients and constant steps FedSVRPG-M's fixed point is FedAvg-PG's to first order in ``η`` (the
    momentum is 0 there): it removes sampling noise, not the heterogeneity bias of constant steps, which vanishes as
    ``η`` shrinks (``benchmarks/tabular_svrpgm.py``). Fast-FedPG (:class:`~sb3_fedpg.FederatedPG`) removes it at any step.

    :param policy: The policy model to use (``MlpPolicy``, ``CnnPolicy`` for images, ``MultiInputPolicy`` for ``Dict``
        observations)
    :param env: The environment to learn from (a federated ``VecEnv``, any ``VecEnv``, or an env id)
    :param n_agents: Number of agents ``N``; ``None`` takes it from a federated env (else 1)
    :param learning_rate: Local step size ``η`` (float or schedule of the remaining progress)
    :param local_steps: Local steps ``H`` per communication round (the paper's ``K``)
    :param n_steps: Steps per trajectory segment in one gradient batch (the truncation ``K`` for ``gpomdp``/``reinforce``)
    :param momentum_coef: The momentum parameter ``β ∈ (0, 1]`` (``1``: FedAvg-PG's local step)
    :param max_importance_weight: Truncate the importance weights from above at this value (``≥ 1``); ``None``: the
        paper's untruncated weights
    :param server_learning_rate: Server step size ``η_g`` on the averaged parameter change (the paper's global step
        ``λ = η_g η H``)
    :param gamma: Discount factor
    :param gae_lambda: GAE λ (``estimator="gae"``)
    :param estimator: Local gradient estimator: ``"gpomdp"`` (trajectories from ρ, trajectory importance weights),
        ``"reinforce"`` or ``"gae"`` (a local critic, per-sample importance ratios)
    :param baseline: Baseline for ``gpomdp``/``reinforce``: ``"none"`` or ``"mean"`` (batch mean per step)
    :param normalize_advantage: Centre the weights of each agent's batch and divide them by one standard deviation
        shared by all agents (``"shared"``, or ``True``: pooled over the agents' batches of the previous round from
        the moments they send, so every agent's gradient keeps its reward's scale and the federation climbs the
        average return; each agent's own in the first round), by each agent's own (``"per_agent"``: the federation
        then climbs ``Σ_i ∇J_i / σ_i``, another objective when the reward scales differ) or not at all (``False``)
    :param ent_coef: Entropy bonus coefficient in each agent's local objective (not importance weighted)
    :param critic_learning_rate: Adam step size of the local critics (``estimator="gae"``)
    :param max_grad_norm: Clip each agent's local direction ``u_{i,k}`` to this norm (heuristic; ``None`` disables)
    :param aggregator: Server reduction over agents of the parameter changes (and so of the momentum): ``"mean"``
        (the paper's), a Byzantine-robust rule, or any callable ``(n, p) -> (p,)``
    :param aggregator_kwargs: Parameters of a named aggregator (e.g. ``{"trim": 0.2}``)
    :param participation: Fraction of agents sampled (without replacement) to take part in each round; only their
        parameter changes form ``θ̄_{r+1}`` and ``u_{r+1}``
    :param attack: For robustness experiments only: corrupts what some agents send to the server
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
    :param policy_kwargs: additional arguments to be passed to the policy on creation (``optimizer_class`` /
        ``optimizer_kwargs`` are refused: see :attr:`optimizer_refusal`)
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
    #: the hyperparameters' one definition and validation (also used by the zoo config)
    hyperparams_class: ClassVar[type[FedSVRPGMHyperparams]] = FedSVRPGMHyperparams
    #: why policy_kwargs' optimizer_class / optimizer_kwargs are refused
    optimizer_refusal: ClassVar[str | None] = (
        "the local step θ ← θ + η u is part of FedSVRPG-M: the server recovers the agents' momenta from their parameter "
        "changes, u_{r+1} = mean_i (θ_{i,H} − θ̄_r) / (η H), which another optimiser's steps would not give (and a "
        "local critic alone on it would be a half-measure). Tune learning_rate, momentum_coef and critic_learning_rate "
        "instead, or use FederatedPG / FederatedPPO, whose agents take any torch optimiser."
    )
    # hyperparameters (set from the constructor's arguments by FederatedAlgorithm.__init__)
    local_steps: int
    momentum_coef: float
    max_importance_weight: float | None
    estimator: str
    baseline: str
    critic_learning_rate: float
    policy: ActorCriticPolicy
    #: FedSVRPG-M exchanges no anchors after the first round (no Fast-FedPG correction)
    correction = False

    def __init__(
        self,
        policy: str | type[ActorCriticPolicy],
        env: GymEnv | str | None,
        n_agents: int | None = None,
        learning_rate: float | Schedule = 0.05,
        local_steps: int = 10,
        n_steps: int = 64,
        momentum_coef: float = 0.5,
        max_importance_weight: float | None = 1.8,
        server_learning_rate: float = 1.0,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        estimator: str = "gpomdp",
        baseline: str = "mean",
        normalize_advantage: bool | str = "shared",
        ent_coef: float = 0.0,
        critic_learning_rate: float = 1e-3,
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
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        assert self.n_agents is not None, "n_agents is unknown: pass it or a federated env"
        self.policy = self._make_policy()
        self._check_policy()
        self._actor = BatchedActor(self.policy)
        self.critics = StackedCritics(self.policy, self.n_agents).to(self.device)
        self.critic_optimizer = th.optim.Adam(self.critics.parameters(), lr=self.critic_learning_rate)
        # plain gradient ascent θ ← θ + η u (the paper's local step): a stateless rule, kept as a module for the learner
        self.local_optimizer_state = LocalOptimizer(self.n_agents, self._actor.n_params).to(self.device)
        self.server_memory = MomentumMemory(self._actor.n_params).to(self.device)
        self._setup_federated_buffers()
        self.learner = PolicyGradientLearner(
            self._actor,
            self.critics,
            self.critic_optimizer,
            self.local_optimizer_state,
            make_estimator(self.estimator, self.gamma, self.gae_lambda, self.baseline),
            normalize_advantage=self.normalize_advantage,
            ent_coef=self.ent_coef,
            max_grad_norm=self.max_grad_norm,
        )

    def _excluded_save_params(self) -> list[str]:
        return [
            *super()._excluded_save_params(),
            "_actor",
            "_last_round",
            "_numpy_rollout",
            "critics",
            "critic_optimizer",
            "learner",
            "local_optimizer_state",
            "server_memory",
        ]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", "critics", "critic_optimizer", "server_memory"], []

    @property
    def momentum(self) -> th.Tensor | None:
        """The server's momentum ``u_r`` (a copy), ``None`` before the first round."""
        return self.server_memory.momentum.clone() if self.server_memory.started else None

    @property
    def steps_per_round(self) -> int:
        """Env steps of one round: ``H`` batches (the first round's anchor batch is its first local step's)."""
        return self.n_envs * self.n_steps * self.local_steps

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
        One communication round: ``H`` momentum steps per agent, then the server's averaging of the parameter
        changes into ``θ̄_{r+1}`` and ``u_{r+1}``. Atomic like :meth:`sb3_fedpg.FederatedPG.train`: a round that does
        not complete changes nothing (neither the global policy nor the server's momentum).

        :param callback: SB3 callback called at every env step (a no-op if ``None``)
        """
        callback = self._round_callback(callback)
        self.policy.set_training_mode(True)
        learning_rate = self.current_learning_rate()
        solver = self.local_solver(callback, learning_rate)
        first = not self.server_memory.started
        result = self.run_atomic_round(solver)
        aggregator = self.aggregator
        assert callable(aggregator)  # built from a name by _check_hyperparams
        momentum = fedmath.server_momentum(
            result.params_before, result.local_params, learning_rate, self.local_steps, aggregator, result.participants
        )
        self.server_memory.advance(momentum, result.params_before)
        stats = solver.stats.means()
        # Down: θ̄_r, u_r and θ̄_{r−1} (the first round: θ̄_0 and u_0 = g); up: Δ_i (and the anchors in the first round).
        n_params, n_sent = self.n_federated_params, result.n_participants
        stats["fed/bytes_up"] = (2 if first else 1) * n_params * n_sent * 4
        stats["fed/bytes_down"] = (2 if first else 3) * n_params * n_sent * 4
        stats["train/policy_gradient_norm"] = float(th.linalg.vector_norm(momentum))  # ‖u_{r+1}‖
        self.record_round(result, learning_rate, self.local_steps, stats)

    def local_solver(self, callback: BaseCallback, learning_rate: float) -> MomentumPolicyGradientSteps:
        """
        :param callback: SB3 callback called at every env step
        :param learning_rate: the local step size ``η`` of this round
        :return: the momentum steps of this round (fresh batches from this algorithm's env; the server's ``u_r`` and
            ``θ̄_{r−1}`` from :attr:`server_memory`)
        """
        self.learner.advantage_ratio = self.advantage_ratio_tensor()
        return MomentumPolicyGradientSteps(
            self.learner,
            lambda params, step: self.sample_batch(params, callback),
            self.local_steps,
            self.local_optimizer_state.make_update(learning_rate, self.max_grad_norm),
            self.momentum_coef,
            self.server_memory,
            self.max_importance_weight,
        )

    def local_state_dict(self) -> dict[str, Any]:
        return self.learner.local_state_dict()

    def load_local_state_dict(self, state: dict[str, Any]) -> None:
        self.learner.load_local_state_dict(state)

    def learn(
        self: SelfFederatedSVRPGM,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "FederatedSVRPGM",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfFederatedSVRPGM:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
