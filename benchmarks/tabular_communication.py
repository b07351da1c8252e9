"""
Communication savings from H: rounds needed to reach a target suboptimality vs local steps.

Exact gradients on the acceptance Garnet (S=10, A=4, N=8, γ=0.9, full heterogeneity),
η = 1, τ = 0.1. A run that never reaches the target within the budget counts as "never".
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from harness import Context, Report, Run, Settings, Study

from sb3_fedpg.tabular import exact_federated_run, garnet

ALGOS = {True: "fast_fedpg", False: "fedavg_pg"}


def rounds_to_reach(gaps: np.ndarray, target: float) -> float:
    """
    First round at which the gap is at most ``target``.

    :param gaps: gaps for rounds ``0 … T``
    :param target: the target suboptimality
    :return: the round, or ``inf`` if never reached
    """
    hits = np.flatnonzero(gaps <= target)
    return float(hits[0]) if hits.size else float("inf")


def rounds_to_targets(seed: int, local_steps: int, max_rounds: int, tau: float, correction: bool, targets: list) -> list:
    """:return: the first round each target is reached in one exact run (``inf``: never within ``max_rounds``)"""
    gaps = exact_federated_run(garnet(10, 4, 3, 8, 1.0, 0.9, seed), local_steps, max_rounds, 1.0, tau, correction).gaps
    return [rounds_to_reach(gaps, target) for target in targets]


def run(s: Settings, h: int, correction: bool, seed: int) -> Run:
    config = dict(seed=seed, local_steps=h, max_rounds=s["max_rounds"], tau=s["tau"], correction=correction)
    return Run(rounds_to_targets, config | {"targets": s["targets"]}, f"H{h}_{ALGOS[correction]}_s{seed}")


def runs(s: Settings) -> list[Run]:
    return [run(s, h, c, i) for h in s["local_steps"] for c in ALGOS for i in range(s["seeds"])]


def report(ctx: Context) -> Report:
    import matplotlib.pyplot as plt

    s = ctx.settings
    rounds = {
        f"target={target:g}/{algo}": np.array(
            [[ctx.results[run(s, h, c, i)][j] for i in range(s["seeds"])] for h in s["local_steps"]]
        )
        for c, algo in ALGOS.items()
        for j, target in enumerate(s["targets"])
    }
    data = {
        "local_steps": s["local_steps"],
        "targets": s["targets"],
        "tau": s["tau"],
        "max_rounds": s["max_rounds"],
        "seeds": list(range(s["seeds"])),
        "rounds_to_target_per_H_and_seed": rounds,
        "median_rounds_to_target": {k: np.median(v, 1) for k, v in rounds.items()},
    }
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for i, target in enumerate(s.targets):
        for correction, style in ((True, "-o"), (False, "--s")):
            key = f"target={target:g}/{'fast_fedpg' if correction else 'fedavg_pg'}"
            med = np.median(rounds[key], 1)
            reached = np.isfinite(med)
            label = f"{'Fast-FedPG' if correction else 'FedAvg-PG'}, gap ≤ {target:g}"
            ax.plot(np.array(s.local_steps)[reached], med[reached], style, color=f"C{i}", label=label)
            never = np.array(s.local_steps)[~reached]
            if never.size:
                ax.plot(never, np.full(never.size, s.max_rounds), "x", color=f"C{i}", ms=10)
    ax.plot(s.local_steps, np.full(len(s.local_steps), s.max_rounds), ":", color="gray", label="never (× at budget)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("local steps per round H")
    ax.set_ylabel("rounds to reach the target (median)")
    ax.set_title(f"Garnet S=10 A=4 N=8, exact gradients, τ={s.tau}, η=1\n{s.seeds} seeds")
    ax.legend(fontsize=8)
    return Report(data, fig)


STUDY = Study(
    "tabular_communication",
    __doc__,
    dict(seeds=5, max_rounds=2000, local_steps=[1, 2, 5, 10, 20], targets=[1e-2, 1e-4], tau=0.1),
    runs,
    report,
    quick=dict(seeds=1, max_rounds=40, local_steps=[1, 10], targets=[1e-1]),
)
main = STUDY.main

if __name__ == "__main__":
    main()
