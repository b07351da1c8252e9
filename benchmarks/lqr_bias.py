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

import numpy as np
from harness import Context, Report, Run, Settings, Study, positive, table

from sb3_fedpg import lqr
from sb3_fedpg.common.plotting import Series, aggregate_values, draw_panel
from sb3_fedpg.lqr import UnstableGainError, exact_federated_run, optimal_gain, random_lqr

ALGOS = {"fast_fedpg": True, "fedavg_pg": False}
NAMES = {"fast_fedpg": "Fast-FedPG", "fedavg_pg": "FedAvg-PG"}


def gaps(seed: int, heterogeneity: float, local_steps: int, rounds: int, eta: float, correction: bool) -> np.ndarray:
    """Relative gaps of one run; all NaN when the guard stops it (a gain destabilised the loop)."""
    problem = random_lqr(seed=seed, heterogeneity=heterogeneity)
    try:
        return exact_federated_run(problem, local_steps, rounds, eta, correction=correction).gaps
    except UnstableGainError:
        return np.full(rounds + 1, np.nan)


def fd_error(seed: int) -> float:
    """Largest relative error (per agent, Frobenius) of the exact gradient vs central differences."""
    problem, rng = random_lqr(seed=seed), np.random.default_rng(seed)
    K = optimal_gain(problem).gain + 0.1 * rng.normal(size=(problem.n_agents, problem.n_inputs, problem.n_states))
    grad, eps = lqr.agent_gradients(problem, K), 1e-6
    fd = np.zeros_like(grad)
    for a in range(problem.n_inputs):
        for b in range(problem.n_states):
            E = np.zeros_like(K)
            E[:, a, b] = eps
            fd[:, a, b] = (lqr.agent_costs(problem, K + E) - lqr.agent_costs(problem, K - E)) / (2 * eps)
    return float((np.linalg.norm(fd - grad, axis=(1, 2)) / np.linalg.norm(grad, axis=(1, 2))).max())


def centralised_gap(seed: int, eta: float, steps: int) -> float:
    """Exact centralised PG (gradient descent on C̄) from K0: relative gap to the Riccati cost."""
    problem = random_lqr(seed=seed)
    K = problem.initial_gain.copy()
    for _ in range(steps):
        K = K - eta * lqr.global_gradient(problem, K)
    return float((lqr.global_cost(problem, K) - optimal_gain(problem).cost) / optimal_gain(problem).cost)


def gap_run(s: Settings, h: int, algo: str, seed: int, level: float = 1.0) -> Run:
    config = dict(seed=seed, heterogeneity=level, local_steps=h, rounds=s.rounds, eta=s.learning_rate, correction=ALGOS[algo])
    return Run(gaps, config, f"h{level}_H{h}_{algo}_s{seed}")


def runs(s: Settings) -> list[Run]:
    seeds = range(s.seeds)
    curves = [gap_run(s, h, a, i) for h in s.local_steps for a in ALGOS for i in seeds]
    levels = [gap_run(s, 10, a, i, x) for x in s.heterogeneity for a in ALGOS for i in seeds]
    checks = [Run(fd_error, {"seed": i}, f"fd_s{i}") for i in seeds]
    checks += [
        Run(centralised_gap, dict(seed=i, eta=s.learning_rate, steps=s.centralised_steps), f"central_s{i}") for i in seeds
    ]
    return curves + levels + (checks if 10 in s.local_steps else [])


