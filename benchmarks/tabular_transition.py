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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from harness import Context, Report, Run, Settings, Study, positive, table
from harness.keys import jsonable

from sb3_fedpg.common.plotting import Series, aggregate_values, draw_panel
from sb3_fedpg.tabular import exact_federated_run, garnet, global_gradient, local_maximum, optimal_objective, reference_optimum

#: algorithm -> (correction, centralised): "centralised" is H = 1 with H× the rounds (the same
#: number of exact-gradient steps as the federated runs), i.e. plain PG on J̄ from θ0 = 0
ALGORITHMS = {"fast_fedpg": (True, False), "fedavg_pg": (False, False), "centralised_pg": (True, True)}
LABELS = {"fast_fedpg": "Fast-FedPG", "fedavg_pg": "FedAvg-PG", "centralised_pg": "centralised PG"}
COLORS = {"fast_fedpg": "C0", "fedavg_pg": "C1", "centralised_pg": "0.45"}


def _fmt(value: float) -> str:
    return f"{value:.2g}" if abs(value) < 1e-2 or abs(value) >= 1e3 else f"{value:.3g}"


def markdown(data: dict) -> str:
    """:return: the Markdown summary of the JSON ``data`` (what ``benchmarks/results/tabular_transition.md`` holds)"""
    kappas, settings, blocks = data["kappas"], data["settings"], data["results"].values()
    head, align = [f"κ = {k}" for k in kappas], "r" * len(kappas)
    rows = [["h", "τ", "algorithm", *head]]
    for b in blocks:
        for algo in ALGORITHMS:
            cells = [f"{_fmt(g.mean())} [{_fmt(g.min())}, {_fmt(g.max())}]" for g in np.asarray(b["final_gap"][algo])]
            rows.append([b["reward_heterogeneity"], b["tau"], LABELS[algo], *cells])
    lines = [
        f"**Final gap to the reference optimum** after {settings['rounds']} rounds (H = {settings['local_steps']}, "
        f"η = {settings['learning_rate']}; centralised PG: H = 1, {settings['rounds'] * settings['local_steps']} "
        f"rounds, the same number of exact-gradient steps), mean [min, max] over seeds "
        f"{data['seeds'][0]}–{data['seeds'][-1]}:",
        "",
        *table(rows, "rrl" + align),
        "",
        f"**Reference optimum** ({settings['n_starts']} starts, {settings['ascent_steps']} exact-PG steps each, then "
        "refined): number of seeds on which the starts end at *different* local maxima (spread > 1e-6), the largest "
        "spread of the starts' final values, and the mean gap of the start θ = 0 (centralised PG from the algorithms' "
        "own start):",
        "",
    ]
    rows = [["h", "τ", "quantity", *head]]
    for b in blocks:
        spread, start0 = np.asarray(b["reference"]["spread"]), np.asarray(b["reference"]["start0_gap"])
        key = [b["reward_heterogeneity"], b["tau"]]
        rows.append([*key, "seeds with several maxima", *(f"{int((x > 1e-6).sum())}/{spread.shape[1]}" for x in spread)])
        rows.append([*key, "largest spread", *(_fmt(x.max()) for x in spread)])
        rows.append([*key, "gap of start θ = 0", *(_fmt(x.mean()) for x in start0)])
    lines += [
        *table(rows, "rrl" + align),
        "",
        "**Where the gap comes from** (mean over seeds): the run's final iterate is refined to a local maximum "
        "(`local_maximum`: L-BFGS from it, and deterministic local search for τ = 0); *not converged* = "
        "that local maximum minus the final value (heterogeneity bias, or a slow rate), *worse maximum* = the "
        "reference minus that local maximum (non-concavity of J̄, not a property of the federated algorithm):",
        "",
    ]
    rows = [["h", "τ", "algorithm", "part", *head]]
    for b in blocks:
        for algo in ALGORITHMS:
            for field, part in (("gap_to_own_local_max", "not converged"), ("own_local_max_gap", "worse maximum")):
                means = (_fmt(v.mean()) for v in np.asarray(b[field][algo]))
                rows.append([b["reward_heterogeneity"], b["tau"], LABELS[algo], part, *means])
    lines += [*table(rows, "rrll" + align), ""]
    lines += ["**Stationarity** ‖∇J̄‖ at the final iterate, mean over seeds (a stationary point of J̄ has 0):", ""]
    rows = [["h", "τ", "algorithm", *head]]
    for b in blocks:
        for algo in ALGORITHMS:
            means = (_fmt(n.mean()) for n in np.asarray(b["final_grad_norm"][algo]))
            rows.append([b["reward_heterogeneity"], b["tau"], LABELS[algo], *means])
    check = data["kappa0_reference_minus_value_iteration"]
    lines += [
        *table(rows, "rrl" + align),
        "",
        f"Check: at κ = 0 (shared P) the multi-start reference equals value iteration's J* to {_fmt(check)} "
        f"(largest |difference| over all seeds, h and τ). Runtime {data['seconds']:.0f} s.",
    ]
    return "\n".join(lines) + "\n"


