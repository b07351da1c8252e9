"""
Federated LQR with exact gradients: Fast-FedPG vs FedAvg-PG against the Riccati optimum.

Random instances of ``random_lqr`` (n_x = 4, n_u = 2, N = 8 agents, γ = 0.9, ρ(A) = 0.8, costs rotated
apart by the heterogeneity h), K0 = 0, η = 0.02. Relative gap (C̄(K̄_t) − C̄*)/C̄* vs rounds for
H ∈ {1, 2, 5, 10, 20} (h = 1), final gap vs H and vs h (H = 10), and the acceptance checks:
finite-difference error of the exact gradient, centralised exact PG vs the Riccati cost, and
Fast-FedPG / FedAvg-PG (H = 10) after 50 rounds on five instances.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tabular_common as common
from tabular_common import np, plt

from sb3_fedpg.common.plotting import Series, aggregate_values, draw_panel
from sb3_fedpg.lqr import (
    UnstableGainError,
    agent_costs,
    agent_gradients,
    exact_federated_run,
    global_cost,
    global_gradient,
    optimal_gain,
    random_lqr,
)

NAME = "lqr_bias"
ALGOS = {"fast_fedpg": True, "fedavg_pg": False}


def gaps_or_nan(problem, local_steps: int, rounds: int, eta: float, correction: bool) -> np.ndarray:
    """Relative gaps of one run; all NaN when the guard stops it (a gain destabilised the loop)."""
    try:
        return exact_federated_run(problem, local_steps, rounds, eta, correction=correction).gaps
    except UnstableGainError:
        return np.full(rounds + 1, np.nan)


def fd_error(problem, seed: int) -> float:
    """Largest relative error (per agent, Frobenius) of the exact gradient vs central differences."""
    rng = np.random.default_rng(seed)
    K = optimal_gain(problem).gain + 0.1 * rng.normal(size=(problem.n_agents, problem.n_inputs, problem.n_states))
    grad = agent_gradients(problem, K)
    fd = np.zeros_like(grad)
    eps = 1e-6
    for a in range(problem.n_inputs):
        for b in range(problem.n_states):
            E = np.zeros_like(K)
            E[:, a, b] = eps
            fd[:, a, b] = (agent_costs(problem, K + E) - agent_costs(problem, K - E)) / (2 * eps)
    return float((np.linalg.norm(fd - grad, axis=(1, 2)) / np.linalg.norm(grad, axis=(1, 2))).max())


def centralised_gap(problem, eta: float, steps: int) -> float:
    """Exact centralised PG (gradient descent on C̄) from K0: relative gap to the Riccati cost."""
    K = problem.initial_gain.copy()
    for _ in range(steps):
        K = K - eta * global_gradient(problem, K)
    return float((global_cost(problem, K) - optimal_gain(problem).cost) / optimal_gain(problem).cost)


def main(argv: list[str] | None = None) -> dict:
    """
    Run the benchmark.

    :param argv: command-line arguments (``sys.argv[1:]`` if ``None``)
    :return: the results written to JSON
    """
    p = common.parser(__doc__.strip().splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--rounds", type=int, default=100)
    p.add_argument("--acceptance-rounds", type=int, default=50)
    p.add_argument("--learning-rate", type=float, default=0.02)
    p.add_argument("--local-steps", type=int, nargs="+", default=[1, 2, 5, 10, 20])
    p.add_argument("--heterogeneity", type=float, nargs="+", default=[0.0, 0.25, 0.5, 1.0, 1.5, 2.0])
    p.add_argument("--centralised-steps", type=int, default=1500)
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.rounds, args.acceptance_rounds, args.centralised_steps = 1, 5, 5, 20
        args.local_steps, args.heterogeneity = [1, 10], [0.0, 1.0]
    seeds, eta = list(range(args.seeds)), args.learning_rate
    curves = {}
    for h in args.local_steps:
        for algo, correction in ALGOS.items():
            curves[f"H={h}/{algo}"] = np.stack(
                [gaps_or_nan(random_lqr(seed=s), h, args.rounds, eta, correction) for s in seeds]
            )
    het_final = {algo: np.empty((len(args.heterogeneity), len(seeds))) for algo in ALGOS}
    for j, level in enumerate(args.heterogeneity):
        for algo, correction in ALGOS.items():
            for s in seeds:
                het_final[algo][j, s] = gaps_or_nan(random_lqr(seed=s, heterogeneity=level), 10, args.rounds, eta, correction)[
                    -1
                ]
    acceptance: dict = {}
    if 10 in args.local_steps:
        r = args.acceptance_rounds
        fast, avg = curves["H=10/fast_fedpg"][:, r], curves["H=10/fedavg_pg"][:, r]
        fd = np.array([fd_error(random_lqr(seed=s), s) for s in seeds])
        central = np.array([centralised_gap(random_lqr(seed=s), eta, args.centralised_steps) for s in seeds])
        acceptance = {
            "setting": dict(random_lqr_defaults=True, heterogeneity=1.0, learning_rate=eta, local_steps=10, rounds=r, K0=0),
            "per_seed": {
                "exact gradient vs finite differences, relative error (<= 1e-6)": fd,
                f"centralised exact PG, {args.centralised_steps} steps: relative gap to Riccati cost (<= 1e-8)": central,
                "Fast-FedPG relative gap (<= 1e-8)": fast,
                "FedAvg-PG H=10 relative gap (>= 1e-3)": avg,
            },
            "met_per_seed": {
                "fd": fd <= 1e-6,
                "riccati": np.abs(central) <= 1e-8,
                "fast": fast <= 1e-8,
                "fedavg": avg >= 1e-3,
            },
        }
    data = {
        "settings": vars(args) | {"out_dir": str(args.out_dir)},
        "seeds": seeds,
        "median_gap_curve": {k: np.nanmedian(v, 0) if np.isfinite(v).any() else v[0] for k, v in curves.items()},
        "final_gap_per_seed": {k: v[:, -1] for k, v in curves.items()},
        "heterogeneity": {"levels": args.heterogeneity, "local_steps": 10, "final_gap_per_seed": het_final},
        "acceptance": acceptance,
        "note": "NaN = the run was stopped by the guard (a local or global gain destabilised the closed loop)",
    }
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(args.local_steps)))
    names = {"fast_fedpg": "Fast-FedPG", "fedavg_pg": "FedAvg-PG"}
    series = []
    for color, h in zip(colors, args.local_steps, strict=True):
        for algo, style in (("fast_fedpg", "-"), ("fedavg_pg", "--")):
            gaps = common.positive(curves[f"H={h}/{algo}"])
            curve = aggregate_values(np.arange(gaps.shape[1]), gaps, "none", "median", skip_nan=True)
            series.append(Series(f"{names[algo]} H={h}", curve, color, style))
    title = f"LQR n_x=4 n_u=2 N=8, h=1, exact gradients, η={eta}\nmedian over {len(seeds)} instances"
    ylabel = "relative gap (C̄(K) − C̄*) / C̄*"
    draw_panel(axes[0], series, title, ylabel, "communication round", steps=False, fontsize=9, yscale="log", legend=None)
    axes[0].legend(fontsize=7, ncol=2)
    for ax, xs, finals, xlabel in (
        (
            axes[1],
            args.local_steps,
            {a: np.stack([curves[f"H={h}/{a}"][:, -1] for h in args.local_steps]) for a in ALGOS},
            "local steps H",
        ),
        (axes[2], args.heterogeneity, het_final, "heterogeneity h (H = 10)"),
    ):
        series = []
        for algo, (style, marker) in (("fast_fedpg", ("-", "o")), ("fedavg_pg", ("--", "s"))):
            curve = aggregate_values(xs, common.positive(finals[algo]).T, "minmax", "median", skip_nan=True)
            series.append(Series(names[algo], curve, None, style, marker))
        title = (
            "median and range over instances (1e-16 = round-off);\n'k/5 stopped': runs the guard stopped (gain destabilised)"
        )
        draw_panel(
            ax, series, title, f"relative gap after {args.rounds} rounds", xlabel, steps=False, fontsize=9, yscale="log"
        )
        for item, line in zip(series, ax.lines, strict=False):
            for x, row, y in zip(xs, item.curve.runs.T, item.curve.line, strict=True):
                if np.isnan(row).any():
                    ax.annotate(
                        f"{int(np.isnan(row).sum())}/{len(row)} stopped",
                        (x, y if np.isfinite(y) else 1e-16),
                        fontsize=7,
                        xytext=(3, 3),
                        textcoords="offset points",
                        color=line.get_color(),
                    )
    common.save(NAME, data, fig, args.out_dir)
    (Path(args.out_dir) / f"{NAME}.md").write_text(report(data))
    return data


def _fmt(value: float) -> str:
    if not np.isfinite(value):
        return "unstable"
    return f"{value:.2g}"


def report(data: dict) -> str:
    """
    The markdown tables of the benchmark (generated; nothing typed by hand).

    :param data: the results
    :return: markdown
    """
    lines = []
    acc = data["acceptance"]
    if acc:
        seeds = data["seeds"]
        lines += ["| criterion | " + " | ".join(f"instance {s}" for s in seeds) + " |", "|---|" + "---:|" * len(seeds)]
        for (name, values), met in zip(acc["per_seed"].items(), acc["met_per_seed"].values(), strict=True):
            cells = [_fmt(v) + ("" if ok else " **(missed)**") for v, ok in zip(values, met, strict=True)]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        s = acc["setting"]
        lines += [
            "",
            f"Setting: `random_lqr(seed=instance)` defaults (n_x = 4, n_u = 2, N = 8, h = 1, γ = 0.9, ρ(A) = 0.8), "
            f"K0 = 0, η = {s['learning_rate']}, H = {s['local_steps']}, {s['rounds']} rounds.",
            "",
        ]
    rounds = data["settings"]["rounds"]
    lines += [f"Median final relative gap after {rounds} rounds (h = 1; `unstable`: stopped by the guard):", ""]
    hs = data["settings"]["local_steps"]
    lines += ["| algorithm | " + " | ".join(f"H = {h}" for h in hs) + " |", "|---|" + "---:|" * len(hs)]
    for algo, name in (("fast_fedpg", "Fast-FedPG"), ("fedavg_pg", "FedAvg-PG")):
        cells = [_fmt(np.median(np.asarray(data["final_gap_per_seed"][f"H={h}/{algo}"], dtype=float))) for h in hs]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    het = data["heterogeneity"]
    lines += ["", f"Median final relative gap vs heterogeneity (H = {het['local_steps']}, {rounds} rounds):", ""]
    lines += ["| algorithm | " + " | ".join(f"h = {x}" for x in het["levels"]) + " |", "|---|" + "---:|" * len(het["levels"])]
    for algo, name in (("fast_fedpg", "Fast-FedPG"), ("fedavg_pg", "FedAvg-PG")):
        values = np.asarray(het["final_gap_per_seed"][algo], dtype=float)
        cells = []
        for row in values:
            unstable = int(np.isnan(row).sum())
            cell = _fmt(np.median(row[~np.isnan(row)])) if unstable < len(row) else "unstable"
            cells.append(cell + (f" ({unstable}/{len(row)} unstable)" if 0 < unstable < len(row) else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    result = main()
    print(report(common._jsonable(result)))
