"""
The collaboration claim on neural policies (heterogeneous CartPole).

1. **More agents, faster.** Global objective ``J`` vs communication rounds for ``N ∈ {1, 2, 4, 8}``
   agents at a **fixed per-agent sample budget per round** (``M`` envs x ``n_steps`` x ``H``
   samples per agent per round, the same for every ``N``): more agents average more
   independent gradient estimates, so each round's step is less noisy. Shown at
   heterogeneity 0 (identical agents: every ``N`` optimises the same objective) and at the
   benchmark's high heterogeneity (each federation's own global objective; the agents' targets
   ``c_i = 1.5·h·u_i`` with ``u_i`` evenly spaced in ``[-1, 1]`` depend on ``N``).
2. **Communication savings from H.** Rounds to reach a target ``J`` vs local steps ``H``,
   Fast-FedPG vs FedAvg-PG (``correction=False``, all else equal), ``N = 8``, high heterogeneity.

Hyperparameters: the comparison benchmark's CartPole FedPG settings (``benchmarks/comparison.py``). Each run is cached
in ``benchmarks/cache/collaboration/``. Writes ``benchmarks/results/collaboration.{json,png,md}``. Run:
``python benchmarks/collaboration.py`` (``--quick`` for a smoke run into ``runs/collaboration_quick/``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import neural_runs  # the benchmarks folder is not a package: import the sibling module
import numpy as np
from harness import Context, Report, Run, Settings, Study


def curve(
    env_id, fedpg, n_agents, heterogeneity, local_steps, correction, seed, eval_envs_per_agent, rounds, eval_every
) -> dict:
    """One FederatedPG trained ``rounds`` rounds: ``J`` (the mean over agents of each agent's return under its own
    reward, stochastic policy) every ``eval_every`` rounds, vs rounds and env steps."""
    from sb3_fedpg import FederatedPG, make_federated_vec_env

    env_kwargs = {"heterogeneity": heterogeneity}
    kwargs = dict(n_agents=n_agents, local_steps=local_steps, correction=correction, env_kwargs=env_kwargs, seed=seed)
    model = FederatedPG("MlpPolicy", env_id, **kwargs, **fedpg)
    eval_env = make_federated_vec_env(env_id, n_agents, eval_envs_per_agent, env_kwargs=env_kwargs, seed=10_000 + seed)
    per_round = model.n_envs * model.n_steps * local_steps
    evaluate = lambda m: neural_runs.stochastic_returns(m, eval_env, 1)
    callback = neural_runs.curve_callback(evaluate, eval_every * per_round, rounds * per_round)
    start = time.perf_counter()
    model.learn(rounds * per_round, callback=callback)
    final, c = evaluate(model), callback.curve
    out = dict(n_agents=n_agents, heterogeneity=heterogeneity, local_steps=local_steps, correction=correction, seed=seed)
    out |= dict(rounds=[*c["rounds"], int(model._n_rounds)], timesteps=[*c["timesteps"], int(model.num_timesteps)])
    out["global_return"] = [*(float(np.mean(p)) for p in c["per_agent"]), float(final.mean())]
    return out | dict(samples_per_agent_per_round=per_round // n_agents, seconds=time.perf_counter() - start)


def seeds(s: Settings, n: int, h: float, local_steps: int, correction: bool) -> list[Run]:
    """:return: one setting's runs, one per seed"""
    config = dict(env_id=s.env_id, fedpg=s.fedpg, n_agents=n, heterogeneity=h, local_steps=local_steps)
    config |= dict(correction=correction, eval_envs_per_agent=s.eval_envs_per_agent, rounds=s.rounds, eval_every=s.eval_every)
    name = f"N{n}_h{h}_H{local_steps}_{'fedpg' if correction else 'fedavg'}"
    return [Run(curve, {**config, "seed": i}, f"{name}_s{i}") for i in s.seeds]


