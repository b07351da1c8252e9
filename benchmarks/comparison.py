"""
The comparison: Fast-FedPG vs FedAvg-PG vs SB3 A2C/PPO (centralised) vs local-only training.

Per heterogeneous family (CartPole, Pendulum, HalfCheetah) at a low and a high heterogeneity, every method gets the
same budget of **total** env steps and is evaluated on the **global objective** ``J(θ) = (1/N) Σ_i J_i(θ)`` (the
stochastic policy's return under each agent's own reward, averaged over agents), against env steps and communication
rounds. Methods (``zoo_configs/<algo>.yml`` with the overrides in ``FAMILIES``): Fast-FedPG, FedAvg-PG
(``correction=False``), SB3 A2C / PPO trained centrally on the pooled envs of all agents, and ``N`` local-only models
(``budget / N`` steps each on its agent's env). Training: ``neural_runs.run_one``.

Cached in ``benchmarks/cache/comparison/`` (committed: the records of the runs behind the committed results, computed
before the harness). Writes ``benchmarks/results/comparison.{json,png,md}``.
Run: ``python benchmarks/comparison.py`` (``--families cartpole`` ... in stages, ``--quick`` for a smoke run).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import neural_runs as nr  # training with curves, the zoo entries
import numpy as np
from harness import Context, Report, Run, Settings, Study, table
from harness.keys import jsonable

LABELS = {"fedpg": "Fast-FedPG", "fedavg": "FedAvg-PG", "a2c": "A2C (central, pooled)", "ppo": "PPO (central, pooled)"}
LABELS["local"] = "local-only"
COLORS = {"fedpg": "tab:blue", "fedavg": "tab:red", "a2c": "tab:orange", "ppo": "tab:green", "local": "tab:gray"}
METHOD_SPECS: dict[str, nr.MethodSpec] = {
    "fedpg": nr.MethodSpec("fedpg"),
    "fedavg": nr.MethodSpec("fedpg", {"correction": False}),
    "a2c": nr.MethodSpec("a2c"),
    "ppo": nr.MethodSpec("ppo"),
    "local": nr.MethodSpec("fedpg", local=True),
}


#: a family: its env (``sb3_fedpg/Hetero<env>-v0``), the budget (total env steps), the federation, the evaluation and
#: overrides of each algorithm's zoo entry
KEYS = ("env_id", "budget", "n_agents", "n_evals", "eval_envs_per_agent", "final_episodes_per_env", "fedpg", "a2c", "ppo")


def families(rows: dict[str, tuple]) -> dict[str, dict[str, Any]]:
    return {name: dict(zip(KEYS, (f"sb3_fedpg/Hetero{env}-v0", *row), strict=True)) for name, (env, *row) in rows.items()}


FAMILIES = families({
    # zoo's lr 0.1 and H = 5; shorter segments (more rounds) and a faster local critic helped in a small sweep
    "cartpole": ("CartPole", 200_000, 8, 20, 8, 2, {"n_steps": 8, "critic_learning_rate": 3e-3}, {}, {}),
    # zoo's Adam 3e-3, H = 5, γ 0.9; shorter segments, GAE λ 0.9 and a faster local critic (values of order -100 are
    # out of reach of one Adam 1e-3 step per batch) in a small sweep
    "pendulum": ("Pendulum", 300_000, 8, 15, 8, 2, {"n_steps": 8, "gae_lambda": 0.9, "critic_learning_rate": 1e-2}, {}, {}),
    # MuJoCo is slow here (~4,400 raw steps/s, PPO ~1,000 steps/s): a small budget, 5 evaluations during training with
    # 4 episodes per agent, 8 per agent at the end; zoo's Adam 3e-4, H = 5, shorter segments and a faster local critic
    "halfcheetah": ("HalfCheetah", 50_000, 4, 5, 4, 2, {"n_steps": 16, "critic_learning_rate": 1e-2}, {}, {}),
})  # fmt: skip
SMOKE = (
    {"n_envs": 4, "n_steps": 16, "local_steps": 2},
    {"n_envs": 4},
    {"n_envs": 4, "n_steps": 64, "batch_size": 64, "n_epochs": 1},
)
#: ``--quick``: tiny federations and budgets, CartPole and Pendulum (no MuJoCo needed)
QUICK = families({"cartpole": ("CartPole", 2048, 2, 2, 2, 1, *SMOKE), "pendulum": ("Pendulum", 1024, 2, 1, 1, 1, *SMOKE)})


def train(family_name: str, family: dict, heterogeneity: float, method: str, seed: int, hyperparams: dict) -> dict:
    """One run (``neural_runs.run_one``); ``hyperparams``, its zoo entry, is in the key: a changed zoo file is a new run."""
    if hyperparams != jsonable(nr.algo_hyperparams(family, method, heterogeneity, METHOD_SPECS)[1]):
        raise ValueError(f"{family_name} {method}: the zoo entry is not the run's hyperparams")
    return nr.run_one(family_name, family, heterogeneity, method, seed, METHOD_SPECS)


def run(s: Settings, name: str, heterogeneity: float, method: str, seed: int) -> Run:
    family = (QUICK if s.scale == "quick" else FAMILIES)[name]
    hyperparams = jsonable(nr.algo_hyperparams(family, method, heterogeneity, METHOD_SPECS)[1])
    config = dict(family_name=name, family=family, heterogeneity=heterogeneity, method=method, seed=seed)
    return Run(train, config | {"hyperparams": hyperparams}, f"{name}_h{heterogeneity}_{method}_s{seed}")


def runs(s: Settings) -> list[Run]:
    cells = [(name, h, m) for name in s.families for h in s.heterogeneity for m in LABELS if m in s.methods]
    return [run(s, name, h, m, seed) for name, h, m in cells for seed in s.seeds]


def summarize(cells: dict[tuple[str, float], dict[str, list[dict[str, Any]]]], high: float) -> dict[str, Any]:
    """Mean and spread over seeds of the final global objective per (family, h, method), and the issue's targets."""
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    checks = []
    for (name, h), cell in cells.items():
        stats: dict[str, dict[str, Any]] = {}
        for method, sel in cell.items():
            finals = np.asarray([r["final_global"] for r in sel])
            std = float(finals.std(ddof=1)) if len(finals) > 1 else 0.0
            stats[method] = dict(mean=float(finals.mean()), std=std, finals=finals.tolist(), seeds=[r["seed"] for r in sel])
            stats[method] |= dict(rounds=float(np.mean([r["rounds"][-1] for r in sel])))
            stats[method]["seconds"] = float(np.mean([r["seconds"] for r in sel]))
            if method == "local":
                stats[method]["own_task_mean"] = float(np.mean([r["own_task_final"] for r in sel]))
        summary.setdefault(name, {})[str(h)] = stats
        row: dict[str, Any] = {"family": name, "heterogeneity": float(h)}
        if "fedpg" in stats and "fedavg" in stats:
            diff, spread = stats["fedpg"]["mean"] - stats["fedavg"]["mean"], stats["fedpg"]["std"] + stats["fedavg"]["std"]
            row.update(fedpg_minus_fedavg=diff, spread=spread, beats_fedavg=bool(diff > spread))
        if "fedpg" in stats and "a2c" in stats:
            ref = stats["a2c"]["mean"]
            gap = (stats["fedpg"]["mean"] - ref) / abs(ref) if ref != 0 else float("nan")
            row.update(relative_gap_to_a2c=gap, within_10pct_of_a2c=bool(gap >= -0.10))
        checks.append(row)
    top = [c for c in checks if c["heterogeneity"] == high]
    targets = dict(beats_fedavg_at_high_h=[c["family"] for c in top if c.get("beats_fedavg")])
    targets["target_beats_fedavg_met"] = sum(bool(c.get("beats_fedavg")) for c in top) >= 2
    targets["within_10pct_of_a2c_at_high_h"] = [c["family"] for c in top if c.get("within_10pct_of_a2c")]
    targets["target_a2c_met"] = bool(top) and all(c.get("within_10pct_of_a2c", False) for c in top)
    return {"table": summary, "checks": checks, "targets": targets}


