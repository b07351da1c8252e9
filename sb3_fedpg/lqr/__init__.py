"""
Exact-gradient federated LQR: shared linear dynamics, per-agent quadratic costs, Riccati ground truth.

See ``docs/lqr.md``.
"""

from sb3_fedpg.lqr.exact import (
    GainEvaluation,
    LQRSolution,
    UnstableGainError,
    agent_costs,
    agent_gradients,
    agent_optimal_gains,
    global_cost,
    global_gradient,
    optimal_gain,
    solve_lyapunov,
    solve_riccati,
    truncated_agent_gradients,
)
from sb3_fedpg.lqr.problem import FederatedLQR, random_lqr
from sb3_fedpg.lqr.runs import (
    LQRRunResult,
    exact_federated_run,
    exact_gradient_oracle,
    federated_run,
    sampled_federated_run,
)
from sb3_fedpg.lqr.sampled import LQRGPOMDPEstimator

__all__ = [
    "FederatedLQR",
    "GainEvaluation",
    "LQRGPOMDPEstimator",
    "LQRRunResult",
    "LQRSolution",
    "UnstableGainError",
    "agent_costs",
    "agent_gradients",
    "agent_optimal_gains",
    "exact_federated_run",
    "exact_gradient_oracle",
    "federated_run",
    "global_cost",
    "global_gradient",
    "optimal_gain",
    "random_lqr",
    "sampled_federated_run",
    "solve_lyapunov",
    "solve_riccati",
    "truncated_agent_gradients",
]