def sweeps(s: Settings) -> tuple[dict, dict]:
    """:return: the N sweep's runs by (h, N) and the H sweep's by (H, correction)"""
    by_n = {(h, n): seeds(s, n, h, s.n_local_steps, True) for h in s.n_heterogeneity for n in s.n_values}
    return by_n, {(H, c): seeds(s, s.h_n_agents, s.h_heterogeneity, H, c) for H in s.h_values for c in (True, False)}


def runs(s: Settings) -> list[Run]:
    return list(dict.fromkeys(run for sweep in sweeps(s) for sel in sweep.values() for run in sel))


def stats(sel: list[dict], target: float) -> dict:
    """Final J and rounds to target (the first evaluated round with ``J >= target``) of one setting, over seeds."""
    first = lambda r: next((float(k) for k, j in zip(r["rounds"], r["global_return"], strict=True) if j >= target), np.inf)
    finals, hits = np.asarray([r["global_return"][-1] for r in sel]), np.asarray([first(r) for r in sel])
    reached = hits[np.isfinite(hits)]
    return {
        "final_mean": float(finals.mean()),
        "final_std": float(finals.std(ddof=1)) if len(finals) > 1 else 0.0,
        "auc_mean": float(np.mean([np.mean(r["global_return"]) for r in sel])),
        "rounds_to_target": [None if not np.isfinite(x) else x for x in hits.tolist()],
        "reached": len(reached),
        "rounds_to_target_median": float(np.median(hits)) if len(reached) > len(hits) / 2 else None,
        "samples_per_agent_per_round": sel[0]["samples_per_agent_per_round"],
    }


def report(ctx: Context) -> Report:
    s, results = ctx.settings, ctx.results
    by_n, by_h = ({key: [results[run] for run in sel] for key, sel in sweep.items()} for sweep in sweeps(s))
    summary = {
        "target": s.target,
        "n_sweep": {str(h): {str(n): stats(by_n[h, n], s.target) for n in s.n_values} for h in s.n_heterogeneity},
        "h_sweep": {
            name: {str(H): stats(by_h[H, c], s.target) for H in s.h_values} for name, c in (("fedpg", True), ("fedavg", False))
        },
    }
    every = [results[run] for run in runs(s)]
    machine = {"python": ctx.sweep.machine.get("python"), "cpus": ctx.sweep.machine.get("cpus"), "torch_threads": 1}
    payload = {"quick": s.quick, "config": {key: s[key] for key in STUDY.settings}, "machine": machine}
    payload |= {"run_seconds_total": float(sum(r["seconds"] for r in every)), "summary": summary, "runs": every}
    return Report(payload, figure(by_n, summary, s), markdown(summary, s), dpi=100)


