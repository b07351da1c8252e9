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

Hyperparameters are the comparison benchmark's CartPole FedPG settings
(``benchmarks/comparison.py``). Each run is cached under ``runs/collaboration/`` (resumable).
Writes ``benchmarks/results/collaboration.json``, ``collaboration.png`` and ``collaboration.md``.
Run: ``python benchmarks/collaboration.py`` (``--quick`` for a smoke run into ``runs/collaboration_quick/``).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import multiprocessing
import os
import pathlib
import platform
import sys
import time
from typing import Any

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import neural_runs  # the benchmarks folder is not a package: import the sibling module

from sb3_fedpg.common.cli import ArgumentParser

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
CACHE = ROOT / "runs" / "collaboration"

#: The experiment. ``fedpg`` holds the FederatedPG arguments shared by every run.
CONFIG: dict[str, Any] = {
    "env_id": "sb3_fedpg/HeteroCartPole-v0",
    "fedpg": {"n_steps": 8, "learning_rate": 0.1, "critic_learning_rate": 3e-3, "n_envs_per_agent": 8},
    "seeds": [0, 1, 2],
    "eval_envs_per_agent": 8,
    # N sweep
    "n_values": [1, 2, 4, 8],
    "n_heterogeneity": [0.0, 1.0],
    "n_local_steps": 5,
    # H sweep
    "h_values": [1, 2, 5, 10, 20],
    "h_heterogeneity": 1.0,
    "h_n_agents": 8,
    # both sweeps
    "rounds": 60,
    "eval_every": 2,
    "target": 100.0,
}

QUICK_CONFIG: dict[str, Any] = {
    **CONFIG,
    "fedpg": {"n_steps": 8, "learning_rate": 0.1, "critic_learning_rate": 3e-3, "n_envs_per_agent": 2},
    "seeds": [0, 1],
    "eval_envs_per_agent": 1,
    "n_values": [1, 2],
    "n_heterogeneity": [1.0],
    "n_local_steps": 2,
    "h_values": [1, 2],
    "h_n_agents": 2,
    "rounds": 4,
    "eval_every": 2,
    "target": 20.0,
}


def run_one(
    config: dict[str, Any], n_agents: int, heterogeneity: float, local_steps: int, correction: bool, seed: int
) -> dict:
    """
    Train one FederatedPG for a number of rounds, evaluating ``J`` every few rounds.

    :return: ``J`` (mean over agents of each agent's return under its own reward, stochastic policy) vs rounds
        and env steps
    """
    import torch as th

    th.set_num_threads(1)
    from sb3_fedpg import FederatedPG, make_federated_vec_env

    rounds, every = config["rounds"], config["eval_every"]
    env_kwargs = {"heterogeneity": heterogeneity}
    model = FederatedPG(
        "MlpPolicy",
        config["env_id"],
        n_agents=n_agents,
        local_steps=local_steps,
        correction=correction,
        env_kwargs=env_kwargs,
        seed=seed,
        **config["fedpg"],
    )
    eval_env = make_federated_vec_env(
        config["env_id"],
        n_agents=n_agents,
        n_envs_per_agent=config["eval_envs_per_agent"],
        env_kwargs=env_kwargs,
        seed=10_000 + seed,
    )
    per_round = model.n_envs * model.n_steps * local_steps
    budget = rounds * per_round
    callback = neural_runs.curve_callback(lambda m: neural_runs.stochastic_returns(m, eval_env, 1), every * per_round, budget)
    start = time.perf_counter()
    model.learn(budget, callback=callback)
    final = neural_runs.stochastic_returns(model, eval_env, 1)
    curve = callback.curve
    return {
        "n_agents": n_agents,
        "heterogeneity": heterogeneity,
        "local_steps": local_steps,
        "correction": correction,
        "seed": seed,
        "rounds": [*curve["rounds"], int(model._n_rounds)],
        "timesteps": [*curve["timesteps"], int(model.num_timesteps)],
        "global_return": [*(float(np.mean(p)) for p in curve["per_agent"]), float(final.mean())],
        "samples_per_agent_per_round": per_round // n_agents,
        "seconds": time.perf_counter() - start,
    }


def _key(config: dict[str, Any], job: tuple[Any, ...]) -> str:
    blob = json.dumps({"config": config, "job": job, "version": 1}, sort_keys=True)
    n, h, local_steps, correction, seed = job
    name = "fedpg" if correction else "fedavg"
    return f"N{n}_h{h}_H{local_steps}_{name}_s{seed}_{hashlib.sha1(blob.encode()).hexdigest()[:10]}"


def _cached_run(cache: pathlib.Path, config: dict[str, Any], job: tuple[Any, ...]) -> dict[str, Any]:
    path = cache / f"{_key(config, job)}.json"
    if path.exists():
        return json.loads(path.read_text())
    result = run_one(config, *job)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, path)
    return result