def report(ctx: Context) -> Report:
    import matplotlib.pyplot as plt

    s, r, seeds, eta = ctx.settings, ctx.results, list(range(ctx.settings.seeds)), ctx.settings.learning_rate
    curves = {f"H={h}/{a}": np.array([r[gap_run(s, h, a, i)] for i in seeds], float) for h in s.local_steps for a in ALGOS}
    het_final = {a: np.array([[r[gap_run(s, 10, a, i, x)][-1] for i in seeds] for x in s.heterogeneity], float) for a in ALGOS}
    acceptance: dict = {}
    if 10 in s.local_steps:
        rounds = s.acceptance_rounds
        fast, avg = curves["H=10/fast_fedpg"][:, rounds], curves["H=10/fedavg_pg"][:, rounds]
        fd_errors = np.array([r(fd_error, seed=i) for i in seeds])
        central_gaps = np.array([r(centralised_gap, seed=i, eta=eta, steps=s.centralised_steps) for i in seeds])
        setting = dict(random_lqr_defaults=True, heterogeneity=1.0, learning_rate=eta, local_steps=10, rounds=rounds, K0=0)
        met = dict(fd=fd_errors <= 1e-6, riccati=np.abs(central_gaps) <= 1e-8, fast=fast <= 1e-8, fedavg=avg >= 1e-3)
        acceptance = {
            "setting": setting,
            "per_seed": {
                "exact gradient vs finite differences, relative error (<= 1e-6)": fd_errors,
                f"centralised exact PG, {s.centralised_steps} steps: relative gap to Riccati cost (<= 1e-8)": central_gaps,
                "Fast-FedPG relative gap (<= 1e-8)": fast,
                "FedAvg-PG H=10 relative gap (>= 1e-3)": avg,
            },
            "met_per_seed": met,
        }
    data = {
        "settings": s,
        "seeds": seeds,
        "median_gap_curve": {k: np.nanmedian(v, 0) if np.isfinite(v).any() else v[0] for k, v in curves.items()},
        "final_gap_per_seed": {k: v[:, -1] for k, v in curves.items()},
        "heterogeneity": {"levels": s.heterogeneity, "local_steps": 10, "final_gap_per_seed": het_final},
        "acceptance": acceptance,
        "note": "NaN = the run was stopped by the guard (a local or global gain destabilised the closed loop)",
    }
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(s.local_steps)))
    series = []
    for color, h in zip(colors, s.local_steps, strict=True):
        for algo, style in (("fast_fedpg", "-"), ("fedavg_pg", "--")):
            gaps = positive(curves[f"H={h}/{algo}"])
            curve = aggregate_values(np.arange(gaps.shape[1]), gaps, "none", "median", skip_nan=True)
            series.append(Series(f"{NAMES[algo]} H={h}", curve, color, style))
    title = f"LQR n_x=4 n_u=2 N=8, h=1, exact gradients, η={eta}\nmedian over {s.seeds} instances"
    ylabel = "relative gap (C̄(K) − C̄*) / C̄*"
    draw_panel(axes[0], series, title, ylabel, "communication round", steps=False, fontsize=9, yscale="log", legend=None)
    axes[0].legend(fontsize=7, ncol=2)
    by_h = {a: np.stack([curves[f"H={h}/{a}"][:, -1] for h in s.local_steps]) for a in ALGOS}
    panels = (
        (axes[1], s.local_steps, by_h, "local steps H"),
        (axes[2], s.heterogeneity, het_final, "heterogeneity h (H = 10)"),
    )
    for ax, xs, finals, xlabel in panels:
        series = []
        for algo, (style, marker) in (("fast_fedpg", ("-", "o")), ("fedavg_pg", ("--", "s"))):
            curve = aggregate_values(xs, positive(finals[algo]).T, "minmax", "median", skip_nan=True)
            series.append(Series(NAMES[algo], curve, None, style, marker))
        title = "median and range over instances (1e-16 = round-off);\n'k/5 stopped': runs the guard stopped"
        draw_panel(
            ax,
            series,
            title + " (gain destabilised)",
            f"relative gap after {s.rounds} rounds",
            xlabel,
            steps=False,
            fontsize=9,
            yscale="log",
        )
        for item, line in zip(series, ax.lines, strict=False):
            for x, row, y in zip(xs, item.curve.runs.T, item.curve.line, strict=True):
                if np.isnan(row).any():
                    where = dict(xy=(x, y if np.isfinite(y) else 1e-16), xytext=(3, 3), textcoords="offset points")
                    ax.annotate(f"{int(np.isnan(row).sum())}/{len(row)} stopped", **where, fontsize=7, color=line.get_color())
    return Report(data, fig, markdown(data))


def _fmt(value: float) -> str:
    return f"{value:.2g}" if np.isfinite(value) else "unstable"


def markdown(data: dict) -> str:
    """:return: the benchmark's Markdown tables (generated; nothing typed by hand)"""
    lines, acc, rounds, hs = [], data["acceptance"], data["settings"]["rounds"], data["settings"]["local_steps"]
    if acc:
        rows = [["criterion", *(f"instance {i}" for i in data["seeds"])]]
        for (name, values), met in zip(acc["per_seed"].items(), acc["met_per_seed"].values(), strict=True):
            rows.append([name, *(_fmt(v) + ("" if ok else " **(missed)**") for v, ok in zip(values, met, strict=True))])
        s = acc["setting"]
        lines += [
            *table(rows, "l" + "r" * len(data["seeds"])),
            "",
            f"Setting: `random_lqr(seed=instance)` defaults (n_x = 4, n_u = 2, N = 8, h = 1, γ = 0.9, ρ(A) = 0.8), "
            f"K0 = 0, η = {s['learning_rate']}, H = {s['local_steps']}, {s['rounds']} rounds.",
            "",
        ]
    lines += [f"Median final relative gap after {rounds} rounds (h = 1; `unstable`: stopped by the guard):", ""]
    rows = [["algorithm", *(f"H = {h}" for h in hs)]]
    for algo, name in NAMES.items():
        rows.append([name, *(_fmt(np.median(np.asarray(data["final_gap_per_seed"][f"H={h}/{algo}"], float))) for h in hs)])
    het = data["heterogeneity"]
    lines += table(rows, "l" + "r" * len(hs))
    lines += ["", f"Median final relative gap vs heterogeneity (H = {het['local_steps']}, {rounds} rounds):", ""]
    rows = [["algorithm", *(f"h = {x}" for x in het["levels"])]]
    for algo, name in NAMES.items():
        cells = []
        for row in np.asarray(het["final_gap_per_seed"][algo], dtype=float):
            unstable = int(np.isnan(row).sum())
            cell = _fmt(np.median(row[~np.isnan(row)])) if unstable < len(row) else "unstable"
            cells.append(cell + (f" ({unstable}/{len(row)} unstable)" if 0 < unstable < len(row) else ""))
        rows.append([name, *cells])
    return "\n".join(lines + table(rows, "l" + "r" * len(het["levels"]))) + "\n"


STUDY = Study(
    "lqr_bias",
    __doc__,
    dict(seeds=5, rounds=100, acceptance_rounds=50, learning_rate=0.02, local_steps=[1, 2, 5, 10, 20])
    | dict(heterogeneity=[0.0, 0.25, 0.5, 1.0, 1.5, 2.0], centralised_steps=1500),
    runs,
    report,
    quick=dict(seeds=1, rounds=5, acceptance_rounds=5, centralised_steps=20, local_steps=[1, 10], heterogeneity=[0.0, 1.0]),
)
main = STUDY.main

if __name__ == "__main__":
    main()
