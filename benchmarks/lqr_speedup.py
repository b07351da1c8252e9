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

import tabular_common as common
from tabular_common import np, plt

from sb3_fedpg.lqr import FederatedLQR, exact_federated_run, random_lqr, sampled_federated_run, solve_riccati

NAME = "lqr_speedup"
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


def fitted_slope(agents: np.ndarray, errors: np.ndarray) -> float:
    """
    Least-squares slope of log(error) vs log(N).

    :param agents: the N values
    :param errors: the errors
    :return: the slope (theory: −1)
    """
    return float(np.polyfit(np.log(agents), np.log(errors), 1)[0])


def main(argv: list[str] | None = None) -> dict:
    """
    Run the benchmark.

    :param argv: command-line arguments (``sys.argv[1:]`` if ``None``)
    :return: the results written to JSON
    """
    p = common.parser(__doc__.strip().splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--agents", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--rounds", type=int, default=200)
    p.add_argument("--local-steps", type=int, default=5)
    p.add_argument("--learning-rate", type=float, default=0.005)
    p.add_argument("--horizon", type=int, default=30, help="truncation K")
    p.add_argument("--trajectories", type=int, default=50, help="M per agent per batch")
    p.add_argument("--exploration-std", type=float, default=0.5)
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.agents, args.rounds, args.local_steps, args.horizon, args.trajectories = 1, [1, 2, 4], 5, 2, 10, 10
    window = max(1, args.rounds // 5)
    data: dict = {
        "settings": vars(args) | {"out_dir": str(args.out_dir)},
        "error_metric": "mean relative gap over last 20% of rounds",
    }
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for i, heterogeneous in enumerate((False, True)):
        name = "heterogeneous" if heterogeneous else "homogeneous"
        agents = [n for n in args.agents if n > 1 or not heterogeneous]
        errors = np.empty((len(agents), args.seeds))
        deterministic = np.empty((len(agents), args.seeds))
        for a, n in enumerate(agents):
            for s in range(args.seeds):
                problem = speedup_problem(n, s, heterogeneous)
                K0 = solve_riccati(problem, np.eye(problem.n_states), np.eye(problem.n_inputs)).gain
                kwargs = dict(local_steps=args.local_steps, n_rounds=args.rounds, learning_rate=args.learning_rate, K0=K0)
                run = sampled_federated_run(
                    problem,
                    **kwargs,
                    horizon=args.horizon,
                    n_trajectories=args.trajectories,
                    exploration_std=args.exploration_std,
                    seed=1000 + s,
                )
                errors[a, s] = run.gaps[-window:].mean()
                exact = exact_federated_run(problem, **kwargs, truncation=args.horizon, exploration_std=args.exploration_std)
                deterministic[a, s] = exact.gaps[-window:].mean()
        mean_error = errors.mean(1)
        slope = fitted_slope(np.array(agents), mean_error)
        data[name] = {
            "agents": agents,
            "error_per_seed": errors,
            "mean_error": mean_error,
            "deterministic_error": deterministic.mean(1),
            "slope": slope,
            "slope_per_seed": [fitted_slope(np.array(agents), errors[:, s]) for s in range(args.seeds)],
        }
        color = f"C{i}"
        ax.errorbar(agents, mean_error, yerr=errors.std(1) / np.sqrt(args.seeds), fmt="o-", color=color, capsize=3)
        ax.plot([], [], "o-", color=color, label=f"{name} agents: slope {slope:.2f}")
        ax.plot(agents, common.positive(deterministic.mean(1)), ":", color=color, alpha=0.7)
        fit = np.exp(np.polyval(np.polyfit(np.log(agents), np.log(mean_error), 1), np.log(agents)))
        ax.plot(agents, fit, "--", color=color, alpha=0.5)
    ax.plot([], [], ":", color="gray", label="same runs with exact expected gradients")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("number of agents N")
    ax.set_ylabel("relative gap, mean of last 20% rounds")
    ax.set_title(
        f"LQR, Fast-FedPG, GPOMDP K={args.horizon} M={args.trajectories} σ={args.exploration_std}, T={args.rounds} "
        f"H={args.local_steps} η={args.learning_rate}\n{args.seeds} instances (theory: slope −1)",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    common.save(NAME, data, fig, args.out_dir)
    (Path(args.out_dir) / f"{NAME}.md").write_text(report(common._jsonable(data)))
    return data


def report(data: dict) -> str:
    """
    The markdown table of the benchmark (generated; nothing typed by hand).

    :param data: the results (JSON form)
    :return: markdown
    """
    s = data["settings"]
    lines = [
        "| agents | "
        + " | ".join(f"N = {n}" for n in data["homogeneous"]["agents"])
        + " | fitted slope | slope per instance |"
    ]
    lines.append("|---|" + "---:|" * (len(data["homogeneous"]["agents"]) + 1) + "---|")
    columns = data["homogeneous"]["agents"]
    for kind in ("homogeneous", "heterogeneous"):
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
        f"Mean relative gap over the last 20% of {s['rounds']} rounds, averaged over {s['seeds']} instances; GPOMDP with "
        f"K = {s['horizon']}, M = {s['trajectories']}, σ = {s['exploration_std']}, "
        f"H = {s['local_steps']}, η = {s['learning_rate']}.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    result = main()
    print(report(common._jsonable(result)))
