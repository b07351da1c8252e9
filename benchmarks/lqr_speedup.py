"""
Federated LQR with sampled GPOMDP gradients: linear speed-up in the number of agents N (Fast-FedPG).

Fixed T, H, η, horizon K, trajectories M and exploration σ; N ∈ {1, 2, 4, 8, 16}; error = relative
gap (C̄(K̄_t) − C̄*)/C̄* averaged over the last 20% of rounds (the stationary error of constant-step
SGD, ∝ η σ²/N) and over seeds — the method of ``tabular_speedup.py``.

Every N optimises the *same* average cost (Q̄, R̄) of a 16-agent ``random_lqr`` population (h = 1):

* ``homogeneous``: all N agents have (Q̄, R̄) (pure noise averaging, N = 1 … 16);
* ``heterogeneous``: the 16 agents are split into N equal groups, agent i has its group's mean
  (Q_i, R_i) — still rotated apart, same mean for every N (N = 2 … 16).

The same runs with the exact expected truncated gradient (no noise) give the deterministic part
of the error, to show that the noise dominates.

Runs start from K0 = the discounted LQR gain of (I, I) (a stabilising gain of another cost), not
from K0 = 0: at K0 = 0 the gradient is large and one agent's GPOMDP estimate with M = 50 is off by
~80% of it (up to ~180%), and the frozen anchor noise pushes an agent for H − 1 steps, which took
an agent's local gain out of the stable set in round 0 (the guard stopped the run). The stationary
error, which is what is measured, does not depend on the start.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from harness import Context, Report, Run, Settings, Study
from tabular_speedup import KINDS, runs_of, speedup_report

from sb3_fedpg.lqr import FederatedLQR, exact_federated_run, random_lqr, sampled_federated_run, solve_riccati

POPULATION = 16


def speedup_problem(n_agents: int, seed: int, heterogeneous: bool) -> FederatedLQR:
    """
    Agents with the same average cost for every ``N`` (see the module docstring).

    :param n_agents: ``N`` (a divisor of 16)
    :param seed: instance
    :param heterogeneous: group means of the population, or all agents at the population mean
    :return: the federated LQR
    """
    pop = random_lqr(n_agents=POPULATION, seed=seed, heterogeneity=1.0)
    if POPULATION % n_agents:
        raise ValueError(f"N must divide {POPULATION}, got {n_agents}")
    if heterogeneous:
        Q = pop.Q.reshape(n_agents, -1, *pop.Q.shape[1:]).mean(1)
        R = pop.R.reshape(n_agents, -1, *pop.R.shape[1:]).mean(1)
    else:
        Q, R = np.repeat(pop.mean_Q[None], n_agents, 0), np.repeat(pop.mean_R[None], n_agents, 0)
    return FederatedLQR(pop.A, pop.B, Q, R, pop.initial_covariance, pop.noise_covariance, pop.gamma, pop.initial_gain)


def error(
    n_agents: int,
    seed: int,
    heterogeneous: bool,
    sampled: bool,
    rounds: int,
    local_steps: int,
    learning_rate: float,
    horizon: int,
    trajectories: int | None,
    exploration_std: float,
) -> float:
    """:return: the mean relative gap over the last 20 % of rounds, sampled GPOMDP or its exact expectation"""
    problem = speedup_problem(n_agents, seed, heterogeneous)
    K0 = solve_riccati(problem, np.eye(problem.n_states), np.eye(problem.n_inputs)).gain
    kwargs = dict(local_steps=local_steps, n_rounds=rounds, learning_rate=learning_rate, K0=K0)
    kwargs |= dict(exploration_std=exploration_std)
    if sampled:
        run = sampled_federated_run(problem, **kwargs, horizon=horizon, n_trajectories=trajectories, seed=1000 + seed)
    else:
        run = exact_federated_run(problem, **kwargs, truncation=horizon)
    return run.gaps[-max(1, rounds // 5) :].mean()


def run(s: Settings, sampled: bool, n: int, seed: int, heterogeneous: bool) -> Run:
    config = dict(n_agents=n, seed=seed, heterogeneous=heterogeneous, sampled=sampled, rounds=s.rounds)
    config |= dict(local_steps=s.local_steps, learning_rate=s.learning_rate, horizon=s.horizon)
    config |= dict(trajectories=s.trajectories if sampled else None, exploration_std=s.exploration_std)
    return Run(error, config, f"{KINDS[heterogeneous]}_{'sampled' if sampled else 'exact'}_N{n}_s{seed}")


def report(ctx: Context) -> Report:
    s = ctx.settings
    title = (
        f"LQR, Fast-FedPG, GPOMDP K={s.horizon} M={s.trajectories} σ={s.exploration_std}, T={s.rounds} "
        f"H={s.local_steps} η={s.learning_rate}\n{s.seeds} instances (theory: slope −1)"
    )
    out = speedup_report(ctx, run, "mean relative gap over last 20% of rounds", "relative gap, mean of last 20% rounds", title)
    data = out.data
    columns = data["homogeneous"]["agents"]
    lines = ["| agents | " + " | ".join(f"N = {n}" for n in columns) + " | fitted slope | slope per instance |"]
    lines.append("|---|" + "---:|" * (len(columns) + 1) + "---|")
    for kind in KINDS.values():
        block = data[kind]
        noisy = dict(zip(block["agents"], block["mean_error"], strict=True))
        exact = dict(zip(block["agents"], block["deterministic_error"], strict=True))
        per_seed = ", ".join(f"{x:.2f}" for x in block["slope_per_seed"])
        cells = [f"{noisy[n]:.2g}" if n in noisy else "—" for n in columns]
        lines.append(f"| {kind} | " + " | ".join(cells) + f" | **{block['slope']:.2f}** | {per_seed} |")
        cells = [f"{exact[n]:.1g}" if n in exact else "—" for n in columns]
        lines.append(f"| {kind}, noise-free (exact truncated gradient) | " + " | ".join(cells) + " | | |")
    lines += [
        "",
        f"Mean relative gap over the last 20% of {s.rounds} rounds, averaged over {s.seeds} instances; GPOMDP with "
        f"K = {s.horizon}, M = {s.trajectories}, σ = {s.exploration_std}, H = {s.local_steps}, η = {s.learning_rate}.",
    ]
    out.markdown = "\n".join(lines) + "\n"
    return out


STUDY = Study(
    "lqr_speedup",
    __doc__,
    dict(seeds=5, agents=[1, 2, 4, 8, 16], rounds=200, local_steps=5, learning_rate=0.005, horizon=30, trajectories=50)
    | dict(exploration_std=0.5),
    runs_of(run),
    report,
    quick=dict(seeds=1, agents=[1, 2, 4], rounds=5, local_steps=2, horizon=10, trajectories=10),
)
main = STUDY.main

if __name__ == "__main__":
    main()
