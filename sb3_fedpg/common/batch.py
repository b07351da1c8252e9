"""The typed batch passed from the rollout to the local update."""

from __future__ import annotations

from dataclasses import dataclass

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
    """

    obs: th.Tensor
    actions: th.Tensor
    rewards: th.Tensor
    dones: th.Tensor
    last_obs: th.Tensor | None = None
    truncations: tuple[tuple[int, int], ...] = ()
    terminal_obs: th.Tensor | None = None

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
