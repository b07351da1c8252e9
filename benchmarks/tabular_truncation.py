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

import tabular_common as common
from tabular_common import np, plt

from sb3_fedpg.tabular import exact_federated_run, garnet, sampled_federated_run

NAME = "tabular_truncation"


def main(argv: list[str] | None = None) -> dict:
    """
    Run the benchmark.

    :param argv: command-line arguments (``sys.argv[1:]`` if ``None``)
    :return: the results written to JSON
    """
    p = common.parser(__doc__.strip().splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--horizons", type=int, nargs="+", default=[1, 2, 5, 10, 20, 40, 80, 160])
    p.add_argument("--sampled-horizons", type=int, nargs="+", default=[5, 10, 20, 40, 80])
    p.add_argument("--sampled-seeds", type=int, default=3)
    p.add_argument("--rounds", type=int, default=300)
    p.add_argument("--sampled-rounds", type=int, default=150)
    p.add_argument("--local-steps", type=int, default=10)
    p.add_argument("--learning-rate", type=float, default=1.0)
    p.add_argument("--sampled-learning-rate", type=float, default=0.5)
    p.add_argument("--trajectories", type=int, default=10)
    p.add_argument("--tau", type=float, default=0.1)
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.horizons, args.rounds, args.local_steps = 2, [2, 10], 20, 2
        args.sampled_horizons, args.sampled_seeds, args.sampled_rounds = [5], 1, 5
    gamma = 0.9
    expected: dict = {}
    for correction in (True, False):
        key = "fast_fedpg" if correction else "fedavg_pg"
        expected[key] = np.array(
            [
                [
                    exact_federated_run(
                        garnet(10, 4, 3, 8, 1.0, gamma, s),
                        args.local_steps,
                        args.rounds,
                        args.learning_rate,
                        args.tau,
                        correction,
                        truncation=k,
                    ).final_gap
                    for s in range(args.seeds)
                ]
                for k in args.horizons
            ]
        )
    exact_gap = {
        ("fast_fedpg" if c else "fedavg_pg"): np.array(
            [
                exact_federated_run(
                    garnet(10, 4, 3, 8, 1.0, gamma, s), args.local_steps, args.rounds, args.learning_rate, args.tau, c
                ).final_gap
                for s in range(args.seeds)
            ]
        )
        for c in (True, False)
    }
    sampled = np.array(
        [
            [
                sampled_federated_run(
                    garnet(10, 4, 3, 8, 1.0, gamma, s),
                    args.local_steps,
                    args.sampled_rounds,
                    args.sampled_learning_rate,
                    horizon=k,
                    n_trajectories=args.trajectories,
                    tau=args.tau,
                    seed=2000 + s,
                )
                .gaps[-max(1, args.sampled_rounds // 5) :]
                .mean()
                for s in range(args.sampled_seeds)
            ]
            for k in args.sampled_horizons
        ]
    )
    data = {
        "settings": vars(args) | {"out_dir": str(args.out_dir), "gamma": gamma},
        "expected_truncated_gradient_final_gap": expected,
        "exact_gradient_final_gap": exact_gap,
        "sampled_fast_fedpg_gap_last20pct": sampled,
    }
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ks = np.array(args.horizons)
    for key, color, style in (("fast_fedpg", "C0", "-o"), ("fedavg_pg", "C1", "--s")):
        label = f"{'Fast-FedPG' if key == 'fast_fedpg' else 'FedAvg-PG'}, expected truncated gradient"
        ax.plot(ks, common.positive(np.median(expected[key], 1)), style, color=color, label=label)
        ax.axhline(max(np.median(exact_gap[key]), 1e-16), color=color, lw=0.8, ls=":")
    ax.plot(
        args.sampled_horizons,
        common.positive(sampled.mean(1)),
        "-^",
        color="C2",
        label=f"Fast-FedPG, sampled GPOMDP M={args.trajectories} (η={args.sampled_learning_rate}, T={args.sampled_rounds})",
    )
    ref = np.median(expected["fast_fedpg"], 1)[0] * gamma ** (2 * (ks - ks[0]))
    ax.plot(ks, common.positive(ref), color="gray", lw=0.8, ls="--", label="∝ γ^{2K}")
    ax.set_yscale("log")
    ax.set_xscale("log")
    ax.set_ylim(bottom=1e-13)
    ax.set_xlabel("truncation horizon K")
    ax.set_ylabel(f"suboptimality after {args.rounds} rounds (median)")
    ax.set_title(f"Garnet S=10 A=4 N=8, γ={gamma}, τ={args.tau}, H={args.local_steps}\ndotted: exact gradients", fontsize=9)
    ax.legend(fontsize=7)
    common.save(NAME, data, fig, args.out_dir)
    return data


if __name__ == "__main__":
    result = main()
    for key, value in result["expected_truncated_gradient_final_gap"].items():
        print(key, np.array2string(np.median(value, 1), precision=3))
    print("sampled", np.array2string(result["sampled_fast_fedpg_gap_last20pct"].mean(1), precision=3))