def rounds_to_target(run: dict[str, Any], target: float) -> float:
    """:return: the first evaluated round with ``J >= target`` (``inf`` if never)"""
    for r, value in zip(run["rounds"], run["global_return"], strict=True):
        if value >= target:
            return float(r)
    return float("inf")


def jobs_of(config: dict[str, Any]) -> list[tuple[Any, ...]]:
    """:return: every (n_agents, heterogeneity, local_steps, correction, seed) run of the experiment"""
    jobs = [
        (n, h, config["n_local_steps"], True, s)
        for h in config["n_heterogeneity"]
        for n in config["n_values"]
        for s in config["seeds"]
    ]
    jobs += [
        (config["h_n_agents"], config["h_heterogeneity"], local_steps, correction, s)
        for local_steps in config["h_values"]
        for correction in (True, False)
        for s in config["seeds"]
    ]
    return list(dict.fromkeys(jobs))  # the N sweep's N = 8 run may double as an H sweep run


def summarize(runs: dict[tuple[Any, ...], dict[str, Any]], config: dict[str, Any]) -> dict[str, Any]:
    """Final J and rounds-to-target per setting (mean ± std over seeds), and the fitted trends."""
    target = config["target"]

    def stats(sel: list[dict[str, Any]]) -> dict[str, Any]:
        finals = np.asarray([r["global_return"][-1] for r in sel])
        hits = np.asarray([rounds_to_target(r, target) for r in sel])
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

    n_sweep = {
        str(h): {
            str(n): stats([runs[(n, h, config["n_local_steps"], True, s)] for s in config["seeds"]])
            for n in config["n_values"]
        }
        for h in config["n_heterogeneity"]
    }
    h_sweep = {
        name: {
            str(local_steps): stats(
                [runs[(config["h_n_agents"], config["h_heterogeneity"], local_steps, correction, s)] for s in config["seeds"]]
            )
            for local_steps in config["h_values"]
        }
        for name, correction in (("fedpg", True), ("fedavg", False))
    }
    return {"target": target, "n_sweep": n_sweep, "h_sweep": h_sweep}


