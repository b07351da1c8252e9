"""Fast-FedPG: federated policy gradient with memory-based drift correction."""

from __future__ import annotations

import io
import os
import pathlib
import pickle
import random
import sys
import tempfile
import time
import warnings
import zipfile
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import FloatSchedule, safe_mean

from sb3_fedpg.common import fedmath
from sb3_fedpg.common.aggregators import make_aggregator
from sb3_fedpg.common.batched_policy import BatchedActor, StackedCritics
from sb3_fedpg.common.callbacks import fire_round_end
from sb3_fedpg.common.estimators import (
    BASELINES,
    ESTIMATORS,
    alive_mask,
    gae_advantages,
    gpomdp_weights,
    reinforce_weights,
)
from sb3_fedpg.common.federated_vec_env import make_federated_vec_env
from sb3_fedpg.fedpg.local_optim import LOCAL_OPTIMIZERS
from sb3_fedpg.fedpg.policies import MlpPolicy

SelfFederatedPG = TypeVar("SelfFederatedPG", bound="FederatedPG")


class _StopTraining(Exception):
    """A callback asked to stop in the middle of a round (the round is discarded)."""


class FederatedPG(BaseAlgorithm):
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

    :param policy: The policy model to use (``MlpPolicy``, ...)
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
    :param reuse_anchor_batch: Use the anchor batch for the first local step (saves one batch per round;
        then ``d_{i,0} = g`` exactly with correction)
    :param normalize_advantage: Normalise the weights of each agent's batch to zero mean and unit variance
    :param ent_coef: Entropy bonus coefficient in each agent's local objective
    :param critic_learning_rate: Adam step size of the local critics (``estimator="gae"``)
    :param local_optimizer: ``"sgd"`` (plain gradient ascent, what the paper analyses) or ``"adam"`` applied to the
        corrected direction (a heuristic outside the theory; its state is local to each agent)
    :param max_grad_norm: Clip each agent's corrected direction to this norm (heuristic; ``None`` disables)
    :param aggregator: Server reduction over agents for both the anchors and the parameter changes: ``"mean"`` (the
        paper's), or a Byzantine-robust ``"median"``, ``"trimmed_mean"``, ``"norm_clipped_mean"``, ``"geometric_median"``,
        or any callable ``(n, p) -> (p,)`` (see :mod:`sb3_fedpg.common.aggregators`)
    :param aggregator_kwargs: Parameters of a named aggregator (e.g. ``{"trim": 0.2}``)
    :param participation: Fraction of agents sampled (without replacement) to take part in each round; only their
        anchors form ``g`` and only their parameter changes are averaged. ``1.0``: every agent, every round
    :param attack: For robustness experiments only: a :class:`~sb3_fedpg.common.adversarial.ByzantineAttack` (or any
        ``attack(stacked, phase)``) that corrupts what some agents send to the server
    :param n_envs_per_agent: Sub-environments per agent (``M``) when ``env`` is an env id
    :param env_kwargs: Keyword arguments for the env when ``env`` is an env id (e.g. ``heterogeneity``)
    :param stats_window_size: Window size for the rollout logging, specifying the number of episodes to average
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments to be passed to the policy on creation
    :param verbose: Verbosity level: 0 for no output, 1 for info messages, 2 for debug messages
    :param seed: Seed for the pseudo random generators
    :param device: Device (cpu, cuda, ...) on which the code should be run
    :param _init_setup_model: Whether or not to build the network at the creation of the instance
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MlpPolicy": MlpPolicy}
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
        reuse_anchor_batch: bool = True,
        normalize_advantage: bool = True,
        ent_coef: float = 0.0,
        critic_learning_rate: float = 1e-3,
        local_optimizer: str = "sgd",
        max_grad_norm: float | None = None,
        aggregator: str | Callable[[Any], Any] = "mean",
        aggregator_kwargs: dict[str, Any] | None = None,
        participation: float = 1.0,
        attack: Callable[[Any, str], Any] | None = None,
        n_envs_per_agent: int = 8,
        env_kwargs: dict[str, Any] | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        # Validate everything before any env is built or stepped.
        _check_positive_int("local_steps", local_steps)
        _check_positive_int("n_steps", n_steps)
        _check_positive_int("n_envs_per_agent", n_envs_per_agent)
        if n_agents is not None:
            _check_positive_int("n_agents", n_agents)
        if not callable(learning_rate):
            _check_positive_float("learning_rate", learning_rate)
        _check_positive_float("server_learning_rate", server_learning_rate)
        _check_positive_float("critic_learning_rate", critic_learning_rate)
        if not 0.0 < gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {gamma}.")
        if not 0.0 <= gae_lambda <= 1.0:
            raise ValueError(f"gae_lambda must be in [0, 1], got {gae_lambda}.")
        if estimator not in ESTIMATORS:
            raise ValueError(f"unknown estimator {estimator!r}: choose one of {ESTIMATORS}.")
        if baseline not in BASELINES:
            raise ValueError(f"unknown baseline {baseline!r}: choose one of {BASELINES}.")
        if local_optimizer not in LOCAL_OPTIMIZERS:
            raise ValueError(f"unknown local_optimizer {local_optimizer!r}: choose one of {tuple(LOCAL_OPTIMIZERS)}.")
        if max_grad_norm is not None:
            _check_positive_float("max_grad_norm", max_grad_norm)
        if not np.isfinite(ent_coef) or ent_coef < 0:
            raise ValueError(f"ent_coef must be a finite number >= 0, got {ent_coef}.")
        if isinstance(participation, bool) or not isinstance(participation, int | float) or not 0.0 < participation <= 1.0:
            raise ValueError(f"participation must be a fraction in (0, 1], got {participation!r}.")
        aggregate = make_aggregator(aggregator, **(aggregator_kwargs or {}))

        if isinstance(env, str):
            env = make_federated_vec_env(env, n_agents, n_envs_per_agent, env_kwargs=env_kwargs, seed=seed)
        elif env_kwargs:
            raise ValueError("env_kwargs is only used when env is an env id; the env given is already built.")

        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            policy_kwargs=policy_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            device=device,
            support_multi_env=True,
            seed=seed,
            supported_action_spaces=(spaces.Discrete, spaces.Box),
        )
        self.n_agents = n_agents
        self.local_steps = local_steps
        self.n_steps = n_steps
        self.server_learning_rate = server_learning_rate
        self.gamma = gamma
        self.gae_lambda = gae_lambda
        self.estimator = estimator
        self.baseline = baseline
        self.correction = correction
        self.reuse_anchor_batch = reuse_anchor_batch
        self.normalize_advantage = normalize_advantage
        self.ent_coef = ent_coef
        self.critic_learning_rate = critic_learning_rate
        self.local_optimizer = local_optimizer
        self.max_grad_norm = max_grad_norm
        self.n_envs_per_agent = n_envs_per_agent
        self.aggregator = aggregate
        self.participation = float(participation)
        self.attack = attack
        self._n_rounds = 0
        # Its own generator, so sampling participants does not shift any other random stream.
        self._participation_rng = np.random.default_rng(seed)
        self._action_rng = np.random.default_rng(None if seed is None else seed + 1)  # the NumPy rollout path's actions

        if self.env is not None:
            env_agents = getattr(self.env, "n_agents", None)
            if self.n_agents is None:
                self.n_agents = int(env_agents) if env_agents is not None else 1
            elif env_agents is not None and env_agents != self.n_agents:
                raise ValueError(f"n_agents={self.n_agents} but the federated env has {env_agents} agents.")
            if self.n_envs % self.n_agents != 0:
                raise ValueError(
                    f"{self.n_envs} envs cannot be split evenly between {self.n_agents} agents: "
                    "use a number of envs that is a multiple of n_agents."
                )
            self.n_envs_per_agent = self.n_envs // self.n_agents

        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        assert self.n_agents is not None, "n_agents is unknown: pass it or a federated env"
        self.policy = self.policy_class(  # type: ignore[assignment]
            self.observation_space, self.action_space, self.lr_schedule, **self.policy_kwargs
        )
        self.policy = self.policy.to(self.device)
        self._actor = BatchedActor(self.policy)
        self.critics = StackedCritics(self.policy, self.n_agents).to(self.device)
        self.critic_optimizer = th.optim.Adam(self.critics.parameters(), lr=self.critic_learning_rate)
        self.local_optimizer_state = LOCAL_OPTIMIZERS[self.local_optimizer](self.n_agents, self._actor.n_params).to(
            self.device
        )
        self._agent_ep_buffers = [deque(maxlen=self._stats_window_size) for _ in range(self.n_agents)]
        self._numpy_rollout = (
            self.device.type == "cpu" and isinstance(self.observation_space, spaces.Box) and self._actor.net.numpy_ready
        )

    def _excluded_save_params(self) -> list[str]:
        return [
            *super()._excluded_save_params(),
            "_actor",
            "_last_round",
            "_numpy_rollout",
            "critics",
            "critic_optimizer",
            "local_optimizer_state",
        ]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", "critics", "critic_optimizer", "local_optimizer_state"], []

    @property
    def n_federated_params(self) -> int:
        """Size of the federated (actor) parameter vector."""
        return self._actor.n_params

    def get_global_parameters(self) -> th.Tensor:
        """:return: the global actor parameters ``θ̄`` as one flat vector (a copy)"""
        return self._actor.get_vector()

    def set_global_parameters(self, vector: th.Tensor | np.ndarray) -> None:
        """
        Replace the global actor parameters ``θ̄``.

        :param vector: flat parameters of length :attr:`n_federated_params`
        """
        vector = th.as_tensor(vector, dtype=th.float32, device=self.device)
        if vector.shape != (self._actor.n_params,):
            raise ValueError(f"expected a flat vector of {self._actor.n_params} parameters, got shape {tuple(vector.shape)}.")
        if not th.isfinite(vector).all():
            raise ValueError("the global parameters contain NaN or inf.")
        self._actor.set_vector(vector)

    # ----------------------------------------------------------------- rollouts
    def _flat_obs(self, obs: np.ndarray) -> th.Tensor:
        """:return: observations ``(batch, obs_dim)`` as the policy's input (one-hot for discrete spaces)"""
        obs_t = preprocess_obs(th.as_tensor(obs, device=self.device), self.observation_space, normalize_images=False)
        return obs_t.reshape(len(obs_t), -1).float()

    def _obs_to_tensor(self, obs: np.ndarray) -> th.Tensor:
        """:return: the observations of all sub-envs as ``(n_agents, M, obs_dim)``"""
        return self._flat_obs(obs).view(self.n_agents, self.n_envs_per_agent, -1)

    def _collect_batch(self, params: th.Tensor, callback: BaseCallback) -> dict[str, th.Tensor]:
        """
        Step all agents' envs for ``n_steps`` under their current local parameters.

        :param params: stacked actor parameters ``(n_agents, n_params)``
        :param callback: SB3 callback, called at every env step
        :return: the batch as tensors ``(n_agents, K, M, ...)``
        """
        assert self.env is not None and self.n_agents is not None
        n, m, k_steps = self.n_agents, self.n_envs_per_agent, self.n_steps
        if self.estimator != "gae":
            # Truncated trajectories start from the initial distribution (GPOMDP's ρ).
            self._last_obs = self.env.reset()  # type: ignore[assignment]
        obs_list, act_list, rew_list, done_list = [], [], [], []
        truncated_obs: list[tuple[int, int, np.ndarray]] = []
        params_np = params.detach().cpu().numpy() if self._numpy_rollout else None
        callback.on_rollout_start()
        for k in range(k_steps):
            if params_np is not None:
                # CPU fast path: the tiny per-step forward pass in NumPy (torch's per-op overhead dominates here).
                obs_t = np.asarray(self._last_obs, dtype=np.float32).reshape(n, m, -1)
                actions = self._actor.sample_numpy(params_np, obs_t, self._action_rng)
                env_actions = actions.reshape(n * m, *self.action_space.shape)
            else:
                obs_t = self._obs_to_tensor(self._last_obs)  # type: ignore[arg-type]
                actions = self._actor.sample(params, obs_t)
                env_actions = actions.reshape(n * m, *self.action_space.shape).cpu().numpy()
            if isinstance(self.action_space, spaces.Box):
                env_actions = np.clip(env_actions, self.action_space.low, self.action_space.high)
            new_obs, rewards, dones, infos = self.env.step(env_actions)
            self.num_timesteps += self.env.num_envs
            callback.update_locals(locals())
            if not callback.on_step():
                raise _StopTraining
            done_idx = np.flatnonzero(dones)
            # Only finished episodes carry stats: skip the per-env scan of SB3's _update_info_buffer.
            self._update_info_buffer([infos[i] for i in done_idx], dones[done_idx])
            for idx in done_idx:
                info = infos[idx]
                if "episode" in info:
                    self._agent_ep_buffers[idx // m].append(info["episode"]["r"])
                if self.estimator == "gae" and info.get("TimeLimit.truncated") and "terminal_observation" in info:
                    truncated_obs.append((k, int(idx), info["terminal_observation"]))
            obs_list.append(obs_t)
            act_list.append(actions)
            rew_list.append(rewards)
            done_list.append(dones)
            self._last_obs = new_obs  # type: ignore[assignment]
        callback.on_rollout_end()

        def stack_steps(x: np.ndarray) -> th.Tensor:
            # (K, N*M) -> (N, K, M)
            return th.as_tensor(np.asarray(x), dtype=th.float32, device=self.device).view(k_steps, n, m).transpose(0, 1)

        def stack_agents(items: list) -> th.Tensor:
            # K x (N, M, ...) -> (N, K*M, ...), step-major within each agent
            stacked = th.as_tensor(np.stack(items, axis=1)) if params_np is not None else th.stack(items, dim=1)
            return stacked.to(self.device).reshape(n, k_steps * m, *stacked.shape[3:])

        batch = {
            "obs": stack_agents(obs_list),
            "actions": stack_agents(act_list),
            "rewards": stack_steps(rew_list),
            "dones": stack_steps(done_list),
        }
        if self.estimator == "gae":
            batch["last_obs"] = self._obs_to_tensor(self._last_obs)  # type: ignore[arg-type]
            if truncated_obs:
                # Bootstrap time-limit truncations with the agent's own critic, as SB3 does.
                steps, envs, terminal = zip(*truncated_obs, strict=True)
                term_t = self._flat_obs(np.stack(terminal))
                with th.no_grad():
                    # Every critic sees every terminal obs (one batched call); keep the owner's value.
                    values = self.critics(term_t.unsqueeze(0).expand(n, -1, -1))
                for j, (step, env_idx) in enumerate(zip(steps, envs, strict=True)):
                    agent = env_idx // m
                    batch["rewards"][agent, step, env_idx % m] += self.gamma * values[agent, j]
        return batch

    def _batch_gradients(self, params: th.Tensor, batch: dict[str, th.Tensor]) -> th.Tensor:
        """
        Every agent's local policy-gradient estimate (ascent direction) from its own batch.

        Also takes one local critic step (``gae``). Raises ``FloatingPointError`` naming the
        agents whose gradient is not finite.

        :param params: stacked actor parameters ``(n_agents, n_params)``
        :param batch: output of :meth:`_collect_batch`
        :return: gradients ``(n_agents, n_params)``
        """
        n, m, k_steps = self.n_agents, self.n_envs_per_agent, self.n_steps
        rewards, dones = batch["rewards"], batch["dones"]
        if self.estimator == "gae":
            values = self.critics(batch["obs"]).view(n, k_steps, m)
            with th.no_grad():
                last_values = self.critics(batch["last_obs"])
                weights = gae_advantages(rewards, values.detach(), dones, last_values, self.gamma, self.gae_lambda)
            returns = weights + values.detach()
            value_loss = 0.5 * (returns - values).pow(2).mean(dim=(1, 2))
            self.critic_optimizer.zero_grad()
            value_loss.sum().backward()
            self.critic_optimizer.step()
            self._last_stats["train/value_loss"] = float(value_loss.detach().mean())
            time_reduce = "mean"
            valid = th.ones_like(weights)
        else:
            estimator = gpomdp_weights if self.estimator == "gpomdp" else reinforce_weights
            weights = estimator(rewards, dones, self.gamma, self.baseline)
            time_reduce = "sum"
            valid = alive_mask(dones)  # steps after a trajectory's end are not part of it
        if self.normalize_advantage:
            # Per agent, over the steps that belong to the truncated trajectories only.
            count = valid.sum(dim=(1, 2), keepdim=True).clamp(min=2)
            mean = (weights * valid).sum(dim=(1, 2), keepdim=True) / count
            std = (((weights - mean) * valid).pow(2).sum(dim=(1, 2), keepdim=True) / (count - 1)).sqrt()
            weights = (weights - mean) / (std + 1e-8) * valid

        params = params.detach().requires_grad_(True)
        dist = self._actor.distribution(params, batch["obs"])
        log_prob = dist.log_prob(batch["actions"]).view(n, k_steps, m)
        # GPOMDP/REINFORCE: (1/M) Σ_m Σ_k w ∇log π ; GAE: mean over all samples (A2C-style).
        surrogate = (log_prob * weights).sum(1).mean(1) if time_reduce == "sum" else (log_prob * weights).mean(dim=(1, 2))
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
        self._last_stats["train/entropy"] = float(entropy.detach().mean())
        # Undiscounted reward of a K-step segment, averaged over agents and trajectories.
        self._last_stats["train/batch_return"] = float(rewards.sum(1).mean())
        return grads

    def _gradient_oracle(self, callback: BaseCallback) -> fedmath.GradientOracle:
        def grad_fn(params: th.Tensor, step: int) -> th.Tensor:
            batch = self._collect_batch(params.detach(), callback)
            return self._batch_gradients(params, batch)

        return grad_fn

    # -------------------------------------------------------------------- train
    def train(self, callback: BaseCallback | None = None) -> None:
        """
        One communication round: anchors, ``H`` corrected local steps, server averaging.

        Rollouts are collected inside the round (each local step needs fresh on-policy
        data). The global policy changes only when the whole round succeeded.

        :param callback: SB3 callback called at every env step (a no-op if ``None``)
        """
        from stable_baselines3.common.callbacks import CallbackList

        callback = callback if callback is not None else CallbackList([])
        if callback.model is None:
            callback.init_callback(self)
        self.policy.set_training_mode(True)
        self._last_stats: dict[str, float] = {}
        learning_rate = float(self.lr_schedule(self._current_progress_remaining))
        theta_bar = self._actor.get_vector().to(self.device)
        local_update = self.local_optimizer_state.make_update(learning_rate, self.max_grad_norm)
        participants = self._sample_participants()
        result = fedmath.fedpg_round(
            theta_bar,
            self._gradient_oracle(callback),
            self.n_agents,
            self.local_steps,
            local_update,
            server_learning_rate=self.server_learning_rate,
            correction=self.correction,
            reuse_anchor=self.reuse_anchor_batch,
            aggregator=self.aggregator,
            participants=participants,
            attack=self.attack,
        )
        if not bool(th.isfinite(result.params).all()):
            raise FloatingPointError(
                "the aggregated global parameters are not finite; the round was discarded and the last good global "
                "parameters kept. Lower the learning rate or check the agents' rewards."
            )
        self._actor.set_vector(result.params)
        self._last_round = result
        self._n_rounds += 1
        self._n_updates += self.local_steps
        n_taking_part = self.n_agents if participants is None else int(participants.sum())
        bytes_up, bytes_down = fedmath.round_message_bytes(self._actor.n_params, n_taking_part, self.correction)
        self.logger.record("fed/participants", n_taking_part)
        self.logger.record("train/learning_rate", learning_rate)
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/policy_gradient_norm", float(th.linalg.vector_norm(result.global_grad)))
        for key, value in self._last_stats.items():
            self.logger.record(key, value)
        self.logger.record("fed/round", self._n_rounds)
        self.logger.record("fed/drift", result.drift)
        self.logger.record("fed/correction_norm", result.correction_norm)
        self.logger.record("fed/bytes_up", bytes_up)
        self.logger.record("fed/bytes_down", bytes_down)

    def _sample_participants(self) -> th.Tensor | None:
        """:return: the mask of this round's participants, or ``None`` when every agent takes part"""
        if self.participation >= 1.0:
            return None
        assert self.n_agents is not None
        count = max(1, round(self.participation * self.n_agents))
        mask = th.zeros(self.n_agents, dtype=th.bool, device=self.device)
        mask[th.as_tensor(self._participation_rng.choice(self.n_agents, count, replace=False))] = True
        return mask

    def learn(
        self: SelfFederatedPG,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "FederatedPG",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfFederatedPG:
        """
        Train for at least ``total_timesteps`` env steps (whole rounds), the SB3 way.

        :param total_timesteps: env steps over all agents
        :param callback: SB3 callback(s)
        :param log_interval: log every this many rounds
        :param tb_log_name: TensorBoard run name
        :param reset_num_timesteps: reset the step counter (``False`` continues a previous ``learn``)
        :param progress_bar: show a progress bar (tqdm/rich)
        :return: the trained model
        """
        total_timesteps, callback = self._setup_learn(
            total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar
        )
        callback.on_training_start(locals(), globals())
        assert self.env is not None
        rounds = 0
        while self.num_timesteps < total_timesteps:
            try:
                self.train(callback)
            except _StopTraining:
                break
            rounds += 1
            self._update_current_progress_remaining(self.num_timesteps, total_timesteps)
            if log_interval is not None and rounds % log_interval == 0:
                self._dump_logs(rounds)
            if not fire_round_end(callback):
                break
        callback.on_training_end()
        return self

    def _dump_logs(self, rounds: int) -> None:
        assert self.ep_info_buffer is not None
        time_elapsed = max((time.time_ns() - self.start_time) / 1e9, sys.float_info.epsilon)
        fps = int((self.num_timesteps - self._num_timesteps_at_start) / time_elapsed)
        self.logger.record("time/iterations", rounds, exclude="tensorboard")
        if len(self.ep_info_buffer) > 0:
            self.logger.record("rollout/ep_rew_mean", safe_mean([ep["r"] for ep in self.ep_info_buffer]))
            self.logger.record("rollout/ep_len_mean", safe_mean([ep["l"] for ep in self.ep_info_buffer]))
        for i, buffer in enumerate(self._agent_ep_buffers):
            if len(buffer) > 0:
                self.logger.record(f"fed/agent_{i}/ep_rew_mean", safe_mean(list(buffer)))
        self.logger.record("time/fps", fps)
        self.logger.record("time/time_elapsed", int(time_elapsed), exclude="tensorboard")
        self.logger.record("time/total_timesteps", self.num_timesteps, exclude="tensorboard")
        self.logger.dump(step=self.num_timesteps)

    def save(
        self,
        path: str | pathlib.Path | io.BufferedIOBase,
        exclude: Iterable[str] | None = None,
        include: Iterable[str] | None = None,
    ) -> None:
        """
        Save the model to a zip file, atomically: a crash mid-write never leaves a corrupt file
        at ``path`` (the previous file, if any, stays intact until the new one is complete).

        :param path: file path (``.zip`` is appended when it has no suffix) or a writable buffer
        :param exclude: names of attributes to exclude in addition to the default ones
        :param include: names of attributes that might be excluded but should be included anyway
        """
        if isinstance(path, io.BufferedIOBase):
            super().save(path, exclude, include)
            return
        final = pathlib.Path(path)
        if final.suffix == "":
            final = final.with_suffix(".zip")
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp.zip", dir=final.parent)
        os.close(fd)
        try:
            super().save(tmp_name, exclude, include)
            os.replace(tmp_name, final)
        finally:
            if os.path.exists(tmp_name):
                os.remove(tmp_name)

    @classmethod
    def load(  # type: ignore[override]
        cls: type[SelfFederatedPG],
        path: str | pathlib.Path | io.BufferedIOBase,
        env: GymEnv | None = None,
        device: th.device | str = "auto",
        custom_objects: dict[str, Any] | None = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        **kwargs: Any,
    ) -> SelfFederatedPG:
        """
        Load a model saved with :meth:`save`; a corrupt or truncated file raises ``ValueError``
        (and is left as it is).

        :param path: path to the file (or a file-like object)
        :param env: the new environment to run the loaded model on (can be ``None`` for prediction only)
        :param device: device on which the code should run
        :param custom_objects: objects to replace when loading (see SB3's ``load``)
        :param print_system_info: print the system info of the saved model and the current one
        :param force_reset: reset the env before training
        :param kwargs: extra arguments to change the model when loading
        :return: the loaded model
        """
        problem = f"{path} is not a readable {cls.__name__} checkpoint (corrupt, truncated or from another algorithm)"
        if isinstance(path, str | pathlib.Path) and os.path.isfile(path) and not zipfile.is_zipfile(path):
            raise ValueError(f"{problem}: not a zip archive. The file was not modified.")
        try:
            return super().load(path, env, device, custom_objects, print_system_info, force_reset, **kwargs)
        except (zipfile.BadZipFile, EOFError, pickle.UnpicklingError, KeyError, RuntimeError, AssertionError) as error:
            raise ValueError(f"{problem}: {type(error).__name__}: {error}. The file was not modified.") from error

    def save_checkpoint(self, path: str | pathlib.Path) -> None:
        """
        Save everything needed to continue training exactly: the model (global policy, local
        critics and optimiser states, counters, schedule progress, participation sampler), the
        RNG states of Python, NumPy and torch, and the environment with its internal state.

        Call it between rounds (e.g. from :class:`~sb3_fedpg.common.callbacks.RoundCheckpointCallback`).
        Written atomically like :meth:`save`. An env that cannot be pickled (e.g. MuJoCo) is
        left out with a warning: resuming then starts fresh episodes and is not bit-identical.

        :param path: checkpoint file
        """
        import cloudpickle

        try:
            env_state: bytes | None = cloudpickle.dumps(self.env)
        except Exception as error:  # any pickling failure means "not resumable bit for bit"
            warnings.warn(f"the env could not be saved in the checkpoint ({error}); a resumed run starts new episodes.")
            env_state = None
        self._resume_state = {
            "python_rng": random.getstate(),
            # SB3 seeds NumPy's legacy global generator, so that is the state to keep.
            "numpy_rng": np.random.get_state(),  # noqa: NPY002
            "torch_rng": th.get_rng_state(),
            "env": env_state,
        }
        try:
            self.save(path)
        finally:
            del self._resume_state

    @classmethod
    def load_checkpoint(
        cls: type[SelfFederatedPG], path: str | pathlib.Path, env: GymEnv | None = None, device: th.device | str = "auto"
    ) -> SelfFederatedPG:
        """
        Load a checkpoint written by :meth:`save_checkpoint`, ready to continue with
        ``model.learn(total_timesteps - model.num_timesteps, reset_num_timesteps=False)``.

        :param path: checkpoint file
        :param env: environment to continue on; ``None`` restores the one saved in the checkpoint
        :param device: device on which the code should run
        :return: the model, its env and the RNG states as they were when the checkpoint was written
        """
        import cloudpickle

        model = cls.load(path, env=None, device=device)
        state = model.__dict__.pop("_resume_state", None)
        if state is None:
            raise ValueError(f"{path} is a model file without resume state; write checkpoints with save_checkpoint().")
        if env is None and state["env"] is None:
            raise ValueError(f"{path} holds no environment (it could not be pickled); pass env= to continue training.")
        restored = env if env is not None else cloudpickle.loads(state["env"])
        # force_reset=False keeps the saved last observation: the episode goes on where it stopped.
        model.set_env(restored, force_reset=env is not None)
        random.setstate(state["python_rng"])
        np.random.set_state(state["numpy_rng"])  # noqa: NPY002
        th.set_rng_state(state["torch_rng"])
        return model

    def _setup_lr_schedule(self) -> None:
        self.lr_schedule = FloatSchedule(self.learning_rate)


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def _check_positive_float(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating) or not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}.")
