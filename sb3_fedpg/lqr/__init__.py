"""
Exact-gradient federated LQR: shared linear dynamics, per-agent quadratic costs, Riccati ground truth.

See ``docs/benchmarks/lqr.md``. The federated runs (``sb3_fedpg.lqr.runs``, which use the torch-capable
``fedmath``) are imported on first use, so the problem, the exact formulas and the estimator
(NumPy and SciPy only) stay torch-free.
"""

import importlib
from typing import Any

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
from sb3_fedpg.lqr.sampled import LQRGPOMDPEstimator

_LAZY = ("LQRRunResult", "exact_federated_run", "exact_gradient_oracle", "federated_run", "sampled_federated_run")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module("sb3_fedpg.lqr.runs"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sb3_fedpg.lqr' has no attribute {name!r}")


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