NOTES = """
Final global objective J (mean over agents of each agent's return under its own reward, stochastic policy),
mean ± std over seeds at the budget. FedPG − FedAvg in bold when it exceeds the spread (sum of the two stds).
local-only: N single-agent models, each trained on its own agent's env with budget / N steps; J is the mean over
the models of each model's global objective; 'own task' is the mean of each model's return on its own agent's task.
FedPG vs A2C: (J_FedPG − J_A2C) / |J_A2C|.
"""


def markdown(summary: dict[str, Any], families: dict[str, dict[str, Any]]) -> str:
    methods = [m for m in LABELS if any(m in c for by_h in summary["table"].values() for c in by_h.values())]
    own = ["local-only, own task"] if "local" in methods else []
    rows = [["family", "h", *(LABELS[m] for m in methods), *own, "FedPG − FedAvg (spread)", "FedPG vs A2C"]]
    checks = {(c["family"], c["heterogeneity"]): c for c in summary["checks"]}
    for name, by_h in summary["table"].items():
        for h, cell in by_h.items():
            rows.append([name, h])
            for m in methods:
                s = cell.get(m)
                n = "" if s is None or len(s["finals"]) >= 3 else f" (n={len(s['finals'])})"
                rows[-1].append("—" if s is None else f"{s['mean']:.1f} ± {s['std']:.1f}{n}")
            rows[-1] += [f"{cell['local']['own_task_mean']:.1f}" if "local" in cell else "—"] if own else []
            c = checks[(name, float(h))]
            diff = f"{c['fedpg_minus_fedavg']:+.1f} ({c['spread']:.1f})" if "spread" in c else "—"
            rows[-1].append(f"**{diff}**" if c.get("beats_fedavg") else diff)
            rows[-1].append(f"{100 * c['relative_gap_to_a2c']:+.1f}%" if "relative_gap_to_a2c" in c else "—")
    t, yes = summary["targets"], lambda met: "yes" if met else "no"
    goals = [["target (highest heterogeneity)", "met?", "where"]]
    goals.append(
        ["Fast-FedPG beats FedAvg-PG by more than the seed spread on ≥ 2 families", yes(t["target_beats_fedavg_met"])]
    )
    goals[-1].append(", ".join(t["beats_fedavg_at_high_h"]) or "none")
    goals.append(["Fast-FedPG within 10% of centrally trained A2C", yes(t["target_a2c_met"])])
    goals[-1].append(", ".join(t["within_10pct_of_a2c_at_high_h"]) or "none")
    budgets = ", ".join(f"{n} {families[n]['budget']:,} steps (N = {families[n]['n_agents']})" for n in summary["table"])
    lines = [*table(rows, "lr" + "r" * (len(rows[0]) - 2)), NOTES, *table(goals, "lll")]
    return "\n".join([*lines, "", f"Budgets (total env steps, all agents): {budgets}."]) + "\n"


