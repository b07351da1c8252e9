"""
Claim 2: linear speed-up in N with noisy truncated GPOMDP gradients (Fast-FedPG).

Fixed T, H, η, K and M; N ∈ {1, 2, 4, 8, 16}; error = suboptimality averaged over the last
20% of rounds (the stationary error of constant-step SGD, ∝ η σ² / N) and over seeds.

To compare the *same* objective across N (so that only the number of agents changes),
every N uses the same dynamics and the same average reward R̄ (the mean of a 16-agent
Garnet population):

* ``homogeneous``: all N agents have reward R̄ (pure noise averaging, N = 1 … 16);
* ``heterogeneous``: agent i has R̄ + δ_i with zero-mean deviations δ_i taken from the
  population and rescaled by sqrt(N/(N−1)) so that each agent's deviation has the same
  spread for every N (N = 2 … 16; N = 1 cannot be heterogeneous).

The deterministic part of the error (same run with the exact expected truncated
gradient) is recorded too, to show that the noise dominates.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tabular_common as common
from tabular_common import np, plt

from sb3_fedpg.tabular import FederatedTabularMDP, exact_federated_run, garnet, sampled_federated_run

NAME = "tabular_speedup"


def speedup_mdp(n_agents: int, seed: int, heterogeneous: bool, gamma: float) -> FederatedTabularMDP:
    """
    Agents with the same average reward for every ``N`` (see the module docstring).

    :param n_agents: ``N``
    :param seed: Garnet seed
    :param heterogeneous: agents differ (``N ≥ 2``) or all have the average reward
    :param gamma: discount factor
    :return: the federated MDP
    """
    population = garnet(10, 4, 3, n_agents=16, heterogeneity=1.0, gamma=gamma, seed=seed)
    mean_reward = population.rewards.mean(0)
    if heterogeneous and n_agents > 1:
        own = population.rewards[:n_agents]
        rewards = mean_reward + (own - own.mean(0)) * np.sqrt(n_agents / (n_agents - 1))
    else:
        rewards = np.repeat(mean_reward[None], n_agents, 0)
    return FederatedTabularMDP(population.transitions, rewards, population.initial_distribution, gamma)


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
    p.add_argument("--rounds", type=int, default=300)
    p.add_argument("--local-steps", type=int, default=10)
    p.add_argument("--learning-rate", type=float, default=0.5)
    p.add_argument("--horizon", type=int, default=40, help="truncation K")
    p.add_argument("--trajectories", type=int, default=2, help="M per agent per batch")
    p.add_argument("--gamma", type=float, default=0.8)
    p.add_argument("--tau", type=float, default=0.1)
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.agents, args.rounds, args.local_steps, args.horizon = 2, [1, 2, 4], 10, 2, 10
    window = max(1, args.rounds // 5)
    data: dict = {"settings": vars(args) | {"out_dir": str(args.out_dir)}, "error_metric": "mean gap over last 20% of rounds"}
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for i, heterogeneous in enumerate((False, True)):
        name = "heterogeneous" if heterogeneous else "homogeneous"
        agents = [n for n in args.agents if n > 1 or not heterogeneous]
        errors = np.empty((len(agents), args.seeds))
        deterministic = np.empty((len(agents), args.seeds))
        for a, n in enumerate(agents):
            for s in range(args.seeds):
                mdp = speedup_mdp(n, s, heterogeneous, args.gamma)
                common_kwargs = dict(local_steps=args.local_steps, n_rounds=args.rounds, learning_rate=args.learning_rate)
                run = sampled_federated_run(
                    mdp, **common_kwargs, horizon=args.horizon, n_trajectories=args.trajectories, tau=args.tau, seed=1000 + s
                )
                errors[a, s] = run.gaps[-window:].mean()
                exact = exact_federated_run(mdp, **common_kwargs, tau=args.tau, truncation=args.horizon)
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
        ax.plot(agents, deterministic.mean(1), ":", color=color, alpha=0.7)
        fit = np.exp(np.polyval(np.polyfit(np.log(agents), np.log(mean_error), 1), np.log(agents)))
        ax.plot(agents, fit, "--", color=color, alpha=0.5)
    ax.plot([], [], ":", color="gray", label="same runs with exact expected gradients")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("number of agents N")
    ax.set_ylabel("suboptimality, mean of last 20% rounds")
    ax.set_title(
        f"Fast-FedPG, GPOMDP K={args.horizon} M={args.trajectories}, T={args.rounds} H={args.local_steps} "
        f"η={args.learning_rate}\nτ={args.tau}, γ={args.gamma}, {args.seeds} seeds (theory: slope −1)",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    common.save(NAME, data, fig, args.out_dir)
    return data


if __name__ == "__main__":
    result = main()
    for key in ("homogeneous", "heterogeneous"):
        print(key, "slope", round(result[key]["slope"], 3), "errors", np.array2string(result[key]["mean_error"], precision=3))
