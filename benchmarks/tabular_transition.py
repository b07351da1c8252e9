"""
Transition heterogeneity: final suboptimality vs the per-agent-dynamics knob κ, both algorithms.

Garnet S=10, A=4, branching 3, N=8, γ=0.9; agent i's kernel P_i = (1 − κ) P + κ P̃_i (P̃_i an
independent Garnet kernel). Exact gradients, H = 10, η = 1, 300 rounds, θ0 = 0, τ ∈ {0, 0.1},
reward heterogeneity h ∈ {1, 0} (h = 0 isolates the effect of the transitions). Proposition 1
fails for κ > 0, so gaps are measured against the reference optimum: the best of 20
centralised exact-PG runs from random starts (``sb3_fedpg.tabular.reference_optimum``).
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tabular_common as common
from tabular_common import np, plt

from sb3_fedpg.common.plotting import Series, aggregate_values, draw_panel
from sb3_fedpg.tabular import (
    exact_federated_run,
    garnet,
    global_gradient,
    local_maximum,
    optimal_objective,
    reference_optimum,
)

NAME = "tabular_transition"
#: algorithm -> (correction, centralised): "centralised" is H = 1 with H× the rounds (the same
#: number of exact-gradient steps as the federated runs), i.e. plain PG on J̄ from θ0 = 0
ALGORITHMS = {"fast_fedpg": (True, False), "fedavg_pg": (False, False), "centralised_pg": (True, True)}
LABELS = {"fast_fedpg": "Fast-FedPG", "fedavg_pg": "FedAvg-PG", "centralised_pg": "centralised PG"}
COLORS = {"fast_fedpg": "C0", "fedavg_pg": "C1", "centralised_pg": "0.45"}


def _fmt(value: float) -> str:
    return f"{value:.2g}" if abs(value) < 1e-2 or abs(value) >= 1e3 else f"{value:.3g}"


def table(data: dict) -> str:
    """
    The markdown summary of a result (what ``benchmarks/results/tabular_transition.md`` holds).

    :param data: the benchmark's JSON data
    :return: markdown
    """
    kappas, settings = data["kappas"], data["settings"]
    lines = [
        f"**Final gap to the reference optimum** after {settings['rounds']} rounds (H = {settings['local_steps']}, "
        f"η = {settings['learning_rate']}; centralised PG: H = 1, {settings['rounds'] * settings['local_steps']} "
        f"rounds, the same number of exact-gradient steps), mean [min, max] over seeds "
        f"{data['seeds'][0]}–{data['seeds'][-1]}:",
        "",
        "| h | τ | algorithm | " + " | ".join(f"κ = {k}" for k in kappas) + " |",
        "|---:|---:|---|" + "---:|" * len(kappas),
    ]
    for block in data["results"].values():
        h, tau = block["reward_heterogeneity"], block["tau"]
        for algo in ALGORITHMS:
            gaps = np.asarray(block["final_gap"][algo])  # (kappa, seed)
            cells = [f"{_fmt(g.mean())} [{_fmt(g.min())}, {_fmt(g.max())}]" for g in gaps]
            lines.append(f"| {h} | {tau} | {LABELS[algo]} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"**Reference optimum** ({settings['n_starts']} starts, {settings['ascent_steps']} exact-PG steps each, then "
        "refined): number of seeds on which the starts end at *different* local maxima (spread > 1e-6), the largest "
        "spread of the starts' final values, and the mean gap of the start θ = 0 (centralised PG from the algorithms' "
        "own start):",
        "",
        "| h | τ | quantity | " + " | ".join(f"κ = {k}" for k in kappas) + " |",
        "|---:|---:|---|" + "---:|" * len(kappas),
    ]
    for block in data["results"].values():
        h, tau = block["reward_heterogeneity"], block["tau"]
        spread = np.asarray(block["reference"]["spread"])
        start0 = np.asarray(block["reference"]["start0_gap"])
        n_seeds = spread.shape[1]
        lines.append(
            f"| {h} | {tau} | seeds with several maxima | "
            + " | ".join(f"{int((s > 1e-6).sum())}/{n_seeds}" for s in spread)
            + " |"
        )
        lines.append(f"| {h} | {tau} | largest spread | " + " | ".join(_fmt(s.max()) for s in spread) + " |")
        lines.append(f"| {h} | {tau} | gap of start θ = 0 | " + " | ".join(_fmt(s.mean()) for s in start0) + " |")
    lines += [
        "",
        "**Where the gap comes from** (mean over seeds): the run's final iterate is refined to a local maximum "
        "(`local_maximum`: L-BFGS from it, and deterministic local search for τ = 0); *not converged* = "
        "that local maximum minus the final value (heterogeneity bias, or a slow rate), *worse maximum* = the "
        "reference minus that local maximum (non-concavity of J̄, not a property of the federated algorithm):",
        "",
        "| h | τ | algorithm | part | " + " | ".join(f"κ = {k}" for k in kappas) + " |",
        "|---:|---:|---|---|" + "---:|" * len(kappas),
    ]
    for block in data["results"].values():
        h, tau = block["reward_heterogeneity"], block["tau"]
        for algo in ALGORITHMS:
            for field, part in (("gap_to_own_local_max", "not converged"), ("own_local_max_gap", "worse maximum")):
                values = np.asarray(block[field][algo])
                lines.append(f"| {h} | {tau} | {LABELS[algo]} | {part} | " + " | ".join(_fmt(v.mean()) for v in values) + " |")
    lines += [
        "",
        "**Stationarity** ‖∇J̄‖ at the final iterate, mean over seeds (a stationary point of J̄ has 0):",
        "",
        "| h | τ | algorithm | " + " | ".join(f"κ = {k}" for k in kappas) + " |",
        "|---:|---:|---|" + "---:|" * len(kappas),
    ]
    for block in data["results"].values():
        h, tau = block["reward_heterogeneity"], block["tau"]
        for algo in ALGORITHMS:
            norms = np.asarray(block["final_grad_norm"][algo])
            lines.append(f"| {h} | {tau} | {LABELS[algo]} | " + " | ".join(_fmt(n.mean()) for n in norms) + " |")
    check = data["kappa0_reference_minus_value_iteration"]
    lines += [
        "",
        f"Check: at κ = 0 (shared P) the multi-start reference equals value iteration's J* to {_fmt(check)} "
        f"(largest |difference| over all seeds, h and τ). Runtime {data['seconds']:.0f} s.",
    ]
    return "\n".join(lines) + "\n"


def _configuration(task: tuple) -> dict:
    """One (h, τ, κ, seed): reference optimum, then both algorithms measured against it."""
    h, tau, kappa, seed, local_steps, rounds, n_starts, ascent_steps = task
    mdp = garnet(10, 4, 3, 8, h, 0.9, seed, transition_heterogeneity=kappa)
    ref = reference_optimum(mdp, tau, n_starts=n_starts, n_steps=ascent_steps, seed=seed)
    out: dict = {
        "reference": {
            "objective": ref.objective,
            "spread": ref.spread,
            "n_at_best": ref.n_at_best,
            "start0_gap": ref.objective - ref.start_objectives[0],
            "start_objectives": ref.start_objectives,
        },
        "reference_minus_value_iteration": ref.objective - optimal_objective(mdp, tau).objective if kappa == 0 else None,
    }
    for field in ("final_gap", "final_grad_norm", "gap_to_own_local_max", "own_local_max_gap", "gaps"):
        out[field] = {}
    for algo, (correction, centralised) in ALGORITHMS.items():
        steps, n_rounds = (1, rounds * local_steps) if centralised else (local_steps, rounds)
        run = exact_federated_run(mdp, steps, n_rounds, 1.0, tau, correction, reference_objective=ref.objective)
        local, _ = local_maximum(mdp, run.params[-1], tau)
        out["final_gap"][algo] = run.final_gap
        out["final_grad_norm"][algo] = float(np.linalg.norm(global_gradient(mdp, run.params[-1], tau)))
        # gap = (J̄_loc − J̄(θ_T)) + (J̄* − J̄_loc): not yet stationary (bias / slow rate) + worse local maximum
        out["gap_to_own_local_max"][algo] = local - run.objectives[-1]
        out["own_local_max_gap"][algo] = ref.objective - local
        out["gaps"][algo] = run.gaps[:: n_rounds // rounds]  # per round of H gradient steps
    return out


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
    p.add_argument("--kappas", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    p.add_argument("--taus", type=float, nargs="+", default=[0.0, 0.1])
    p.add_argument("--reward-heterogeneity", type=float, nargs="+", default=[1.0, 0.0])
    p.add_argument("--starts", type=int, default=20, help="starts of the reference optimum")
    p.add_argument("--ascent-steps", type=int, default=300, help="exact-PG steps per start of the reference")
    p.add_argument("--workers", type=int, default=2, help="processes (one configuration each)")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.rounds, args.kappas, args.taus = 2, 20, [0.0, 1.0], [0.1]
        args.reward_heterogeneity, args.starts, args.ascent_steps, args.workers = [1.0], 3, 50, 1
    start = time.perf_counter()
    tasks = [
        (h, tau, kappa, seed, args.local_steps, args.rounds, args.starts, args.ascent_steps)
        for h in args.reward_heterogeneity
        for tau in args.taus
        for kappa in args.kappas
        for seed in range(args.seeds)
    ]
    if args.workers > 1:
        with ProcessPoolExecutor(args.workers) as pool:
            outcomes = dict(zip(tasks, pool.map(_configuration, tasks, chunksize=1), strict=True))
    else:
        outcomes = {task: _configuration(task) for task in tasks}
    results: dict = {}
    for h in args.reward_heterogeneity:
        for tau in args.taus:
            rows = [[outcomes[(h, tau, kappa, seed, *tasks[0][4:])] for seed in range(args.seeds)] for kappa in args.kappas]
            # every entry: (kappa, seed) nested lists, or (kappa,) for the median curves
            block = {"reward_heterogeneity": h, "tau": tau}
            for field in ("final_gap", "final_grad_norm", "gap_to_own_local_max", "own_local_max_gap"):
                block[field] = {a: [[r[field][a] for r in row] for row in rows] for a in ALGORITHMS}
            block["median_gap_curve"] = {a: [np.median([r["gaps"][a] for r in row], 0) for row in rows] for a in ALGORITHMS}
            block["reference"] = {
                key: [[r["reference"][key] for r in row] for row in rows]
                for key in ("objective", "spread", "n_at_best", "start0_gap", "start_objectives")
            }
            block["kappa0_reference_minus_value_iteration"] = [
                r["reference_minus_value_iteration"] for r in rows[0] if r["reference_minus_value_iteration"] is not None
            ]
            results[f"h={h}/tau={tau}"] = block
    kappa0_check = max(
        (abs(x) for block in results.values() for x in block["kappa0_reference_minus_value_iteration"]), default=0.0
    )
    data = {
        "kappas": args.kappas,
        "seeds": list(range(args.seeds)),
        "settings": {
            "n_states": 10,
            "n_actions": 4,
            "branching": 3,
            "n_agents": 8,
            "gamma": 0.9,
            "rounds": args.rounds,
            "local_steps": args.local_steps,
            "learning_rate": 1.0,
            "theta0": "zeros",
            "n_starts": args.starts,
            "ascent_steps": args.ascent_steps,
        },
        "results": results,
        "kappa0_reference_minus_value_iteration": kappa0_check,
        "seconds": time.perf_counter() - start,
    }
    fig, axes = plt.subplots(1, len(args.reward_heterogeneity), figsize=(6 * len(args.reward_heterogeneity), 4.5))
    axes = np.atleast_1d(axes)
    markers = ["o", "s", "^", "v"]
    for ax, h in zip(axes, args.reward_heterogeneity, strict=True):
        series = []
        for marker, tau in zip(markers, args.taus, strict=False):
            block = results[f"h={h}/tau={tau}"]
            for algo in ALGORITHMS:
                curve = aggregate_values(args.kappas, common.positive(block["final_gap"][algo], 1e-13).T, "minmax")
                style = {"fast_fedpg": "-", "fedavg_pg": "--", "centralised_pg": ":"}[algo]
                series.append(Series(f"{LABELS[algo]}, τ={tau}", curve, COLORS[algo], style, marker))
        xlabel = "transition heterogeneity κ (0 = shared P, 1 = independent P_i)"
        ylabel = f"gap to reference optimum after {args.rounds} rounds"
        draw_panel(ax, series, f"reward heterogeneity h={h}", ylabel, xlabel, steps=False, yscale="log")
    fig.suptitle(
        f"Garnet S=10 A=4 N=8, exact gradients, H={args.local_steps}, {args.rounds} rounds (centralised PG: "
        f"{args.rounds * args.local_steps} steps): mean (line) and min–max (band) over {args.seeds} seeds",
        fontsize=10,
    )
    common.save(NAME, data, fig, args.out_dir)
    (Path(args.out_dir) / f"{NAME}.md").write_text(table(common._jsonable(data)))
    return common._jsonable(data)


if __name__ == "__main__":
    result = main()
    print(table(result))
