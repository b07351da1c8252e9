"""
Communication savings from H: rounds needed to reach a target suboptimality vs local steps.

Exact gradients on the acceptance Garnet (S=10, A=4, N=8, γ=0.9, full heterogeneity),
η = 1, τ = 0.1. A run that never reaches the target within the budget counts as "never".
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tabular_common as common
from tabular_common import np, plt

from sb3_fedpg.tabular import exact_federated_run, garnet

NAME = "tabular_communication"


def rounds_to_reach(gaps: np.ndarray, target: float) -> float:
    """
    First round at which the gap is at most ``target``.

    :param gaps: gaps for rounds ``0 … T``
    :param target: the target suboptimality
    :return: the round, or ``inf`` if never reached
    """
    hits = np.flatnonzero(gaps <= target)
    return float(hits[0]) if hits.size else float("inf")


def main(argv: list[str] | None = None) -> dict:
    """
    Run the benchmark.

    :param argv: command-line arguments (``sys.argv[1:]`` if ``None``)
    :return: the results written to JSON
    """
    p = common.parser(__doc__.strip().splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--max-rounds", type=int, default=2000)
    p.add_argument("--local-steps", type=int, nargs="+", default=[1, 2, 5, 10, 20])
    p.add_argument("--targets", type=float, nargs="+", default=[1e-2, 1e-4])
    p.add_argument("--tau", type=float, default=0.1)
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.max_rounds, args.local_steps, args.targets = 1, 40, [1, 10], [1e-1]
    rounds: dict = {}
    for h in args.local_steps:
        for correction in (True, False):
            gaps = [
                exact_federated_run(garnet(10, 4, 3, 8, 1.0, 0.9, s), h, args.max_rounds, 1.0, args.tau, correction).gaps
                for s in range(args.seeds)
            ]
            for target in args.targets:
                key = f"target={target:g}/{'fast_fedpg' if correction else 'fedavg_pg'}"
                rounds.setdefault(key, []).append([rounds_to_reach(g, target) for g in gaps])
    rounds = {k: np.array(v) for k, v in rounds.items()}
    data = {
        "local_steps": args.local_steps,
        "targets": args.targets,
        "tau": args.tau,
        "max_rounds": args.max_rounds,
        "seeds": list(range(args.seeds)),
        "rounds_to_target_per_H_and_seed": rounds,
        "median_rounds_to_target": {k: np.median(v, 1) for k, v in rounds.items()},
    }
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for i, target in enumerate(args.targets):
        for correction, style in ((True, "-o"), (False, "--s")):
            key = f"target={target:g}/{'fast_fedpg' if correction else 'fedavg_pg'}"
            med = np.median(rounds[key], 1)
            reached = np.isfinite(med)
            label = f"{'Fast-FedPG' if correction else 'FedAvg-PG'}, gap ≤ {target:g}"
            ax.plot(np.array(args.local_steps)[reached], med[reached], style, color=f"C{i}", label=label)
            never = np.array(args.local_steps)[~reached]
            if never.size:
                ax.plot(never, np.full(never.size, args.max_rounds), "x", color=f"C{i}", ms=10)
    ax.plot(args.local_steps, np.full(len(args.local_steps), args.max_rounds), ":", color="gray", label="never (× at budget)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("local steps per round H")
    ax.set_ylabel("rounds to reach the target (median)")
    ax.set_title(f"Garnet S=10 A=4 N=8, exact gradients, τ={args.tau}, η=1\n{args.seeds} seeds")
    ax.legend(fontsize=8)
    common.save(NAME, data, fig, args.out_dir)
    return data


if __name__ == "__main__":
    result = main()
    for key, value in result["median_rounds_to_target"].items():
        print(key, value)
