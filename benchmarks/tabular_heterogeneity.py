"""
Heterogeneity sweep: final suboptimality vs the Garnet heterogeneity knob, both algorithms.

Exact gradients, H = 10, 300 rounds, η = 1, τ ∈ {0, 0.1}; the dynamics and each agent's own
reward table stay fixed while the knob mixes the common and the own tables.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tabular_common as common
from tabular_common import np, plt

from sb3_fedpg.common.plotting import Series, aggregate_values, draw_panel
from sb3_fedpg.tabular import exact_federated_run, garnet

NAME = "tabular_heterogeneity"


def main(argv: list[str] | None = None) -> dict:
    """
    Run the benchmark.

    :param argv: command-line arguments (``sys.argv[1:]`` if ``None``)
    :return: the results written to JSON
    """
    p = common.parser(__doc__.strip().splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--rounds", type=int, default=300)
    p.add_argument("--local-steps", type=int, default=10)
    p.add_argument("--levels", type=float, nargs="+", default=[0.0, 0.1, 0.25, 0.5, 0.75, 1.0])
    p.add_argument("--taus", type=float, nargs="+", default=[0.0, 0.1])
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.rounds, args.levels = 2, 20, [0.0, 1.0]
    final: dict = {}
    for tau in args.taus:
        for correction in (True, False):
            key = f"tau={tau}/{'fast_fedpg' if correction else 'fedavg_pg'}"
            final[key] = np.array(
                [
                    [
                        exact_federated_run(
                            garnet(10, 4, 3, 8, level, 0.9, seed), args.local_steps, args.rounds, 1.0, tau, correction
                        ).final_gap
                        for seed in range(args.seeds)
                    ]
                    for level in args.levels
                ]
            )
    data = {
        "levels": args.levels,
        "rounds": args.rounds,
        "local_steps": args.local_steps,
        "seeds": list(range(args.seeds)),
        "final_gap_per_level_and_seed": final,
        "median_final_gap": {k: np.median(v, 1) for k, v in final.items()},
    }
    fig, ax = plt.subplots(figsize=(6, 4.5))
    series = []
    for (key, gaps), color in zip(final.items(), ["C0", "C1", "C2", "C3"], strict=False):
        label = key.replace("fast_fedpg", "Fast-FedPG").replace("fedavg_pg", "FedAvg-PG").replace("/", ", ")
        curve = aggregate_values(args.levels, common.positive(gaps).T, "minmax", "median")
        series.append(Series(label, curve, color, "-" if "fast" in key else "--", "o" if "fast" in key else "s"))
    title = f"Garnet S=10 A=4 N=8, exact gradients, H={args.local_steps}\nmedian and range over {args.seeds} seeds"
    xlabel = "heterogeneity (0 = identical rewards, 1 = independent)"
    draw_panel(ax, series, title, f"suboptimality after {args.rounds} rounds", xlabel, steps=False, yscale="log")
    common.save(NAME, data, fig, args.out_dir)
    return data


if __name__ == "__main__":
    result = main()
    for key, value in result["median_final_gap"].items():
        print(key, np.array2string(np.asarray(value), precision=3))