def configuration(
    h: float, tau: float, kappa: float, seed: int, local_steps: int, rounds: int, n_starts: int, ascent_steps: int
) -> dict:
    """One (h, τ, κ, seed): reference optimum, then both algorithms measured against it."""
    mdp = garnet(10, 4, 3, 8, h, 0.9, seed, transition_heterogeneity=kappa)
    ref = reference_optimum(mdp, tau, n_starts=n_starts, n_steps=ascent_steps, seed=seed)
    reference = dict(objective=ref.objective, spread=ref.spread, n_at_best=ref.n_at_best)
    reference |= dict(start0_gap=ref.objective - ref.start_objectives[0], start_objectives=ref.start_objectives)
    check = ref.objective - optimal_objective(mdp, tau).objective if kappa == 0 else None
    out: dict = {"reference": reference, "reference_minus_value_iteration": check}
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


def run(s: Settings, h: float, tau: float, kappa: float, seed: int) -> Run:
    config = dict(h=h, tau=tau, kappa=kappa, seed=seed, local_steps=s.local_steps, rounds=s.rounds)
    return Run(configuration, config | dict(n_starts=s.starts, ascent_steps=s.ascent_steps), f"h{h}_tau{tau}_k{kappa}_s{seed}")


def runs(s: Settings) -> list[Run]:
    return [run(s, h, t, k, i) for h in s.reward_heterogeneity for t in s.taus for k in s.kappas for i in range(s.seeds)]


def report(ctx: Context) -> Report:
    import matplotlib.pyplot as plt

    s, results = ctx.settings, {}
    for h in s.reward_heterogeneity:
        for tau in s.taus:
            rows = [[ctx.results[run(s, h, tau, kappa, seed)] for seed in range(s.seeds)] for kappa in s.kappas]
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
    checks = (abs(x) for block in results.values() for x in block["kappa0_reference_minus_value_iteration"])
    settings = dict(n_states=10, n_actions=4, branching=3, n_agents=8, gamma=0.9, rounds=s.rounds, local_steps=s.local_steps)
    settings |= dict(learning_rate=1.0, theta0="zeros", n_starts=s.starts, ascent_steps=s.ascent_steps)
    data = {"kappas": s.kappas, "seeds": list(range(s.seeds)), "settings": settings, "results": results}
    data |= {"kappa0_reference_minus_value_iteration": max(checks, default=0.0), "seconds": ctx.sweep.seconds}
    fig, axes = plt.subplots(1, len(s.reward_heterogeneity), figsize=(6 * len(s.reward_heterogeneity), 4.5))
    axes = np.atleast_1d(axes)
    markers = ["o", "s", "^", "v"]
    for ax, h in zip(axes, s.reward_heterogeneity, strict=True):
        series = []
        for marker, tau in zip(markers, s.taus, strict=False):
            block = results[f"h={h}/tau={tau}"]
            for algo in ALGORITHMS:
                curve = aggregate_values(s.kappas, positive(block["final_gap"][algo], 1e-13).T, "minmax")
                style = {"fast_fedpg": "-", "fedavg_pg": "--", "centralised_pg": ":"}[algo]
                series.append(Series(f"{LABELS[algo]}, τ={tau}", curve, COLORS[algo], style, marker))
        xlabel = "transition heterogeneity κ (0 = shared P, 1 = independent P_i)"
        ylabel = f"gap to reference optimum after {s.rounds} rounds"
        draw_panel(ax, series, f"reward heterogeneity h={h}", ylabel, xlabel, steps=False, yscale="log")
    fig.suptitle(
        f"Garnet S=10 A=4 N=8, exact gradients, H={s.local_steps}, {s.rounds} rounds (centralised PG: "
        f"{s.rounds * s.local_steps} steps): mean (line) and min–max (band) over {s.seeds} seeds",
        fontsize=10,
    )
    return Report(data, fig, markdown(jsonable(data, finite=True)))


STUDY = Study(
    "tabular_transition",
    __doc__,
    dict(seeds=5, rounds=300, local_steps=10, kappas=[0.0, 0.25, 0.5, 0.75, 1.0], taus=[0.0, 0.1])
    | dict(reward_heterogeneity=[1.0, 0.0], starts=20, ascent_steps=300),
    runs,
    report,
    quick=dict(seeds=2, rounds=20, kappas=[0.0, 1.0], taus=[0.1], reward_heterogeneity=[1.0], starts=3, ascent_steps=50),
)
main = STUDY.main

if __name__ == "__main__":
    main()
