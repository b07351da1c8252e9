"""
Reference optimum of the federated objective when the agents' transitions differ.

With per-agent kernels ``P_i`` the federated objective ``J̄(θ) = (1/N) Σ_i J_i(θ)`` (each
``J_i`` in its own MDP) is not the objective of any single MDP — the paper's Proposition 1
fails — so value iteration gives no ground truth, and ``J̄`` may have several local maxima.
The reference is therefore the **best of many centralised exact-gradient runs**:

1. ``n_starts`` starts: ``θ = 0`` (the algorithms' own start) and ``n_starts − 1`` random
   logits ``N(0, init_scale²)``;
2. from each, ``n_steps`` steps of gradient ascent on the exact mean gradient
   ``θ ← θ + η ∇J̄(θ)`` (centralised PG: Fast-FedPG with ``H = 1``), all starts and agents in
   one batched solve per step;
3. a refinement of each end point, so that the reference is accurate to far below the gaps it
   measures (plain PG converges like ``1/t`` for ``τ = 0`` and slowly on ill-conditioned
   soft optima): L-BFGS on ``J̄`` in the logits (scipy, exact gradients) and, for ``τ = 0``,
   also the greedy rounding of the end policy followed by a local search over deterministic
   policies (change one state's action while it improves ``J̄``). A deterministic policy is
   a limit of softmax policies, so its value is a supremum the algorithms can approach. The
   refinement never lowers a start's value (the best candidate is kept). With different
   ``P_i`` the maximiser need not be deterministic even for ``τ = 0`` (measured: one state
   with probabilities 0.17/0.83 on a Garnet instance), hence L-BFGS for ``τ = 0`` too.

The spread of the starts' final values (:attr:`ReferenceOptimum.spread`,
:attr:`ReferenceOptimum.n_at_best`) shows whether the maximum found is unique. With shared
transitions the result equals (soft) value iteration's ``J*`` (tested).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.optimize import minimize

from sb3_fedpg.groundtruth.runs import single_threaded_torch
from sb3_fedpg.tabular.exact import agents_at_shared_params, softmax_policy
from sb3_fedpg.tabular.mdp import FederatedTabularMDP

#: Starts whose value is within this of the best count as reaching it (:attr:`ReferenceOptimum.n_at_best`).
SAME_OPTIMUM_TOL = 1e-6


class ReferenceOptimum(NamedTuple):
    """
    Best value of ``J̄`` found by multi-start centralised exact policy gradient.

    :ivar objective: the reference ``J̄*`` (best over starts, after refinement)
    :ivar policy: the policy attaining it, shape ``(S, A)`` (deterministic for ``τ = 0``
        when the local search won)
    :ivar start_objectives: per start, the final value (after refinement), shape ``(n_starts,)``
    :ivar ascent_objectives: per start, the value after gradient ascent alone, shape ``(n_starts,)``
    :ivar initial_params: the starts, shape ``(n_starts, S, A)``
    :ivar n_steps: gradient-ascent steps per start
    :ivar learning_rate: gradient-ascent step size
    """

    objective: float
    policy: np.ndarray
    start_objectives: np.ndarray
    ascent_objectives: np.ndarray
    initial_params: np.ndarray
    n_steps: int
    learning_rate: float

    @property
    def spread(self) -> float:
        """Best minus worst final value over the starts (``≈ 0``: every start found the same maximum)."""
        return float(self.start_objectives.max() - self.start_objectives.min())

    @property
    def n_at_best(self) -> int:
        """Number of starts ending within :data:`SAME_OPTIMUM_TOL` of the best value."""
        return int((self.start_objectives >= self.objective - SAME_OPTIMUM_TOL).sum())


def _mean_objectives(mdp: FederatedTabularMDP, theta: np.ndarray, tau: float) -> np.ndarray:
    return agents_at_shared_params(mdp, theta, tau)[0].mean(1)


def _deterministic_logits(actions: np.ndarray, n_actions: int) -> np.ndarray:
    # logits of deterministic policies: 0 on the chosen action, −inf elsewhere (exact with τ = 0)
    return np.where(np.arange(n_actions) == actions[..., None], 0.0, -np.inf)


def _deterministic_local_search(mdp: FederatedTabularMDP, actions: np.ndarray, max_sweeps: int = 1000) -> tuple:
    """Best-improvement search over single-state action changes of a deterministic policy (τ = 0)."""
    n_states, n_actions = mdp.n_states, mdp.n_actions
    value = _mean_objectives(mdp, _deterministic_logits(actions, n_actions)[None], 0.0)[0]
    for _ in range(max_sweeps):
        # all S·A neighbours (one state's action replaced) in one batched evaluation
        neighbours = np.broadcast_to(actions, (n_states * n_actions, n_states)).copy()
        neighbours[np.arange(n_states * n_actions), np.repeat(np.arange(n_states), n_actions)] = np.tile(
            np.arange(n_actions), n_states
        )
        values = _mean_objectives(mdp, _deterministic_logits(neighbours, n_actions), 0.0)
        best = int(values.argmax())
        if values[best] <= value + 1e-15 * max(1.0, abs(value)):
            break
        actions, value = neighbours[best], values[best]
    return actions, float(value)


def _lbfgs(mdp: FederatedTabularMDP, theta: np.ndarray, tau: float, max_iter: int) -> tuple[np.ndarray, float]:
    shape = theta.shape

    def negative(x: np.ndarray) -> tuple[float, np.ndarray]:
        j, grads = agents_at_shared_params(mdp, x.reshape(1, *shape), tau, with_gradient=True)
        return -float(j.mean()), -grads[0].mean(0).ravel()

    result = minimize(
        negative, theta.ravel(), jac=True, method="L-BFGS-B", options={"maxiter": max_iter, "gtol": 1e-13, "ftol": 0.0}
    )
    return result.x.reshape(shape), -float(result.fun)


def local_maximum(
    mdp: FederatedTabularMDP, theta: np.ndarray, tau: float = 0.0, max_iter: int = 500
) -> tuple[float, np.ndarray]:
    """
    The local maximum of ``J̄`` reached by refining one parameter vector (the refinement step
    of :func:`reference_optimum`: L-BFGS and, for ``τ = 0``, deterministic local search from
    the greedy rounding; the start's own value if neither improves it).

    Used to split a run's gap ``J̄* − J̄(θ_T)`` into *not at a stationary point*
    (``J̄_loc − J̄(θ_T)``: bias or slow convergence) and *a worse local maximum* (``J̄* − J̄_loc``).

    :param mdp: the federated MDP
    :param theta: logits, shape ``(S, A)``
    :param tau: entropy temperature
    :param max_iter: L-BFGS iteration limit
    :return: ``(value, policy (S, A))``
    """
    theta = np.asarray(theta, dtype=np.float64).reshape(mdp.n_states, mdp.n_actions)
    with single_threaded_torch():
        value = float(_mean_objectives(mdp, theta[None], tau)[0])
        policy = softmax_policy(theta)
        refined_theta, refined = _lbfgs(mdp, theta, tau, max_iter)
        if refined > value:
            value, policy = refined, softmax_policy(refined_theta)
        if tau == 0:
            actions, refined = _deterministic_local_search(mdp, theta.argmax(-1))
            if refined > value:
                value, policy = refined, np.exp(_deterministic_logits(actions, mdp.n_actions))
    return value, policy


def reference_optimum(
    mdp: FederatedTabularMDP,
    tau: float = 0.0,
    n_starts: int = 20,
    n_steps: int = 1000,
    learning_rate: float = 1.0,
    init_scale: float = 1.0,
    refine: bool = True,
    refine_iterations: int = 500,
    seed: int | None = 0,
) -> ReferenceOptimum:
    """
    Reference optimum of ``J̄ = (1/N) Σ_i J_i``: the best of multi-start centralised exact PG.

    Works for shared and per-agent transitions (for shared ones, :func:`optimal_objective`
    is exact and cheaper). See the module docstring for the procedure.

    :param mdp: the federated MDP
    :param tau: entropy temperature
    :param n_starts: number of starts (the first is ``θ = 0``)
    :param n_steps: gradient-ascent steps per start (it selects the basin; the refinement then
        converges within it)
    :param learning_rate: gradient-ascent step size ``η``
    :param init_scale: standard deviation of the random initial logits
    :param refine: refine each end point (L-BFGS; for ``τ = 0`` also deterministic local search)
    :param refine_iterations: L-BFGS iteration limit
    :param seed: seed of the random starts
    :return: the :class:`ReferenceOptimum`
    """
    if tau < 0:
        raise ValueError(f"tau must be non-negative, got {tau}")
    if n_starts < 1 or n_steps < 0:
        raise ValueError(f"need n_starts >= 1 and n_steps >= 0, got {n_starts} and {n_steps}")
    shape = (mdp.n_states, mdp.n_actions)
    rng = np.random.default_rng(seed)
    starts = np.concatenate([np.zeros((1, *shape)), init_scale * rng.standard_normal((n_starts - 1, *shape))])
    theta = starts.copy()
    with single_threaded_torch():
        for _ in range(n_steps):
            theta = theta + learning_rate * agents_at_shared_params(mdp, theta, tau, with_gradient=True)[1].mean(1)
        ascent = _mean_objectives(mdp, theta, tau)
        final = ascent.copy()
        policies = softmax_policy(theta)
    if refine:
        for k in range(n_starts):
            value, policy = local_maximum(mdp, theta[k], tau, refine_iterations)
            if value > final[k]:
                final[k], policies[k] = value, policy
    best = int(final.argmax())
    return ReferenceOptimum(
        objective=float(final[best]),
        policy=policies[best],
        start_objectives=final,
        ascent_objectives=ascent,
        initial_params=starts,
        n_steps=n_steps,
        learning_rate=learning_rate,
    )
