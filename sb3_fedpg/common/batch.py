"""The typed batch passed from the rollout to the local update."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch as th


@dataclass
class RolloutBatch:
    """
    ``K`` steps of ``M`` sub-environments for each of ``N`` agents, collected under each agent's own
    (local) parameters. Agent-major: row ``i`` of every tensor belongs to agent ``i``.

    :param obs: observations, ``(N, K·M, obs_dim)``, step-major within an agent (sample ``k·M + m``)
    :param actions: actions taken, ``(N, K·M, *action_shape)`` (the policy's own representation)
    :param rewards: rewards under each agent's own reward function, ``(N, K, M)``
    :param dones: 1.0 where an episode ended at that step (terminated or truncated), ``(N, K, M)``
    :param last_obs: observation after the last step, ``(N, M, obs_dim)``, for bootstrapping
    :param truncations: ``(step, env)`` of every time-limit truncation inside the batch (``env`` is the
        index among all ``N·M`` sub-environments), whose final observations are ``terminal_obs``
    :param terminal_obs: final observations of the truncated episodes, ``(len(truncations), obs_dim)``
    :param env_obs: the observations as the env gave them, one per step (``K`` arrays of ``N·M`` rows, or dicts of
        them for a ``Dict`` space), before the policy's preprocessing: SB3's rollout buffer stores these
    :param episode_starts: 1.0 where a sub-environment's episode started at the batch's first step (reset, or a
        ``done`` at the previous batch's last step), ``(N·M,)``; the later steps' follow from ``dones``
    :param behaviour_params: the stacked actor parameters that collected the batch, ``(N, n_params)``
    :param values: each agent's own critic's values of ``obs`` as SB3 computes them in its rollout (eval mode),
        ``(N, K, M)`` (a critic estimator's; ``None`` until computed)
    :param advantages: the estimator's weights before any normalisation (GAE's advantages), ``(N, K, M)``. Set with
        ``values`` once, by whichever needs them first, the local solver or the model's ``rollout_buffer``, so that
        both read the same numbers (:func:`~sb3_fedpg.common.estimators.critic_advantages`; ``None`` until then)
    :param log_probs: ``log π(a|s)`` of the actions under ``behaviour_params``, ``(N, K·M)``, when a solver computed
        them (PPO's behaviour log-probabilities), else ``None``
    """

    obs: th.Tensor
    actions: th.Tensor
    rewards: th.Tensor
    dones: th.Tensor
    last_obs: th.Tensor | None = None
    truncations: tuple[tuple[int, int], ...] = ()
    terminal_obs: th.Tensor | None = None
    env_obs: list[Any] | None = None
    episode_starts: np.ndarray | None = None
    behaviour_params: th.Tensor | None = None
    values: th.Tensor | None = None
    advantages: th.Tensor | None = None
    log_probs: th.Tensor | None = None

    @property
    def n_agents(self) -> int:
        """``N``"""
        return int(self.rewards.shape[0])

    @property
    def n_steps(self) -> int:
        """``K``"""
        return int(self.rewards.shape[1])

    @property
    def n_envs(self) -> int:
        """``M`` (sub-environments per agent)"""
        return int(self.rewards.shape[2])
