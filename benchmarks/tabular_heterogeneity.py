"""
Heterogeneity sweep: final suboptimality vs the Garnet heterogeneity knob, both algorithms.

Exact gradients, H = 10, 300 rounds, η = 1, τ ∈ {0, 0.1}; the dynamics and each agent's own
reward table stay fixed while the knob mixes the common and the own tables.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from harness import Context, Report, Run, Settings, Study, positive

from sb3_fedpg.common.plotting import Series, aggregate_values, draw_panel
from sb3_fedpg.tabular import exact_federated_run, garnet

ALGOS = {True: "fast_fedpg", False: "fedavg_pg"}


def final_gap(level: float, seed: int, tau: float, correction: bool, local_steps: int, rounds: int) -> float:
    """:return: the final gap of one exact run on the Garnet of ``seed`` at heterogeneity ``level``"""
    mdp = garnet(10, 4, 3, 8, level, 0.9, seed)
    return exact_federated_run(mdp, local_steps, rounds, 1.0, tau, correction).final_gap


def run(s: Settings, tau: float, correction: bool, level: float, seed: int) -> Run:
    config = dict(level=level, seed=seed, tau=tau, correction=correction, local_steps=s["local_steps"], rounds=s["rounds"])
    return Run(final_gap, config, f"tau{tau}_{ALGOS[correction]}_h{level}_s{seed}")


def runs(s: Settings) -> list[Run]:
    return [run(s, t, c, x, i) for t in s["taus"] for c in ALGOS for x in s["levels"] for i in range(s["seeds"])]


def report(ctx: Context) -> Report:
    import matplotlib.pyplot as plt

    s = ctx.settings
    final = {
        f"tau={tau}/{algo}": np.array([[ctx.results[run(s, tau, c, x, i)] for i in range(s["seeds"])] for x in s["levels"]])
        for tau in s["taus"]
        for c, algo in ALGOS.items()
    }
    data = {
        "levels": s["levels"],
        "rounds": s["rounds"],
        "local_steps": s["local_steps"],
        "seeds": list(range(s["seeds"])),
        "final_gap_per_level_and_seed": final,
        "median_final_gap": {k: np.median(v, 1) for k, v in final.items()},
    }
    fig, ax = plt.subplots(figsize=(6, 4.5))
    series = []
    for (key, gaps), color in zip(final.items(), ["C0", "C1", "C2", "C3"], strict=False):
        label = key.replace("fast_fedpg", "Fast-FedPG").replace("fedavg_pg", "FedAvg-PG").replace("/", ", ")
        curve = aggregate_values(s["levels"], positive(gaps).T, "minmax", "median")
        series.append(Series(label, curve, color, "-" if "fast" in key else "--", "o" if "fast" in key else "s"))
    title = f"Garnet S=10 A=4 N=8, exact gradients, H={s['local_steps']}\nmedian and range over {s['seeds']} seeds"
    xlabel = "heterogeneity (0 = identical rewards, 1 = independent)"
    draw_panel(ax, series, title, f"suboptimality after {s['rounds']} rounds", xlabel, steps=False, yscale="log")
    return Report(data, fig)


STUDY = Study(
    "tabular_heterogeneity",
    __doc__,
    dict(seeds=5, rounds=300, local_steps=10, levels=[0.0, 0.1, 0.25, 0.5, 0.75, 1.0], taus=[0.0, 0.1]),
    runs,
    report,
    quick=dict(seeds=2, rounds=20, levels=[0.0, 1.0]),
)
main = STUDY.main

if __name__ == "__main__":
    main()
