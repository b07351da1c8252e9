"""
FedSVRPG-M (Wang et al., ICML 2024) against Fast-FedPG and FedAvg-PG on tabular MDPs with exact ground truth.

Three measurements, all on the agents of ``tabular_speedup`` (a 16-agent Garnet population, S=10, A=4, whose average
reward is the same for every N):

* ``bias``: exact gradients, N = 8 heterogeneous agents, H = 10, started at the soft optimum of the average-reward
  MDP: the gap after ``--bias-rounds`` rounds (the fixed point's) of FedSVRPG-M (β = 0.5, 0.2), FedAvg-PG and
  Fast-FedPG for local step sizes η. FedSVRPG-M's fixed point with constant steps solves
  ``mean_i Σ_k (I + η H_i)^k ∇J_i(θ*) = 0`` to first order in η, FedAvg-PG's equation (the momentum is 0 there and
  β cancels): its heterogeneity bias is FedAvg-PG's, vanishing like η (gap like η²), not Fast-FedPG's 0.
* ``equal_samples``: truncated GPOMDP gradients (K, M), the three methods at the same η, H and rounds — the same
  environment steps (every round costs H batches per agent); error = mean gap over the last 20% of rounds, per seed.
* ``speedup``: FedSVRPG-M's error against N (homogeneous N = 1 … 16, heterogeneous N = 2 … 16), fitted log-log slope
  (the paper: linear speed-up, slope −1), with Fast-FedPG at the same settings for reference; also the slope of the
  noise part (error minus the same run's with the exact expected truncated gradients, per seed).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tabular_common as common
from tabular_common import np, plt
from tabular_speedup import fitted_slope, speedup_mdp

from sb3_fedpg.tabular import (
    exact_federated_run,
    exact_svrpgm_run,
    optimal_objective,
    sampled_federated_run,
    sampled_svrpgm_run,
)

NAME = "tabular_svrpgm"


def main(argv: list[str] | None = None) -> dict:
    """
    Run the benchmark.

    :param argv: command-line arguments (``sys.argv[1:]`` if ``None``)
    :return: the results written to JSON
    """
    p = common.parser(__doc__.strip().splitlines()[0])
    p.add_argument("--report", action="store_true", help="only write the tables (.md) from the JSON in --out-dir")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--agents", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    p.add_argument("--rounds", type=int, default=300)
    p.add_argument("--local-steps", type=int, default=10)
    p.add_argument("--learning-rate", type=float, default=0.2, help="η of the sampled runs")
    p.add_argument("--bias-learning-rates", type=float, nargs="+", default=[0.02, 0.05, 0.1, 0.3, 1.0])
    p.add_argument("--bias-rounds", type=int, default=2000)
    p.add_argument("--momentum", type=float, nargs="+", default=[0.5, 0.2], help="β values")
    p.add_argument("--horizon", type=int, default=40, help="truncation K")
    p.add_argument("--trajectories", type=int, default=2, help="M per agent per batch")
    p.add_argument("--gamma", type=float, default=0.8)
    p.add_argument("--tau", type=float, default=0.1)
    args = p.parse_args(argv)
    if args.report:
        import json

        data = json.loads((Path(args.out_dir) / f"{NAME}.json").read_text())
        (Path(args.out_dir) / f"{NAME}.md").write_text(markdown(data))
        return data
    if args.quick:
        args.seeds, args.agents, args.rounds, args.local_steps, args.horizon = 1, [1, 2, 4], 10, 2, 10
        args.bias_learning_rates, args.bias_rounds, args.momentum = [0.1, 0.3], 20, [0.5]
    window = max(1, args.rounds // 5)
    beta = args.momentum[0]
    data: dict = {"settings": vars(args) | {"out_dir": str(args.out_dir)}, "error_metric": "mean gap over last 20% of rounds"}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))

    # -- bias: exact gradients, stationary gaps against η
    mdp = speedup_mdp(8, 0, True, args.gamma)
    solution = optimal_objective(mdp, args.tau)
    reference, start = solution.objective, np.log(solution.policy)  # softmax(log π*) = π*
    h = args.local_steps
    bias: dict = {"learning_rates": args.bias_learning_rates}
    for name, run in [
        (
            "fast_fedpg",
            lambda eta: exact_federated_run(
                mdp, h, args.bias_rounds, eta, args.tau, theta0=start, reference_objective=reference
            ),
        ),
        (
            "fedavg_pg",
            lambda eta: exact_federated_run(
                mdp, h, args.bias_rounds, eta, args.tau, correction=False, theta0=start, reference_objective=reference
            ),
        ),
        *[
            (
                f"fedsvrpg_m_beta{b:g}",
                lambda eta, b=b: exact_svrpgm_run(
                    mdp, h, args.bias_rounds, eta, b, args.tau, theta0=start, reference_objective=reference
                ),
            )
            for b in args.momentum
        ],
    ]:
        bias[name] = [float(run(eta).gaps[-1]) for eta in args.bias_learning_rates]
        axes[0].plot(args.bias_learning_rates, common.positive(bias[name]), "o-", label=name)
    data["bias"] = bias
    axes[0].set_xscale("log")
    axes[0].set_yscale("log")
    axes[0].set_xlabel("local step size η")
    axes[0].set_ylabel(f"gap after {args.bias_rounds} rounds (exact gradients)")
    axes[0].set_title(f"heterogeneity bias, N=8, H={h}, τ={args.tau}", fontsize=9)
    axes[0].legend(fontsize=7)

    # -- equal samples: the three methods on the same budget
    sampled = dict(local_steps=h, n_rounds=args.rounds, learning_rate=args.learning_rate, horizon=args.horizon, tau=args.tau)
    methods = {
        "fast_fedpg": lambda m, s, ref: sampled_federated_run(
            m, **sampled, n_trajectories=args.trajectories, seed=1000 + s, reference_objective=ref
        ),
        "fedavg_pg": lambda m, s, ref: sampled_federated_run(
            m, **sampled, n_trajectories=args.trajectories, correction=False, seed=1000 + s, reference_objective=ref
        ),
        **{
            f"fedsvrpg_m_beta{b:g}": (
                lambda m, s, ref, b=b: sampled_svrpgm_run(
                    m, **sampled, n_trajectories=args.trajectories, momentum_coef=b, seed=1000 + s, reference_objective=ref
                )
            )
            for b in args.momentum
        },
    }
    equal: dict = {"n_agents": 8}
    for i, (name, run) in enumerate(methods.items()):
        errors, samples, curves = [], 0, []
        for s in range(args.seeds):
            m = speedup_mdp(8, s, True, args.gamma)
            result = run(m, s, optimal_objective(m, args.tau).objective)
            errors.append(float(result.gaps[-window:].mean()))
            samples = result.n_samples
            curves.append(result.gaps)
        equal[name] = {"error_per_seed": errors, "mean_error": float(np.mean(errors)), "env_steps": samples}
        axes[1].plot(common.positive(np.mean(curves, 0)), color=f"C{i}", label=f"{name}: {np.mean(errors):.2g}")
    data["equal_samples"] = equal
    axes[1].set_yscale("log")
    axes[1].set_xlabel("round (equal env steps per round)")
    axes[1].set_ylabel("gap, mean over seeds")
    axes[1].set_title(
        f"GPOMDP K={args.horizon} M={args.trajectories}, N=8 heterogeneous, η={args.learning_rate}, H={h}", fontsize=9
    )
    axes[1].legend(fontsize=7)

    # -- speed-up in N
    speedup: dict = {}
    for i, heterogeneous in enumerate((False, True)):
        kind = "heterogeneous" if heterogeneous else "homogeneous"
        agents = [n for n in args.agents if n > 1 or not heterogeneous]
        entry: dict = {"agents": agents}
        deterministic_runs = {
            "fast_fedpg": lambda m, ref: exact_federated_run(
                m, h, args.rounds, args.learning_rate, args.tau, truncation=args.horizon, reference_objective=ref
            ),
            f"fedsvrpg_m_beta{beta:g}": lambda m, ref: exact_svrpgm_run(
                m, h, args.rounds, args.learning_rate, beta, args.tau, truncation=args.horizon, reference_objective=ref
            ),
        }
        for j, name in enumerate(("fast_fedpg", f"fedsvrpg_m_beta{beta:g}")):
            errors = np.empty((len(agents), args.seeds))
            deterministic = np.empty((len(agents), args.seeds))
            for a, n in enumerate(agents):
                for s in range(args.seeds):
                    m = speedup_mdp(n, s, heterogeneous, args.gamma)
                    ref = optimal_objective(m, args.tau).objective
                    errors[a, s] = methods[name](m, s, ref).gaps[-window:].mean()
                    deterministic[a, s] = deterministic_runs[name](m, ref).gaps[-window:].mean()
            mean_error = errors.mean(1)
            noise = np.maximum(errors - deterministic, 1e-12).mean(1)
            slope = fitted_slope(np.array(agents), mean_error)
            entry[name] = {
                "error_per_seed": errors,
                "mean_error": mean_error,
                "deterministic_error": deterministic.mean(1),
                "slope": slope,
                "noise_slope": fitted_slope(np.array(agents), noise),
            }
            style = "o-" if j else "s:"
            axes[2].plot(agents, mean_error, style, color=f"C{i}", label=f"{kind} {name}: slope {slope:.2f}")
        speedup[kind] = entry
    data["speedup"] = speedup
    axes[2].set_xscale("log", base=2)
    axes[2].set_yscale("log")
    axes[2].set_xlabel("number of agents N")
    axes[2].set_ylabel("gap, mean of last 20% rounds")
    axes[2].set_title(f"speed-up in N, {args.seeds} seeds, β={beta} (theory: slope −1)", fontsize=9)
    axes[2].legend(fontsize=7)
    json_path, _ = common.save(NAME, data, fig, args.out_dir)
    import json

    (Path(args.out_dir) / f"{NAME}.md").write_text(markdown(json.loads(json_path.read_text())))
    return data


LABELS = {"fast_fedpg": "Fast-FedPG", "fedavg_pg": "FedAvg-PG"}


def _label(key: str) -> str:
    return LABELS.get(key, key.replace("fedsvrpg_m_beta", "FedSVRPG-M, β = "))


def _gap(value: float) -> str:
    return "< 1e-15" if abs(value) < 1e-15 else f"{value:.2g}"


def markdown(data: dict) -> str:
    """
    :param data: the benchmark's JSON payload
    :return: its tables (the docs' ``<!-- results:tabular_svrpgm -->`` block): the exact-gradient gap vs the local
        step, the gap at equal samples, the fitted slopes vs N
    """
    bias = data["bias"]
    rates = bias["learning_rates"]
    lines = [
        "Exact gradients, N = 8 heterogeneous agents, H = "
        f"{data['settings']['local_steps']}, started at the soft optimum; gap after {data['settings']['bias_rounds']:,} "
        "rounds:",
        "",
        "| local step η | " + " | ".join(f"{r:g}" for r in rates) + " |",
        "|---|" + "---:|" * len(rates),
    ]
    lines += [
        f"| {_label(k)} | " + " | ".join(_gap(v) for v in values) + " |" for k, values in bias.items() if k != "learning_rates"
    ]
    equal = data["equal_samples"]
    methods = [k for k, v in equal.items() if isinstance(v, dict)]
    steps = equal[methods[0]]["env_steps"]
    lines += [
        "",
        f"Sampled gradients at equal samples (N = {equal['n_agents']}, {steps:,} env steps per method, "
        f"{len(equal[methods[0]]['error_per_seed'])} seeds; {data['error_metric']}):",
        "",
        "| method | mean gap | per seed |",
        "|---|---:|---|",
    ]
    lines += [
        f"| {_label(m)} | {equal[m]['mean_error']:.2g} | " + ", ".join(f"{e:.2g}" for e in equal[m]["error_per_seed"]) + " |"
        for m in methods
    ]
    lines += ["", "Fitted log-log slope of the gap against N (theory: −1):", "", "| agents | method | raw gap | noise part |"]
    lines += ["|---|---|---:|---:|"]
    for kind, entry in data["speedup"].items():
        for m, value in entry.items():
            if isinstance(value, dict):
                lines.append(f"| {kind} | {_label(m)} | {value['slope']:.2f} | {value['noise_slope']:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    result = main()
    print("bias (exact):", {k: np.round(v, 6).tolist() for k, v in result["bias"].items()})
    print("equal samples:", {k: v["mean_error"] for k, v in result["equal_samples"].items() if isinstance(v, dict)})
    for kind in ("homogeneous", "heterogeneous"):
        for key, value in result["speedup"][kind].items():
            if isinstance(value, dict):
                print(kind, key, "slope", round(value["slope"], 3), "noise slope", round(value["noise_slope"], 3))
