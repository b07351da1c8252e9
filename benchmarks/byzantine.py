"""
Byzantine robustness: 2 of 10 agents send corrupted messages.

Fast-FedPG on ``sb3_fedpg/HeteroCartPole-v0`` (N = 10, heterogeneity 0.5). Agents 3 and 7
are adversarial: they send ``−10 ×`` their honest anchor gradient and parameter change
(sign flip). For each server aggregator (mean, coordinate-wise median, trimmed mean with
20 % trimmed at each end, geometric median, mean of norm-clipped vectors) we train with and without the attack at the
same budget and seeds, and evaluate the final global policy's return under each *honest*
agent's reward (the stochastic policy, 8 episodes per honest agent).

Writes ``benchmarks/results/byzantine.json``, ``byzantine.png`` and ``byzantine.md``.
Run: ``python benchmarks/byzantine.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time
from typing import Any

import numpy as np

from sb3_fedpg.common.cli import ArgumentParser

RESULTS = pathlib.Path(__file__).parent / "results"
ENV_ID = "sb3_fedpg/HeteroCartPole-v0"
N_AGENTS = 10
ADVERSARIES = [3, 7]
AGGREGATORS = {
    "mean": {},
    "median": {},
    "trimmed_mean": {"trim": 0.2},
    "geometric_median": {},
    "norm_clipped_mean": {},  # each agent's vector scaled to at most the round's median norm
}


def run_one(aggregator: str, attacked: bool, seed: int, timesteps: int) -> float:
    """Train one configuration; return the mean return over honest agents' tasks."""
    import torch as th

    th.set_num_threads(1)
    from sb3_fedpg import FederatedPG, make_federated_vec_env
    from sb3_fedpg.common.adversarial import ByzantineAttack
    from sb3_fedpg.common.evaluation import evaluate_agents

    env_kwargs = {"heterogeneity": 0.5}
    model = FederatedPG(
        "MlpPolicy",
        ENV_ID,
        n_agents=N_AGENTS,
        n_envs_per_agent=4,
        n_steps=16,
        local_steps=5,
        learning_rate=0.1,
        env_kwargs=env_kwargs,
        aggregator=aggregator,
        aggregator_kwargs=AGGREGATORS[aggregator],
        attack=ByzantineAttack(ADVERSARIES, kind="sign_flip", scale=10.0, seed=seed) if attacked else None,
        seed=seed,
    )
    model.learn(timesteps)
    eval_env = make_federated_vec_env(ENV_ID, n_agents=N_AGENTS, n_envs_per_agent=8, env_kwargs=env_kwargs, seed=1000 + seed)
    per_agent = evaluate_agents(model, eval_env, deterministic=False)
    honest = [i for i in range(N_AGENTS) if i not in ADVERSARIES]
    return float(per_agent[honest].mean())


def markdown_table(payload: dict[str, Any]) -> str:
    """The README table, generated from the JSON."""
    lines = [
        "| aggregator | clean J | attacked J (2/10 sign-flip x10) | attacked / clean, same rule | attacked / clean mean |",
        "|---|---:|---:|---:|---:|",
    ]
    for agg, s in payload["summary"].items():
        lines.append(
            f"| {agg} | {s['clean']:.1f} | {s['attacked']:.1f} ± {s['attacked_std']:.1f} | "
            f"{s['attacked'] / s['clean']:.0%} | {s['kept_of_clean_mean']:.0%} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None, output: pathlib.Path = RESULTS) -> dict[str, Any]:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny budget (smoke run)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--timesteps", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    seeds = list(range(1 if args.quick else args.seeds))
    timesteps = 2_000 if args.quick else args.timesteps

    from tqdm import tqdm

    start = time.perf_counter()
    results: dict[str, dict[str, list[float]]] = {}
    jobs = [(agg, attacked) for agg in AGGREGATORS for attacked in (False, True)]
    for agg, attacked in tqdm(jobs, desc="byzantine"):
        key = "attacked" if attacked else "clean"
        results.setdefault(agg, {})[key] = [run_one(agg, attacked, seed, timesteps) for seed in seeds]
    clean_mean = float(np.mean(results["mean"]["clean"]))
    summary = {
        agg: {
            "clean": float(np.mean(r["clean"])),
            "attacked": float(np.mean(r["attacked"])),
            "attacked_std": float(np.std(r["attacked"])),
            "kept_of_clean_mean": float(np.mean(r["attacked"]) / clean_mean),
        }
        for agg, r in results.items()
    }
    payload = {
        "env": ENV_ID,
        "n_agents": N_AGENTS,
        "adversaries": ADVERSARIES,
        "attack": "sign_flip x10 on anchors and parameter changes",
        "timesteps": timesteps,
        "seeds": seeds,
        "quick": args.quick,
        "results": results,
        "summary": summary,
        "seconds": time.perf_counter() - start,
    }
    output.mkdir(parents=True, exist_ok=True)
    (output / "byzantine.json").write_text(json.dumps(payload, indent=2))
    (output / "byzantine.md").write_text(markdown_table(payload))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(len(summary))
    ax.bar(x - 0.2, [s["clean"] for s in summary.values()], 0.4, label="clean")
    ax.bar(
        x + 0.2,
        [s["attacked"] for s in summary.values()],
        0.4,
        yerr=[s["attacked_std"] for s in summary.values()],
        label="2 of 10 agents adversarial",
    )
    ax.set_xticks(x, list(summary))
    ax.set_ylabel("J: mean return over honest agents' tasks")
    ax.set_title(f"Fast-FedPG, {ENV_ID}, N={N_AGENTS}, {len(seeds)} seeds, {timesteps:,} steps")
    ax.legend()
    fig.tight_layout()
    fig.savefig(output / "byzantine.png", dpi=120)
    print((output / "byzantine.md").read_text())
    return payload


if __name__ == "__main__":
    main()
