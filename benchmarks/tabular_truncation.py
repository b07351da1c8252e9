"""
Truncation: final suboptimality vs the GPOMDP horizon K (bias O(γ^K)).

Both algorithms with the exact expectation of the K-truncated GPOMDP gradient (truncation
bias only, no noise), and Fast-FedPG with sampled GPOMDP gradients (bias plus noise).
Garnet S=10, A=4, N=8, γ=0.9, full heterogeneity, H=10, τ=0.1.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from harness import Context, Report, Run, Settings, Study, positive

from sb3_fedpg.tabular import exact_federated_run, garnet, sampled_federated_run

ALGOS = {True: "fast_fedpg", False: "fedavg_pg"}


def final_gap(
    seed: int,
    gamma: float,
    local_steps: int,
    rounds: int,
    learning_rate: float,
    tau: float,
    correction: bool,
    truncation: int | None,
) -> float:
    """:return: the final gap of one run with the exact (``truncation=None``) or expected K-truncated gradient"""
    mdp = garnet(10, 4, 3, 8, 1.0, gamma, seed)
    return exact_federated_run(mdp, local_steps, rounds, learning_rate, tau, correction, truncation=truncation).final_gap


def sampled_gap(
    seed: int, gamma: float, local_steps: int, rounds: int, learning_rate: float, horizon: int, trajectories: int, tau: float
) -> float:
    """:return: the mean gap over the last 20 % of rounds of Fast-FedPG with sampled GPOMDP gradients"""
    mdp = garnet(10, 4, 3, 8, 1.0, gamma, seed)
    run = sampled_federated_run(mdp, local_steps, rounds, learning_rate, horizon, trajectories, tau, seed=2000 + seed)
    return run.gaps[-max(1, rounds // 5) :].mean()


def expected(s: Settings, correction: bool, k: int | None, seed: int) -> Run:
    config = dict(seed=seed, gamma=s.gamma, local_steps=s.local_steps, rounds=s.rounds, learning_rate=s.learning_rate)
    config |= dict(tau=s.tau, correction=correction, truncation=k)
    return Run(final_gap, config, f"{ALGOS[correction]}_K{k or 'exact'}_s{seed}")


def sampled(s: Settings, k: int, seed: int) -> Run:
    config = dict(seed=seed, gamma=s.gamma, local_steps=s.local_steps, rounds=s.sampled_rounds)
    config |= dict(learning_rate=s.sampled_learning_rate, horizon=k, trajectories=s.trajectories, tau=s.tau)
    return Run(sampled_gap, config, f"sampled_K{k}_s{seed}")


def runs(s: Settings) -> list[Run]:
    truncated = [expected(s, c, k, i) for c in ALGOS for k in s.horizons for i in range(s.seeds)]
    exact = [expected(s, c, None, i) for c in ALGOS for i in range(s.seeds)]
    return truncated + exact + [sampled(s, k, i) for k in s.sampled_horizons for i in range(s.sampled_seeds)]


def report(ctx: Context) -> Report:
    import matplotlib.pyplot as plt

    s, r, seeds = ctx.settings, ctx.results, range(ctx.settings.seeds)
    truncated = {a: np.array([[r[expected(s, c, k, i)] for i in seeds] for k in s.horizons]) for c, a in ALGOS.items()}
    exact_gap = {a: np.array([r[expected(s, c, None, i)] for i in seeds]) for c, a in ALGOS.items()}
    noisy = np.array([[r[sampled(s, k, i)] for i in range(s.sampled_seeds)] for k in s.sampled_horizons])
    data = {
        "settings": s,
        "expected_truncated_gradient_final_gap": truncated,
        "exact_gradient_final_gap": exact_gap,
        "sampled_fast_fedpg_gap_last20pct": noisy,
    }
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ks = np.array(s.horizons)
    for key, color, style in (("fast_fedpg", "C0", "-o"), ("fedavg_pg", "C1", "--s")):
        label = f"{'Fast-FedPG' if key == 'fast_fedpg' else 'FedAvg-PG'}, expected truncated gradient"
        ax.plot(ks, positive(np.median(truncated[key], 1)), style, color=color, label=label)
        ax.axhline(max(np.median(exact_gap[key]), 1e-16), color=color, lw=0.8, ls=":")
    label = f"Fast-FedPG, sampled GPOMDP M={s.trajectories} (η={s.sampled_learning_rate}, T={s.sampled_rounds})"
    ax.plot(s.sampled_horizons, positive(noisy.mean(1)), "-^", color="C2", label=label)
    ref = np.median(truncated["fast_fedpg"], 1)[0] * s.gamma ** (2 * (ks - ks[0]))
    ax.plot(ks, positive(ref), color="gray", lw=0.8, ls="--", label="∝ γ^{2K}")
    ax.set_yscale("log")
    ax.set_xscale("log")
    ax.set_ylim(bottom=1e-13)
    ax.set_xlabel("truncation horizon K")
    ax.set_ylabel(f"suboptimality after {s.rounds} rounds (median)")
    ax.set_title(f"Garnet S=10 A=4 N=8, γ={s.gamma}, τ={s.tau}, H={s.local_steps}\ndotted: exact gradients", fontsize=9)
    ax.legend(fontsize=7)
    return Report(data, fig)


STUDY = Study(
    "tabular_truncation",
    __doc__,
    dict(seeds=5, horizons=[1, 2, 5, 10, 20, 40, 80, 160], sampled_horizons=[5, 10, 20, 40, 80], sampled_seeds=3, rounds=300)
    | dict(sampled_rounds=150, local_steps=10, learning_rate=1.0, sampled_learning_rate=0.5, trajectories=10, tau=0.1)
    | dict(gamma=0.9),
    runs,
    report,
    quick=dict(seeds=2, horizons=[2, 10], rounds=20, local_steps=2, sampled_horizons=[5], sampled_seeds=1, sampled_rounds=5),
)
main = STUDY.main

if __name__ == "__main__":
    main()
