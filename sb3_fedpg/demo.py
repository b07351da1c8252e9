"""
The main demo: Fast-FedPG vs FedAvg-PG on a heterogeneous federated CartPole.

``python -m sb3_fedpg.demo`` trains both algorithms with the same seed, budget and
hyperparameters (only the drift correction differs), prints a per-agent table of
returns under each agent's own reward, and writes a learning-curve PNG and a JSON of
the curves.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time
from typing import Any

import numpy as np


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="sb3_fedpg/HeteroCartPole-v0", help="heterogeneous family id")
    parser.add_argument("--n-agents", type=int, default=8, help="number of agents N")
    parser.add_argument("--heterogeneity", type=float, default=1.0, help="0 = identical agents, 1 = most different")
    parser.add_argument("--local-steps", type=int, default=5, help="local steps H per round")
    # With N agents a round costs N times the samples of one agent's batch: shorter
    # segments and a larger step give more rounds for the demo's small budget.
    parser.add_argument("--n-steps", type=int, default=16, help="steps per trajectory segment in a gradient batch")
    parser.add_argument("--learning-rate", type=float, default=0.1, help="local step size")
    parser.add_argument("--timesteps", type=int, default=300_000, help="env steps per algorithm (all agents together)")
    parser.add_argument("--eval-every", type=int, default=2, help="evaluate every this many rounds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="runs/demo", help="folder for the PNG and JSON")
    parser.add_argument("--num-threads", type=int, default=1, help="torch threads (1 is fastest on small machines)")
    return parser.parse_args(argv)


def train_and_track(args: argparse.Namespace, correction: bool) -> dict[str, Any]:
    """
    Train one algorithm, evaluating the global policy on every agent's task as it goes.

    :param args: the demo's arguments
    :param correction: Fast-FedPG (``True``) or FedAvg-PG (``False``)
    :return: the curve (env steps, rounds, global objective) and the final per-agent returns
    """
    from sb3_fedpg import FederatedPG, make_federated_vec_env
    from sb3_fedpg.common.evaluation import evaluate_agents

    env_kwargs = {"heterogeneity": args.heterogeneity}
    model = FederatedPG(
        "MlpPolicy",
        args.env,
        n_agents=args.n_agents,
        local_steps=args.local_steps,
        n_steps=args.n_steps,
        learning_rate=args.learning_rate,
        correction=correction,
        env_kwargs=env_kwargs,
        seed=args.seed,
    )
    eval_env = make_federated_vec_env(args.env, n_agents=args.n_agents, n_envs_per_agent=8, env_kwargs=env_kwargs, seed=10_000)
    steps_per_round = model.n_envs * model.n_steps * (model.local_steps + (0 if model.reuse_anchor_batch else 1))
    chunk = steps_per_round * args.eval_every
    curve: dict[str, list[float]] = {"timesteps": [], "rounds": [], "global_return": []}
    start = time.perf_counter()
    train_time = 0.0
    while True:
        # The objective J(θ) is the stochastic policy's expected return: evaluate that policy.
        per_agent = evaluate_agents(model, eval_env, deterministic=False)
        curve["timesteps"].append(model.num_timesteps)
        curve["rounds"].append(model._n_rounds)
        curve["global_return"].append(float(per_agent.mean()))
        if model.num_timesteps >= args.timesteps:
            break
        t0 = time.perf_counter()
        model.learn(min(chunk, args.timesteps - model.num_timesteps), reset_num_timesteps=False)
        train_time += time.perf_counter() - t0
    return {
        "curve": curve,
        "per_agent": per_agent.tolist(),
        "train_steps_per_second": model.num_timesteps / train_time,
        "wall_seconds": time.perf_counter() - start,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch as th
    from rich.console import Console
    from rich.table import Table

    th.set_num_threads(args.num_threads)
    console = Console()
    output = pathlib.Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    results = {}
    for name, correction in (("Fast-FedPG", True), ("FedAvg-PG", False)):
        console.print(
            f"[bold]Training {name}[/bold] on {args.env}: N={args.n_agents}, H={args.local_steps}, "
            f"heterogeneity={args.heterogeneity}, {args.timesteps:,} env steps"
        )
        results[name] = train_and_track(args, correction)

    table = Table(title=f"Return of the global (stochastic) policy under each agent's own reward ({args.env})")
    table.add_column("agent", justify="right")
    for name in results:
        table.add_column(name, justify="right")
    for i in range(args.n_agents):
        table.add_row(str(i), *[f"{results[name]['per_agent'][i]:.1f}" for name in results])
    table.add_row("[bold]average (J)[/bold]", *[f"[bold]{np.mean(results[n]['per_agent']):.1f}[/bold]" for n in results])
    table.add_row("train steps/s", *[f"{results[n]['train_steps_per_second']:,.0f}" for n in results])
    console.print(table)

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, res in results.items():
        ax.plot(res["curve"]["timesteps"], res["curve"]["global_return"], label=name)
    ax.set_xlabel("environment steps (all agents)")
    ax.set_ylabel("J(θ): mean return over agents' own tasks")
    ax.set_title(f"{args.env}, N={args.n_agents}, H={args.local_steps}, heterogeneity={args.heterogeneity}")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    png = output / "learning_curve.png"
    fig.savefig(png, dpi=120)
    payload = {"args": vars(args), "results": results}
    (output / "demo.json").write_text(json.dumps(payload, indent=2))
    console.print(f"Learning curve: {png}\nCurves and table: {output / 'demo.json'}")
    return payload


if __name__ == "__main__":
    main()
