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
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from harness import Context, Report, Run, Settings, Study, positive

from sb3_fedpg.tabular import FederatedTabularMDP, exact_federated_run, garnet, sampled_federated_run

KINDS = {False: "homogeneous", True: "heterogeneous"}


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
    gamma: float,
    tau: float,
) -> float:
    """:return: the mean gap over the last 20 % of rounds, sampled GPOMDP or its exact expectation (``trajectories=None``)"""
    mdp = speedup_mdp(n_agents, seed, heterogeneous, gamma)
    if sampled:
        assert trajectories is not None
        run = sampled_federated_run(mdp, local_steps, rounds, learning_rate, horizon, trajectories, tau, seed=1000 + seed)
    else:
        run = exact_federated_run(mdp, local_steps, rounds, learning_rate, tau, truncation=horizon)
    return run.gaps[-max(1, rounds // 5) :].mean()


def run(s: Settings, sampled: bool, n: int, seed: int, heterogeneous: bool) -> Run:
    config = dict(n_agents=n, seed=seed, heterogeneous=heterogeneous, sampled=sampled, rounds=s.rounds)
    config |= dict(local_steps=s.local_steps, learning_rate=s.learning_rate, horizon=s.horizon)
    config |= dict(trajectories=s.trajectories if sampled else None, gamma=s.gamma, tau=s.tau)
    return Run(error, config, f"{KINDS[heterogeneous]}_{'sampled' if sampled else 'exact'}_N{n}_s{seed}")


def agents_of(s: Settings, heterogeneous: bool) -> list[int]:
    return [n for n in s.agents if n > 1 or not heterogeneous]


def runs_of(run: Callable[..., Run]) -> Callable[[Settings], list[Run]]:
    """:return: the runs of a speed-up study whose runs are ``run(settings, sampled, N, seed, heterogeneous)``"""

    def runs(s: Settings) -> list[Run]:
        return [run(s, p, n, i, h) for h in KINDS for n in agents_of(s, h) for i in range(s.seeds) for p in (True, False)]

    return runs


def speedup_report(ctx: Context, run: Callable[..., Run], metric: str, ylabel: str, title: str) -> Report:
    """
    The JSON and figure of a speed-up study (this one and ``lqr_speedup``).

    :param ctx: the results
    :param run: ``run(settings, sampled, N, seed, heterogeneous)``
    :param metric: what the error is
    :param ylabel: the figure's y label
    :param title: the figure's title
    :return: the report
    """
    import matplotlib.pyplot as plt

    s = ctx.settings
    data: dict = {"settings": s, "error_metric": metric}
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for i, (heterogeneous, name) in enumerate(KINDS.items()):
        agents = agents_of(s, heterogeneous)
        errors, deterministic = (
            np.array([[ctx.results[run(s, p, n, seed, heterogeneous)] for seed in range(s.seeds)] for n in agents])
            for p in (True, False)
        )
        mean_error = errors.mean(1)
        slope = fitted_slope(np.array(agents), mean_error)
        data[name] = {
            "agents": agents,
            "error_per_seed": errors,
            "mean_error": mean_error,
            "deterministic_error": deterministic.mean(1),
            "slope": slope,
            "slope_per_seed": [fitted_slope(np.array(agents), errors[:, seed]) for seed in range(s.seeds)],
        }
        color = f"C{i}"
        ax.errorbar(agents, mean_error, yerr=errors.std(1) / np.sqrt(s.seeds), fmt="o-", color=color, capsize=3)
        ax.plot([], [], "o-", color=color, label=f"{name} agents: slope {slope:.2f}")
        ax.plot(agents, positive(deterministic.mean(1)), ":", color=color, alpha=0.7)
        fit = np.exp(np.polyval(np.polyfit(np.log(agents), np.log(mean_error), 1), np.log(agents)))
        ax.plot(agents, fit, "--", color=color, alpha=0.5)
    ax.plot([], [], ":", color="gray", label="same runs with exact expected gradients")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("number of agents N")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return Report(data, fig)


def report(ctx: Context) -> Report:
    s = ctx.settings
    title = (
        f"Fast-FedPG, GPOMDP K={s.horizon} M={s.trajectories}, T={s.rounds} H={s.local_steps} "
        f"η={s.learning_rate}\nτ={s.tau}, γ={s.gamma}, {s.seeds} seeds (theory: slope −1)"
    )
    return speedup_report(ctx, run, "mean gap over last 20% of rounds", "suboptimality, mean of last 20% rounds", title)


STUDY = Study(
    "tabular_speedup",
    __doc__,
    dict(seeds=5, agents=[1, 2, 4, 8, 16], rounds=300, local_steps=10, learning_rate=0.5, horizon=40, trajectories=2)
    | dict(gamma=0.8, tau=0.1),
    runs_of(run),
    report,
    quick=dict(seeds=2, agents=[1, 2, 4], rounds=10, local_steps=2, horizon=10),
)
main = STUDY.main

if __name__ == "__main__":
    main()
