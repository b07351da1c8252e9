"""
Federated tabular MDPs: shared (or per-agent) dynamics, one reward table per agent.

The paper's setting (Zhu, Heath, Mitra, arXiv 2409.05291): ``N`` agents share the state
space, the action space, the transition kernel ``P``, the initial distribution ``ρ`` and the
discount ``γ``, and differ only in their reward ``R_i``.

Beyond the paper, the transition kernel may also differ between agents (``P_i``, shape
``(N, S, A, S)``): *transition heterogeneity*, the paper's open question. Proposition 1 (the
federated objective is that of the average-reward MDP) then no longer holds, so
:meth:`FederatedTabularMDP.average_mdp` refuses and the ground truth is replaced by
:func:`sb3_fedpg.tabular.reference_optimum`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Absolute tolerance on probability vectors summing to one.
PROBABILITY_ATOL = 1e-8


@dataclass(frozen=True)
class FederatedTabularMDP:
    """
    A finite MDP family with shared (or per-agent) transitions and per-agent rewards.

    Arrays are converted to float64 and validated on construction; invalid inputs raise
    ``ValueError`` with a message naming the offending array.

    :param transitions: shared ``P[s, a, s']``, shape ``(S, A, S)``, or one kernel per agent
        ``P[i, s, a, s']``, shape ``(N, S, A, S)`` (transition heterogeneity); every
        ``P[..., s, a, :]`` is a probability vector
    :param rewards: ``R[i, s, a]`` for agent ``i``, shape ``(N, S, A)``
    :param initial_distribution: ``ρ``, shape ``(S,)``, a probability vector
    :param gamma: discount factor in ``(0, 1)``
    """

    transitions: np.ndarray
    rewards: np.ndarray
    initial_distribution: np.ndarray
    gamma: float

    def __post_init__(self) -> None:
        transitions = np.asarray(self.transitions, dtype=np.float64)
        rewards = np.asarray(self.rewards, dtype=np.float64)
        rho = np.asarray(self.initial_distribution, dtype=np.float64)
        if transitions.ndim not in (3, 4) or transitions.shape[-3] != transitions.shape[-1]:
            raise ValueError(f"transitions must have shape (S, A, S) or (N, S, A, S), got {transitions.shape}")
        n_states, n_actions = transitions.shape[-3:-1]
        if n_states < 1 or n_actions < 1:
            raise ValueError(f"transitions must have at least one state and one action, got shape {transitions.shape}")
        if rewards.ndim == 2:
            raise ValueError(
                f"rewards must have shape (N, S, A) = (N, {n_states}, {n_actions}), got {rewards.shape}; "
                "for a single agent pass rewards[None]"
            )
        if rewards.ndim != 3 or rewards.shape[1:] != (n_states, n_actions) or rewards.shape[0] < 1:
            raise ValueError(f"rewards must have shape (N, S, A) = (N, {n_states}, {n_actions}), got {rewards.shape}")
        if transitions.ndim == 4 and transitions.shape[0] != rewards.shape[0]:
            raise ValueError(
                f"per-agent transitions must have shape (N, S, A, S) with N = {rewards.shape[0]} (the number of "
                f"reward tables), got {transitions.shape}"
            )
        if rho.shape != (n_states,):
            raise ValueError(f"initial_distribution must have shape (S,) = ({n_states},), got {rho.shape}")
        for name, array in (("transitions", transitions), ("rewards", rewards), ("initial_distribution", rho)):
            if not np.all(np.isfinite(array)):
                raise ValueError(f"{name} contains NaN or infinite entries")
        if np.any(transitions < 0):
            index = tuple(np.argwhere(transitions < 0)[0])
            raise ValueError(f"transitions must be non-negative, got P[{', '.join(map(str, index))}] = {transitions[index]}")
        row_sums = transitions.sum(-1)
        bad = np.abs(row_sums - 1.0) > PROBABILITY_ATOL
        if np.any(bad):
            index = tuple(np.argwhere(bad)[0])
            raise ValueError(
                f"transitions rows must sum to 1: P[{', '.join(map(str, index))}, :] sums to {row_sums[index]:.6g} "
                f"({int(bad.sum())} bad rows)"
            )
        if np.any(rho < 0) or abs(rho.sum() - 1.0) > PROBABILITY_ATOL:
            raise ValueError(
                f"initial_distribution must be a probability vector, got sum {rho.sum():.6g}, min {rho.min():.6g}"
            )
        gamma = float(self.gamma)
        if not 0.0 < gamma < 1.0:
            raise ValueError(f"gamma must lie in the open interval (0, 1), got {self.gamma}")
        # frozen dataclass: store the validated, converted arrays
        object.__setattr__(self, "transitions", transitions)
        object.__setattr__(self, "rewards", rewards)
        object.__setattr__(self, "initial_distribution", rho)
        object.__setattr__(self, "gamma", gamma)

    @property
    def n_states(self) -> int:
        """Number of states ``S``."""
        return self.transitions.shape[-3]

    @property
    def n_actions(self) -> int:
        """Number of actions ``A``."""
        return self.transitions.shape[-2]

    @property
    def n_agents(self) -> int:
        """Number of agents ``N``."""
        return self.rewards.shape[0]

    @property
    def n_params(self) -> int:
        """Size ``S·A`` of the flattened tabular softmax parameter vector."""
        return self.n_states * self.n_actions

    @property
    def shared_transitions(self) -> bool:
        """``True`` when all agents share one kernel ``P`` (the paper's setting)."""
        return self.transitions.ndim == 3

    def agent_transitions(self, agent: int) -> np.ndarray:
        """
        Agent ``agent``'s transition kernel.

        :param agent: agent index
        :return: ``P_agent``, shape ``(S, A, S)`` (the shared ``P`` when transitions are shared)
        """
        if not 0 <= agent < self.n_agents:
            raise ValueError(f"agent must lie in [0, {self.n_agents}), got {agent}")
        return self.transitions if self.shared_transitions else self.transitions[agent]

    @property
    def mean_rewards(self) -> np.ndarray:
        """The average reward ``R̄ = (1/N) Σ_i R_i``, shape ``(S, A)`` (Proposition 1's average MDP)."""
        return self.rewards.mean(0)

    def average_mdp(self) -> FederatedTabularMDP:
        """
        The single-agent MDP whose reward is the agents' average reward.

        :return: an MDP with ``N = 1`` and reward ``R̄``
        :raises ValueError: when the agents have their own transitions (Proposition 1 needs a shared ``P``)
        """
        if not self.shared_transitions:
            raise ValueError(
                "average_mdp() needs shared transitions: with per-agent P_i the federated objective is not the "
                "objective of any average-reward MDP (Proposition 1 fails); use sb3_fedpg.tabular.reference_optimum"
            )
        return FederatedTabularMDP(self.transitions, self.mean_rewards[None], self.initial_distribution, self.gamma)

    def subset(self, agents: slice | list[int] | np.ndarray) -> FederatedTabularMDP:
        """
        The same MDP restricted to some agents.

        :param agents: indices (or a slice) of the agents to keep
        :return: an MDP with the selected agents' rewards (and transitions, if per-agent)
        """
        rewards = self.rewards[agents]
        transitions = self.transitions
        if not self.shared_transitions:
            transitions = transitions[agents]
            if transitions.ndim == 3:
                transitions = transitions[None]
        if rewards.ndim == 2:
            rewards = rewards[None]
        return FederatedTabularMDP(transitions, rewards, self.initial_distribution, self.gamma)