def plot(cells: dict[tuple[str, float], dict[str, list[dict[str, Any]]]], families: dict[str, Any], hets: list) -> Any:
    """One row per family; for each heterogeneity, J vs env steps and J vs communication rounds."""
    import matplotlib.pyplot as plt

    from sb3_fedpg.common.plotting import Series, aggregate_curves, draw_panel

    def curve(sel: list[dict[str, Any]], x_key: str) -> Any:  # every seed on the first seed's grid
        return aggregate_curves([(r[x_key], r["global_return"]) for r in sel], grid=sel[0][x_key])

    fig, axes = plt.subplots(len(families), 2 * len(hets), figsize=(9.2 * len(hets), 3.4 * len(families)), squeeze=False)
    for (name, h), cell in cells.items():
        ax_s, ax_r = axes[list(families).index(name), 2 * hets.index(h) : 2 * hets.index(h) + 2]
        steps = [Series(f"{LABELS[m]} ({len(sel)} seeds)", curve(sel, "timesteps"), COLORS[m]) for m, sel in cell.items()]
        rounds = [Series(LABELS[m], curve(sel, "rounds"), COLORS[m]) for m, sel in cell.items() if m in ("fedpg", "fedavg")]
        for m, sel in ((m, sel) for m, sel in cell.items() if m not in ("fedpg", "fedavg")):
            final = np.mean([r["final_global"] for r in sel])
            ax_r.axhline(final, color=COLORS[m], ls="--", lw=1, label=f"{LABELS[m]} (final)")
        title = f"{families[name]['env_id'].split('/')[-1]}, h = {h}: J vs "
        ylabel, xlabel = "J: mean return over agents", "communication rounds (FedPG / FedAvg-PG)"
        draw_panel(ax_s, steps, title + "env steps", ylabel, "total env steps (all agents)", fontsize=9, legend=None)
        draw_panel(ax_r, rounds, title + "rounds", "", xlabel, steps=False, fontsize=9, legend=None)
        for ax in (ax_s, ax_r):
            ax.tick_params(labelsize=8)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(handles), fontsize=9, bbox_to_anchor=(0.5, 0.0))
    return fig


def report(ctx: Context) -> Report:
    s, machine = ctx.settings, ctx.sweep.machine
    methods = [m for m in LABELS if m in s.methods]
    cells = {
        (n, h): {m: [ctx.results[run(s, n, h, m, i)] for i in s.seeds] for m in methods}
        for n in s.families
        for h in s.heterogeneity
    }
    records = [r for cell in cells.values() for sel in cell.values() for r in sel]
    families = {name: (QUICK if s.scale == "quick" else FAMILIES)[name] for name in s.families}
    summary = summarize(cells, max(s.heterogeneity))
    evaluation = "evaluate_agents(model, eval_env, deterministic=False): one episode per eval sub-env during training, "
    evaluation += "final_episodes_per_env at the end; eval env seeded 10000 + seed"
    payload = dict(quick=s.quick, families=families, heterogeneity=s.heterogeneity, seeds=s.seeds, evaluation=evaluation)
    payload["machine"] = dict(python=machine["python"], cpus=machine["cpus"], torch_threads=1)
    payload["run_seconds_total"] = float(sum(r["seconds"] for r in records))
    payload["run_seconds_by_family"] = {n: float(sum(r["seconds"] for r in records if r["family"] == n)) for n in families}
    payload |= dict(summary=summary, runs=records)
    fig = plot(cells, families, s.heterogeneity)
    return Report(payload, fig, markdown(summary, families), dpi=100, layout_rect=(0, 0.04, 1, 1))


STUDY = Study(
    "comparison",
    __doc__,
    dict(families=list(FAMILIES), heterogeneity=[0.2, 1.0], methods=list(LABELS), seeds=[0, 1, 2], scale="full"),
    runs,
    report,
    quick=dict(families=list(QUICK), heterogeneity=[1.0], seeds=[0, 1], scale="quick"),
)
main = STUDY.main

if __name__ == "__main__":
    main()
