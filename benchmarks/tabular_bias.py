"""
Claim 1: no heterogeneity bias. Exact gradients on Garnet MDPs; Fast-FedPG vs FedAvg-PG.

Suboptimality ``J* − J(θ̄_t)`` vs rounds for H ∈ {1, 5, 10, 20}, τ = 0 and τ = 0.1, over
several seeds, plus the acceptance table (H = 10, 300 rounds) and the timing of 1,000
rounds with N = 16, H = 10, S = 100.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from harness import Context, Report, Run, Settings, Study, positive

from sb3_fedpg.common.plotting import Series, aggregate_values, draw_panel
from sb3_fedpg.tabular import exact_federated_run, garnet

GARNET = dict(n_states=10, n_actions=4, branching=3, n_agents=8, heterogeneity=1.0, gamma=0.9)
ALGOS = {True: "fast_fedpg", False: "fedavg_pg"}


def gaps(seed: int, local_steps: int, rounds: int, tau: float, correction: bool) -> np.ndarray:
    """:return: the gaps of rounds ``0 … rounds`` of one exact run, η = 1, on the Garnet of ``seed``"""
    return exact_federated_run(garnet(**GARNET, seed=seed), local_steps, rounds, 1.0, tau, correction).gaps


def seconds(rounds: int) -> float:
    """:return: the wall time of ``rounds`` exact rounds with N = 16, H = 10, S = 100 (a measurement)"""
    return exact_federated_run(garnet(100, 4, 3, n_agents=16, seed=0), 10, rounds, 1.0).wall_time


def curve(s: Settings, tau: float, h: int, correction: bool, seed: int) -> Run:
    config = dict(seed=seed, local_steps=h, rounds=s["rounds"], tau=tau, correction=correction)
    return Run(gaps, config, f"tau{tau}_H{h}_{ALGOS[correction]}_s{seed}")


def runs(s: Settings) -> list[Run]:
    curves = [curve(s, t, h, c, i) for t in s["taus"] for h in s["local_steps"] for c in ALGOS for i in range(s["seeds"])]
    return [*curves, Run(seconds, {"rounds": s["timing_rounds"]}, "timing")]


def report(ctx: Context) -> Report:
    import matplotlib.pyplot as plt

    s, seeds = ctx.settings, range(ctx.settings["seeds"])
    curves = {
        f"tau={t}/H={h}/{a}": np.stack([ctx.results[curve(s, t, h, c, i)] for i in seeds])
        for t in s["taus"]
        for h in s["local_steps"]
        for c, a in ALGOS.items()
    }
    acceptance = {}
    if 10 in s["local_steps"] and set(s["taus"]) >= {0.0, 0.1}:
        final = {k: v[:, -1] for k, v in curves.items()}
        fast1, avg1 = final["tau=0.1/H=10/fast_fedpg"], final["tau=0.1/H=10/fedavg_pg"]
        fast0, avg0 = final["tau=0.0/H=10/fast_fedpg"], final["tau=0.0/H=10/fedavg_pg"]
        acceptance = {
            "setting": dict(GARNET, rounds=s["rounds"], local_steps=10, learning_rate=1.0, theta0=0.0),
            "per_seed": {
                "tau=0.1 fast_fedpg gap (<= 1e-8)": fast1,
                "tau=0.1 fedavg_pg gap (>= 1e-2)": avg1,
                "tau=0 fast_fedpg gap (<= 5e-3)": fast0,
                "tau=0 fedavg_pg gap (> 0.1)": avg0,
            },
            "met_per_seed": {
                "tau=0.1 fast_fedpg <= 1e-8": fast1 <= 1e-8,
                "tau=0.1 fedavg_pg >= 1e-2": avg1 >= 1e-2,
                "tau=0 fast_fedpg <= 5e-3": fast0 <= 5e-3,
                "tau=0 fedavg_pg > 0.1": avg0 > 0.1,
            },
        }
    data = {
        "rounds": s["rounds"],
        "seeds": list(seeds),
        "garnet": GARNET,
        "final_gap_per_seed": {k: v[:, -1] for k, v in curves.items()},
        "median_gap_curve": {k: np.median(v, 0) for k, v in curves.items()},
        "acceptance": acceptance,
        "timing": {
            "rounds": s["timing_rounds"],
            "n_agents": 16,
            "local_steps": 10,
            "n_states": 100,
            "seconds": ctx.results[Run(seconds, {"rounds": s["timing_rounds"]})],
        },
    }
    fig, axes = plt.subplots(1, len(s["taus"]), figsize=(6 * len(s["taus"]), 4.5), squeeze=False)
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(s["local_steps"])))
    for ax, tau in zip(axes[0], s["taus"], strict=True):
        series = []
        for color, h in zip(colors, s["local_steps"], strict=True):
            for correction, style in ((True, "-"), (False, "--")):
                values = positive(curves[f"tau={tau}/H={h}/{ALGOS[correction]}"])
                aggregated = aggregate_values(np.arange(values.shape[1]), values, "minmax", "median")
                series.append(Series(f"{'Fast-FedPG' if correction else 'FedAvg-PG'} H={h}", aggregated, color, style))
        title = f"Garnet S=10 A=4 N=8, exact gradients, τ={tau}\nmedian and range over {s['seeds']} seeds"
        draw_panel(ax, series, title, "suboptimality J* − J(θ̄)", "communication round", steps=False, yscale="log", legend=None)
        ax.legend(fontsize=7, ncol=2)
    return Report(data, fig)


STUDY = Study(
    "tabular_bias",
    __doc__,
    dict(seeds=5, rounds=300, local_steps=[1, 5, 10, 20], taus=[0.0, 0.1], timing_rounds=1000),
    runs,
    report,
    quick=dict(seeds=2, rounds=30, local_steps=[1, 10], timing_rounds=5),
)
main = STUDY.main

if __name__ == "__main__":
    main()