def markdown_table(summary: dict[str, Any], config: dict[str, Any]) -> str:
    """The results tables, generated from the summary."""

    def hit(s: dict[str, Any]) -> str:
        median = s["rounds_to_target_median"]
        return (
            f"{median:.0f} ({s['reached']}/{len(s['rounds_to_target'])})"
            if median is not None
            else f"— ({s['reached']}/{len(s['rounds_to_target'])})"
        )

    target = summary["target"]
    lines = [
        f"N sweep: {config['rounds']} rounds, H = {config['n_local_steps']}, "
        "the same samples per agent per round for every N. "
        f"Rounds to J ≥ {target:g}: median over seeds (seeds that reached it).",
        "",
        "| heterogeneity | N | samples / agent / round | final J | mean J over the run | rounds to target |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for h, by_n in summary["n_sweep"].items():
        for n, s in by_n.items():
            lines.append(
                f"| {h} | {n} | {s['samples_per_agent_per_round']} | {s['final_mean']:.1f} ± {s['final_std']:.1f} | "
                f"{s['auc_mean']:.1f} | {hit(s)} |"
            )
    lines += [
        "",
        f"H sweep: N = {config['h_n_agents']}, heterogeneity {config['h_heterogeneity']}, "
        f"at most {config['rounds']} rounds. "
        f"Rounds to J ≥ {target:g}: median over seeds (seeds that reached it).",
        "",
        "| H | Fast-FedPG rounds to target | FedAvg-PG rounds to target | Fast-FedPG final J | FedAvg-PG final J |",
        "|---:|---:|---:|---:|---:|",
    ]
    for local_steps in summary["h_sweep"]["fedpg"]:
        f, a = summary["h_sweep"]["fedpg"][local_steps], summary["h_sweep"]["fedavg"][local_steps]
        lines.append(
            f"| {local_steps} | {hit(f)} | {hit(a)} | {f['final_mean']:.1f} ± {f['final_std']:.1f} | "
            f"{a['final_mean']:.1f} ± {a['final_std']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def plot(
    runs: dict[tuple[Any, ...], dict[str, Any]], summary: dict[str, Any], config: dict[str, Any], path: pathlib.Path
) -> None:
    """J vs rounds for each N (one panel per heterogeneity), and rounds-to-target / final J vs H."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sb3_fedpg.common.plotting import Series, aggregate_curves, draw_panel

    hets = config["n_heterogeneity"]
    fig, axes = plt.subplots(1, len(hets) + 2, figsize=(4.6 * (len(hets) + 2), 3.8), squeeze=False)
    cmap = plt.get_cmap("viridis")
    for col, h in enumerate(hets):
        ax = axes[0, col]
        series = []
        for k, n in enumerate(config["n_values"]):
            sel = [runs[(n, h, config["n_local_steps"], True, s)] for s in config["seeds"]]
            curve = aggregate_curves([(r["rounds"], r["global_return"]) for r in sel], grid=sel[0]["rounds"])
            series.append(Series(f"N = {n}", curve, cmap(k / max(1, len(config["n_values"]) - 1))))
        ax.axhline(summary["target"], color="k", lw=0.8, ls=":", label="target")
        title = f"Fast-FedPG, heterogeneity {h}, H = {config['n_local_steps']}"
        draw_panel(ax, series, title, "J: mean return over agents", "communication rounds", steps=False, fontsize=9)
    ax_t, ax_f = axes[0, len(hets)], axes[0, len(hets) + 1]
    h_values = config["h_values"]
    cap = config["rounds"]
    for name, label, color in (("fedpg", "Fast-FedPG", "tab:blue"), ("fedavg", "FedAvg-PG", "tab:red")):
        stats = summary["h_sweep"][name]
        hits = [[cap * 1.1 if x is None else x for x in stats[str(v)]["rounds_to_target"]] for v in h_values]
        med = [np.median(hs) for hs in hits]
        ax_t.plot(h_values, med, "o-", color=color, label=label)
        for v, hs in zip(h_values, hits, strict=True):
            ax_t.scatter([v] * len(hs), hs, color=color, alpha=0.35, s=12)
        means = [stats[str(v)]["final_mean"] for v in h_values]
        stds = [stats[str(v)]["final_std"] for v in h_values]
        ax_f.errorbar(h_values, means, yerr=stds, fmt="o-", color=color, capsize=3, label=label)
    ax_t.axhline(cap * 1.1, color="k", lw=0.6, ls=":")
    ax_t.text(h_values[0], cap * 1.12, "not reached", fontsize=7)
    for ax in (ax_t, ax_f):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("local steps H")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax_t.set_ylabel(f"rounds to J ≥ {summary['target']:g}")
    ax_t.set_title(f"N = {config['h_n_agents']}, heterogeneity {config['h_heterogeneity']}: rounds to target", fontsize=9)
    ax_f.set_ylabel(f"J after {cap} rounds")
    ax_f.set_title(f"N = {config['h_n_agents']}, heterogeneity {config['h_heterogeneity']}: final J", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None, output: pathlib.Path = RESULTS) -> dict[str, Any]:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny budgets (smoke run)")
    parser.add_argument("--workers", type=int, default=2, help="parallel worker processes (one torch thread each)")
    parser.add_argument("--cache", type=pathlib.Path, default=None, help="folder of the per-run results (resume)")
    parser.add_argument(
        "--output",
        type=pathlib.Path,
        default=None,
        help="folder for the JSON, PNG and table (--quick: runs/collaboration_quick)",
    )
    args = parser.parse_args(argv)
    if args.output is not None:
        output = args.output
    elif args.quick and output == RESULTS:  # a smoke run never overwrites the committed results
        output = ROOT / "runs" / "collaboration_quick"
    config = QUICK_CONFIG if args.quick else CONFIG
    cache = args.cache or (output / "collaboration_runs" if args.quick else CACHE)
    jobs = jobs_of(config)

    from tqdm import tqdm

    start = time.perf_counter()
    runs: dict[tuple[Any, ...], dict[str, Any]] = {}
    if args.workers <= 1 or args.quick:
        for job in tqdm(jobs, desc="collaboration"):
            runs[job] = _cached_run(cache, config, job)
    else:
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=args.workers, mp_context=ctx) as pool:
            futures = {pool.submit(_cached_run, cache, config, job): job for job in jobs}
            for future in tqdm(concurrent.futures.as_completed(futures), total=len(futures), desc="collaboration"):
                runs[futures[future]] = future.result()
    wall = time.perf_counter() - start
    summary = summarize(runs, config)
    payload = {
        "quick": args.quick,
        "config": config,
        "machine": {"python": platform.python_version(), "cpus": multiprocessing.cpu_count(), "torch_threads": 1},
        "wall_seconds_this_invocation": wall,
        "run_seconds_total": float(sum(r["seconds"] for r in runs.values())),
        "summary": summary,
        "runs": [runs[job] for job in jobs],
    }
    output.mkdir(parents=True, exist_ok=True)
    (output / "collaboration.json").write_text(json.dumps(payload, indent=1))
    (output / "collaboration.md").write_text(markdown_table(summary, config))
    plot(runs, summary, config, output / "collaboration.png")
    print(markdown_table(summary, config))
    return payload


if __name__ == "__main__":
    main()
