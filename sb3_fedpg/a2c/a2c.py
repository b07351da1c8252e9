"""FederatedA2C: Fast-FedPG with Stable-Baselines3 A2C's defaults (a preset of FederatedPG, not another algorithm)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import torch as th
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule

from sb3_fedpg.common.federated_algorithm import FederatedAlgorithm
from sb3_fedpg.common.hyperparams import FedA2CHyperparams, HyperparameterError, positive_float
from sb3_fedpg.fedpg.fedpg import FederatedPG

SelfFederatedA2C = TypeVar("SelfFederatedA2C", bound="FederatedA2C")


class FederatedA2C(FederatedPG):
    """
    Fast-FedPG with SB3 A2C's defaults: what an A2C user switches to.

    The same algorithm as :class:`~sb3_fedpg.FederatedPG` (anchors, ``H`` corrected local steps, server averaging;
    one agent is plain A2C-style actor-critic with ``H`` updates per round), with A2C's settings where A2C has them:
    ``learning_rate=7e-4``, ``n_steps=5``, ``gae_lambda=1.0``, ``normalize_advantage=False``, ``max_grad_norm=0.5``
    and RMSprop (``alpha=0.99``, ``eps=rms_prop_eps``) as every agent's local optimiser, on its actor row and on its
    critic (A2C's one optimiser steps both; the critics' step is ``critic_learning_rate``, 7e-4 like the actor's).
    FederatedPG keeps the Fast-FedPG paper's defaults (plain gradient ascent, the setting its theory is about), which
    learn slower at the step sizes A2C users bring (docs/migrating.md, "From A2C"; ``benchmarks/identity_parity.py``).

    Differences from A2C that stay: ``max_grad_norm`` clips each agent's corrected actor direction and critic
    gradient, not A2C's joint loss; ``vf_coef`` has no counterpart (each agent's critic has its own optimiser:
    ``critic_learning_rate`` sets its step); ``use_rms_prop=False`` gives A2C's alternative, Adam with ``eps=1e-5``.

    :param policy: The policy model to use (``MlpPolicy``, ``CnnPolicy`` for images, ``MultiInputPolicy`` for ``Dict``
        observations)
    :param env: The environment to learn from (a federated ``VecEnv``, any ``VecEnv``, or an env id)
    :param n_agents: Number of agents ``N``; ``None`` takes it from a federated env (else 1)
    :param learning_rate: Local step size ``η`` of the actor (float or schedule of the remaining progress)
    :param local_steps: Local steps ``H`` per communication round
    :param n_steps: Steps per sub-environment in one gradient batch (A2C's rollout length)
    :param server_learning_rate: Server step size ``η_g`` applied to the averaged parameter change
    :param gamma: Discount factor
    :param gae_lambda: GAE λ (1: A2C's n-step returns)
    :param estimator: Local gradient estimator: ``"gae"``, ``"gpomdp"`` or ``"reinforce"``
    :param baseline: Baseline for ``gpomdp``/``reinforce``: ``"none"`` or ``"mean"``
    :param correction: Fast-FedPG's drift correction; ``False`` gives FedAvg-PG
    :param variance_control: How the correction copes with sampling noise (see :class:`~sb3_fedpg.FederatedPG`)
    :param anchor_batches: Batches averaged into each anchor (see :class:`~sb3_fedpg.FederatedPG`)
    :param reuse_anchor_batch: Use the anchor batch for the first local step
    :param normalize_advantage: ``False`` (A2C's default), ``"shared"`` or ``"per_agent"`` (see
        :class:`~sb3_fedpg.FederatedPG`)
    :param ent_coef: Entropy bonus coefficient in each agent's local objective
    :param critic_learning_rate: Step size of the local critics' optimiser
    :param local_optimizer: ``"sgd"`` (then the torch optimiser of ``use_rms_prop`` / ``policy_kwargs`` is the local
        optimiser, as in A2C) or ``"adam"`` (the built-in per-agent Adam; ``use_rms_prop`` is then not applied)
    :param max_grad_norm: Clip each agent's corrected direction to this norm (``None`` disables)
    :param use_rms_prop: Whether to use RMSprop (A2C's default) or Adam as the agents' local optimiser; applies when
        ``policy_kwargs`` names no ``optimizer_class`` and ``local_optimizer="sgd"``
    :param rms_prop_eps: RMSprop's epsilon (stabilises the square root; A2C's default 1e-5)
    :param aggregator: Server reduction over agents (see :class:`~sb3_fedpg.FederatedPG`)
    :param aggregator_kwargs: Parameters of a named aggregator
    :param participation: Fraction of agents sampled to take part in each round
    :param attack: For robustness experiments only: corrupts what some agents send to the server
    :param use_sde: Whether to use generalized State Dependent Exploration (gSDE) (``Box`` actions only)
    :param sde_sample_freq: Sample a new noise matrix every n steps when using gSDE (-1: once per rollout)
    :param n_envs_per_agent: Sub-environments per agent (``M``) when ``env`` is an env id
    :param env_kwargs: Keyword arguments for the env when ``env`` is an env id
    :param rollout_buffer_class: SB3's rollout buffer class of :attr:`rollout_buffer`
    :param rollout_buffer_kwargs: Keyword arguments of ``rollout_buffer_class``
    :param stats_window_size: Window size for the rollout logging, specifying the number of episodes to average
    :param tensorboard_log: the log location for tensorboard (if None, no logging)
    :param policy_kwargs: additional arguments to be passed to the policy on creation; ``optimizer_class`` /
        ``optimizer_kwargs`` (as A2C reads them) replace RMSprop as the agents' local optimiser
    :param verbose: Verbosity level: 0 for no output, 1 for info messages, 2 for debug messages
    :param seed: Seed for the pseudo random generators
    :param device: Device (cpu, cuda, ...) on which the code should be run
    :param _init_setup_model: Whether or not to build the network at the creation of the instance
    """

    hyperparams_class: ClassVar[type[FedA2CHyperparams]] = FedA2CHyperparams

    def __init__(
        self,
        policy: str | type[ActorCriticPolicy],
        env: GymEnv | str | None,
        n_agents: int | None = None,
        learning_rate: float | Schedule = 7e-4,
        local_steps: int = 4,
        n_steps: int = 5,
        server_learning_rate: float = 1.0,
        gamma: float = 0.99,
        gae_lambda: float = 1.0,
        estimator: str = "gae",
        baseline: str = "none",
        correction: bool = True,
        variance_control: str = "none",
        anchor_batches: int | str = "auto",
        reuse_anchor_batch: bool = True,
        normalize_advantage: bool | str = False,
        ent_coef: float = 0.0,
        critic_learning_rate: float = 7e-4,
        local_optimizer: str = "sgd",
        max_grad_norm: float | None = 0.5,
        use_rms_prop: bool = True,
        rms_prop_eps: float = 1e-5,
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
        if not isinstance(use_rms_prop, bool):
            raise HyperparameterError(f"use_rms_prop must be True or False, got {use_rms_prop!r}.")
        positive_float("rms_prop_eps", rms_prop_eps)
        self.use_rms_prop = use_rms_prop
        self.rms_prop_eps = rms_prop_eps
        settings = locals()
        settings["policy_kwargs"] = a2c_policy_kwargs(policy_kwargs, use_rms_prop, rms_prop_eps, local_optimizer)
        FederatedAlgorithm.__init__(self, policy, env, settings)
        if _init_setup_model:
            self._setup_model()

    def learn(
        self: SelfFederatedA2C,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "FederatedA2C",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfFederatedA2C:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )


def a2c_policy_kwargs(
    policy_kwargs: dict[str, Any] | None, use_rms_prop: bool, rms_prop_eps: float, local_optimizer: str
) -> dict[str, Any] | None:
    """
    A2C's choice of optimiser, as SB3's ``A2C.__init__`` makes it: RMSprop (``alpha=0.99``, ``eps=rms_prop_eps``,
    no weight decay) unless the policy kwargs name an optimiser; without RMSprop, the policy's default (Adam with
    ``eps=1e-5``). Like A2C, it writes the optimiser into the given dict, so that ``load(path,
    policy_kwargs=same_dict)`` finds the stored policy kwargs equal to the given ones (SB3's check).

    :param policy_kwargs: the user's policy kwargs (updated in place, as A2C does)
    :param use_rms_prop: A2C's ``use_rms_prop``
    :param rms_prop_eps: A2C's ``rms_prop_eps``
    :param local_optimizer: a built-in local optimiser other than ``"sgd"`` takes precedence (nothing is added)
    :return: the policy kwargs with the optimiser set
    """
    if local_optimizer != "sgd" or (policy_kwargs is not None and "optimizer_class" in policy_kwargs):
        return policy_kwargs
    optimizer: dict[str, Any]
    if use_rms_prop:
        optimizer = dict(optimizer_class=th.optim.RMSprop, optimizer_kwargs=dict(alpha=0.99, eps=rms_prop_eps, weight_decay=0))
    else:
        optimizer = dict(optimizer_class=th.optim.Adam)  # SB3's policy default, which reads as Adam(eps=1e-5)
    if policy_kwargs is None:
        return optimizer
    policy_kwargs.update(optimizer)
    return policy_kwargs