def markdown(summary: dict, s: Settings) -> str:
    """The results tables, generated from the summary."""

    def hit(x: dict) -> str:
        median, of = x["rounds_to_target_median"], f"({x['reached']}/{len(x['rounds_to_target'])})"
        return f"{median:.0f} {of}" if median is not None else f"— {of}"

    lines = [
        f"N sweep: {s.rounds} rounds, H = {s.n_local_steps}, the same samples per agent per round for every N. "
        f"Rounds to J ≥ {s.target:g}: median over seeds (seeds that reached it).",
        "",
        "| heterogeneity | N | samples / agent / round | final J | mean J over the run | rounds to target |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for h, per_n in summary["n_sweep"].items():
        for n, x in per_n.items():
            final = f"{x['final_mean']:.1f} ± {x['final_std']:.1f}"
            lines.append(f"| {h} | {n} | {x['samples_per_agent_per_round']} | {final} | {x['auc_mean']:.1f} | {hit(x)} |")
    lines += [
        "",
        f"H sweep: N = {s.h_n_agents}, heterogeneity {s.h_heterogeneity}, at most {s.rounds} rounds. "
        f"Rounds to J ≥ {s.target:g}: median over seeds (seeds that reached it).",
        "",
        "| H | Fast-FedPG rounds to target | FedAvg-PG rounds to target | Fast-FedPG final J | FedAvg-PG final J |",
        "|---:|---:|---:|---:|---:|",
    ]
    for H, f in summary["h_sweep"]["fedpg"].items():
        a = summary["h_sweep"]["fedavg"][H]
        spread = " | ".join(f"{x['final_mean']:.1f} ± {x['final_std']:.1f}" for x in (f, a))
        lines.append(f"| {H} | {hit(f)} | {hit(a)} | {spread} |")
    return "\n".join(lines) + "\n"


def figure(by_n: dict, summary: dict, s: Settings):
    """J vs rounds for each N (one panel per heterogeneity), and rounds-to-target / final J vs H."""
    import matplotlib.pyplot as plt

    from sb3_fedpg.common.plotting import Series, aggregate_curves, draw_panel

    hets, cap = s.n_heterogeneity, s.rounds
    fig, axes = plt.subplots(1, len(hets) + 2, figsize=(4.6 * (len(hets) + 2), 3.8), squeeze=False)
    cmap = plt.get_cmap("viridis")
    for ax, h in zip(axes[0], hets, strict=False):
        series = []
        for k, n in enumerate(s.n_values):
            sel = by_n[h, n]
            curve = aggregate_curves([(r["rounds"], r["global_return"]) for r in sel], grid=sel[0]["rounds"])
            series.append(Series(f"N = {n}", curve, cmap(k / max(1, len(s.n_values) - 1))))
        ax.axhline(summary["target"], color="k", lw=0.8, ls=":", label="target")
        title = f"Fast-FedPG, heterogeneity {h}, H = {s.n_local_steps}"
        draw_panel(ax, series, title, "J: mean return over agents", "communication rounds", steps=False, fontsize=9)
    ax_t, ax_f = axes[0, len(hets)], axes[0, len(hets) + 1]
    for name, label, color in (("fedpg", "Fast-FedPG", "tab:blue"), ("fedavg", "FedAvg-PG", "tab:red")):
        x = summary["h_sweep"][name]
        hits = [[cap * 1.1 if y is None else y for y in x[str(v)]["rounds_to_target"]] for v in s.h_values]
        ax_t.plot(s.h_values, [np.median(hs) for hs in hits], "o-", color=color, label=label)
        for v, hs in zip(s.h_values, hits, strict=True):
            ax_t.scatter([v] * len(hs), hs, color=color, alpha=0.35, s=12)
        means, stds = ([x[str(v)][k] for v in s.h_values] for k in ("final_mean", "final_std"))
        ax_f.errorbar(s.h_values, means, yerr=stds, fmt="o-", color=color, capsize=3, label=label)
    ax_t.axhline(cap * 1.1, color="k", lw=0.6, ls=":")
    ax_t.text(s.h_values[0], cap * 1.12, "not reached", fontsize=7)
    for ax, ylabel, what in (
        (ax_t, f"rounds to J ≥ {s.target:g}", "rounds to target"),
        (ax_f, f"J after {cap} rounds", "final J"),
    ):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("local steps H")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_ylabel(ylabel)
        ax.set_title(f"N = {s.h_n_agents}, heterogeneity {s.h_heterogeneity}: {what}", fontsize=9)
    return fig


FEDPG = {"n_steps": 8, "learning_rate": 0.1, "critic_learning_rate": 3e-3}
STUDY = Study(
    "collaboration",
    __doc__,
    dict(env_id="sb3_fedpg/HeteroCartPole-v0", fedpg=FEDPG | {"n_envs_per_agent": 8}, seeds=[0, 1, 2])
    | dict(eval_envs_per_agent=8, n_values=[1, 2, 4, 8], n_heterogeneity=[0.0, 1.0], n_local_steps=5)  # the N sweep
    | dict(h_values=[1, 2, 5, 10, 20], h_heterogeneity=1.0, h_n_agents=8)  # the H sweep
    | dict(rounds=60, eval_every=2, target=100.0),  # both sweeps
    runs,
    report,
    quick=dict(fedpg=FEDPG | {"n_envs_per_agent": 2}, seeds=[0, 1], eval_envs_per_agent=1, n_values=[1, 2])
    | dict(n_heterogeneity=[1.0], n_local_steps=2, h_values=[1, 2], h_n_agents=2, rounds=4, target=20.0),
)
main = STUDY.main

if __name__ == "__main__":
    main()
