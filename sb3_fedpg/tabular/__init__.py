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
    exact_svrpgm_oracle,
    exact_svrpgm_run,
    federated_run,
    run_rounds,
    sampled_federated_run,
    sampled_svrpgm_oracle,
    sampled_svrpgm_run,
    svrpgm_run,
)
from sb3_fedpg.tabular.sampled import GPOMDPEstimator, Trajectories

__all__ = [
    "FederatedTabularMDP",
    "GPOMDPEstimator",
    "OptimalSolution",
    "PolicyEvaluation",
    "ReferenceOptimum",
    "TabularMDPEnv",
    "TabularRunResult",
    "Trajectories",
    "agent_gradients",
    "agent_objectives",
    "agents_at_shared_params",
    "evaluate_policies",
    "exact_federated_run",
    "exact_gradient_oracle",
    "exact_svrpgm_oracle",
    "exact_svrpgm_run",
    "federated_run",
    "garnet",
    "global_gradient",
    "global_objective",
    "gridworld",
    "local_maximum",
    "make_agent_envs",
    "optimal_objective",
    "reference_optimum",
    "run_rounds",
    "sampled_federated_run",
    "sampled_svrpgm_oracle",
    "sampled_svrpgm_run",
    "softmax_policy",
    "svrpgm_run",
    "truncated_policy_gradient",
    "value_iteration",
]
