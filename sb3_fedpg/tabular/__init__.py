"""
Exact-gradient tabular mode: federated finite MDPs, exact oracles, ground truth and runs.

See ``docs/benchmarks/tabular.md``.
"""

from sb3_fedpg.tabular.envs import TabularMDPEnv, make_agent_envs
from sb3_fedpg.tabular.exact import (
    OptimalSolution,
    PolicyEvaluation,
    agent_gradients,
    agent_objectives,
    agents_at_shared_params,
    evaluate_policies,
    global_gradient,
    global_objective,
    optimal_objective,
    softmax_policy,
    truncated_policy_gradient,
    value_iteration,
)
from sb3_fedpg.tabular.generators import garnet, gridworld
from sb3_fedpg.tabular.mdp import FederatedTabularMDP
from sb3_fedpg.tabular.reference import ReferenceOptimum, local_maximum, reference_optimum
from sb3_fedpg.tabular.runs import (
    TabularRunResult,
    exact_federated_run,
    exact_gradient_oracle,
    federated_run,
    sampled_federated_run,
)
from sb3_fedpg.tabular.sampled import GPOMDPEstimator

__all__ = [
    "FederatedTabularMDP",
    "GPOMDPEstimator",
    "OptimalSolution",
    "PolicyEvaluation",
    "ReferenceOptimum",
    "TabularMDPEnv",
    "TabularRunResult",
    "agent_gradients",
    "agent_objectives",
    "agents_at_shared_params",
    "evaluate_policies",
    "exact_federated_run",
    "exact_gradient_oracle",
    "federated_run",
    "garnet",
    "global_gradient",
    "global_objective",
    "gridworld",
    "local_maximum",
    "make_agent_envs",
    "optimal_objective",
    "reference_optimum",
    "sampled_federated_run",
    "softmax_policy",
    "truncated_policy_gradient",
    "value_iteration",
]
