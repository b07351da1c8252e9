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

import tabular_common as common
from tabular_common import np, plt

from sb3_fedpg.common.plotting import Series, aggregate_values, draw_panel
from sb3_fedpg.tabular import exact_federated_run, garnet

NAME = "tabular_bias"


def main(argv: list[str] | None = None) -> dict:
    """
    Run the benchmark.

    :param argv: command-line arguments (``sys.argv[1:]`` if ``None``)
    :return: the results written to JSON
    """
    p = common.parser(__doc__.strip().splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--rounds", type=int, default=300)
    p.add_argument("--local-steps", type=int, nargs="+", default=[1, 5, 10, 20])
    p.add_argument("--taus", type=float, nargs="+", default=[0.0, 0.1])
    p.add_argument("--timing-rounds", type=int, default=1000)
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.rounds, args.local_steps, args.timing_rounds = 2, 30, [1, 10], 5
    mdp_kwargs = dict(n_states=10, n_actions=4, branching=3, n_agents=8, heterogeneity=1.0, gamma=0.9)
    curves: dict = {}
    for tau in args.taus:
        for h in args.local_steps:
            for correction in (True, False):
                key = f"tau={tau}/H={h}/{'fast_fedpg' if correction else 'fedavg_pg'}"
                curves[key] = np.stack(
                    [
                        exact_federated_run(garnet(**mdp_kwargs, seed=s), h, args.rounds, 1.0, tau, correction).gaps
                        for s in range(args.seeds)
                    ]
                )
    acceptance = {}
    if 10 in args.local_steps and set(args.taus) >= {0.0, 0.1}:
        final = {k: v[:, -1] for k, v in curves.items()}
        fast1, avg1 = final["tau=0.1/H=10/fast_fedpg"], final["tau=0.1/H=10/fedavg_pg"]
        fast0, avg0 = final["tau=0.0/H=10/fast_fedpg"], final["tau=0.0/H=10/fedavg_pg"]
        acceptance = {
            "setting": dict(mdp_kwargs, rounds=args.rounds, local_steps=10, learning_rate=1.0, theta0=0.0),
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
    big = garnet(100, 4, 3, n_agents=16, seed=0)
    timing = exact_federated_run(big, 10, args.timing_rounds, 1.0)
    data = {
        "rounds": args.rounds,
        "seeds": list(range(args.seeds)),
        "garnet": mdp_kwargs,
        "final_gap_per_seed": {k: v[:, -1] for k, v in curves.items()},
        "median_gap_curve": {k: np.median(v, 0) for k, v in curves.items()},
        "acceptance": acceptance,
        "timing": {
            "rounds": args.timing_rounds,
            "n_agents": 16,
            "local_steps": 10,
            "n_states": 100,
            "seconds": timing.wall_time,
        },
    }
    fig, axes = plt.subplots(1, len(args.taus), figsize=(6 * len(args.taus), 4.5), squeeze=False)
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(args.local_steps)))
    for ax, tau in zip(axes[0], args.taus, strict=True):
        series = []
        for color, h in zip(colors, args.local_steps, strict=True):
            for correction, style in ((True, "-"), (False, "--")):
                gaps = common.positive(curves[f"tau={tau}/H={h}/{'fast_fedpg' if correction else 'fedavg_pg'}"])
                curve = aggregate_values(np.arange(gaps.shape[1]), gaps, "minmax", "median")
                series.append(Series(f"{'Fast-FedPG' if correction else 'FedAvg-PG'} H={h}", curve, color, style))
        title = f"Garnet S=10 A=4 N=8, exact gradients, τ={tau}\nmedian and range over {args.seeds} seeds"
        draw_panel(ax, series, title, "suboptimality J* − J(θ̄)", "communication round", steps=False, yscale="log", legend=None)
        ax.legend(fontsize=7, ncol=2)
    common.save(NAME, data, fig, args.out_dir)
    return data


if __name__ == "__main__":
    result = main()
    for key, value in result["acceptance"].get("per_seed", {}).items():
        print(key, np.array2string(np.asarray(value), precision=3))
    print("1,000-round timing (N=16, H=10, S=100):", f"{result['timing']['seconds']:.1f} s")
