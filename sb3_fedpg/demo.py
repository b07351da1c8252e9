"""
The main demo: what the drift correction is for, on a family where the agents really disagree.

``python -m sb3_fedpg.demo`` trains, on ``sb3_fedpg/HeteroArm-v0`` (a two-link arm; each of 4 agents is rewarded
for holding the hand at its own goal, with its own cost weight), with the same seeds, budget and hyperparameters:

- **Fast-FedPG** (``H`` local steps with the memory-based correction),
- **FedAvg-PG** (the same without the correction),
- **centralised PG** (``H = 1``: gradients pooled every step — the reference a federation tries to reach).

It prints each agent's return under its own reward (mean over seeds) and writes ``learning_curve.png``
(``J̄``, the mean over agents of each agent's return under its own reward, vs env steps; bands over seeds) and
``demo.json``. FedAvg-PG's local steps drift toward each agent's own goal and stall below the reference; the
correction removes that drift. About a minute on an idle 2-core machine (several on a busy one).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time
from typing import Any

import numpy as np

from sb3_fedpg.common.cli import ArgumentParser

#: The federated hyperparameters of the heterogeneity benchmark (``benchmarks/heterogeneity.py``):
#: unnormalised advantages (normalising per agent would rescale each agent's reward), local critics, Adam.
HYPERPARAMS: dict[str, Any] = {
    "n_envs_per_agent": 16,
    "n_steps": 10,
    "gamma": 0.95,
    "gae_lambda": 0.95,
    "normalize_advantage": False,
    "critic_learning_rate": 1e-2,
    "learning_rate": 3e-3,
    "local_optimizer": "adam",
    "policy_kwargs": {"net_arch": [32, 32]},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="sb3_fedpg/HeteroArm-v0", help="heterogeneous family id")
    parser.add_argument("--n-agents", type=int, default=4, help="number of agents N")
    parser.add_argument("--heterogeneity", type=float, default=1.0, help="0 = identical agents, 1 = most different")
    parser.add_argument("--local-steps", type=int, default=5, help="local steps H per round")
    parser.add_argument("--timesteps", type=int, default=400_000, help="env steps per run (all agents together)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per method (bands in the plot)")
    parser.add_argument("--eval-every", type=int, default=10, help="evaluate every this many rounds")
    parser.add_argument("--output", default="runs/demo", help="folder for the PNG and JSON")
    parser.add_argument("--num-threads", type=int, default=1, help="torch threads (1 is fastest on small machines)")
    return parser.parse_args(argv)


METHODS = {  # name -> (local steps from args?, correction)
    "Fast-FedPG": (True, True),
    "FedAvg-PG": (True, False),
    "centralised PG (H = 1)": (False, True),
}


def train_and_track(args: argparse.Namespace, method: str, seed: int) -> dict[str, Any]:
    """
    Train one method with one seed, evaluating the global policy's ``J̄`` on every agent's task as it goes.

    :param args: the demo's arguments
    :param method: a key of :data:`METHODS`
    :param seed: the seed
    :return: the curve (env steps, ``J̄``) and the final per-agent returns
    """
    from sb3_fedpg import FederatedPG, make_federated_vec_env
    from sb3_fedpg.common.evaluation import evaluate_agents

    uses_h, correction = METHODS[method]
    local_steps = args.local_steps if uses_h else 1
    env_kwargs = {"heterogeneity": args.heterogeneity}
    model = FederatedPG(
        "MlpPolicy",
        args.env,
        n_agents=args.n_agents,
        local_steps=local_steps,
        correction=correction,
        env_kwargs=env_kwargs,
        seed=seed,
        **HYPERPARAMS,
    )
    eval_env = make_federated_vec_env(args.env, n_agents=args.n_agents, n_envs_per_agent=8, env_kwargs=env_kwargs, seed=10_000)
    # the same env-step grid for every method: eval_every rounds of H batches
    chunk = model.n_envs * model.n_steps * args.local_steps * args.eval_every
    curve: dict[str, list[float]] = {"timesteps": [], "global_return": []}
    start = time.perf_counter()
    while True:
        per_agent = evaluate_agents(model, eval_env, deterministic=True)
        curve["timesteps"].append(model.num_timesteps)
        curve["global_return"].append(float(per_agent.mean()))
        if model.num_timesteps >= args.timesteps:
            break
        model.learn(min(chunk, args.timesteps - model.num_timesteps), reset_num_timesteps=False)
    return {"curve": curve, "per_agent": per_agent.tolist(), "wall_seconds": time.perf_counter() - start}


def demo_title(env_id: str, n_agents: int, heterogeneity: float, seeds: int) -> str:
    """
    :param env_id: the family id
    :param n_agents: agents
    :param heterogeneity: the family's heterogeneity
    :param seeds: seeds per method
    :return: the title of the demo's figure (``zoo.plot --title`` takes the same text)
    """
    return (
        f"{n_agents} agents, {env_id.split('/')[-1]}, heterogeneity {heterogeneity:g}\n"
        f"H = local steps between communications; mean and range over {seeds} seeds"
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch as th
    from rich.console import Console
    from rich.table import Table

    from sb3_fedpg.common.plotting import Series, aggregate_curves, draw_panel

    th.set_num_threads(args.num_threads)
    console = Console()
    output = pathlib.Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    console.print(
        f"[bold]{args.env}[/bold]: N={args.n_agents}, heterogeneity={args.heterogeneity}, H={args.local_steps}, "
        f"{args.timesteps:,} env steps per run, {args.seeds} seed(s) per method"
    )
    results: dict[str, list[dict[str, Any]]] = {}
    for method in METHODS:
        results[method] = []
        for seed in range(args.seeds):
            run = train_and_track(args, method, seed)
            console.print(
                f"  {method:<24} seed {seed}: J̄ = {run['curve']['global_return'][-1]:8.1f}  ({run['wall_seconds']:.0f} s)"
            )
            results[method].append(run)

    final = {m: np.array([r["curve"]["global_return"][-1] for r in runs]) for m, runs in results.items()}
    table = Table(title=f"Return of the global policy under each agent's own reward (mean over {args.seeds} seeds)")
    table.add_column("agent", justify="right")
    for method in results:
        table.add_column(method, justify="right")
    for i in range(args.n_agents):
        table.add_row(str(i), *[f"{np.mean([r['per_agent'][i] for r in runs]):.1f}" for runs in results.values()])
    table.add_row("[bold]average J̄[/bold]", *[f"[bold]{final[m].mean():.1f} ± {final[m].std():.1f}[/bold]" for m in results])
    console.print(table)

    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    h = args.local_steps
    styles = {  # method -> (legend label, colour, line style)
        "Fast-FedPG": (f"with correction (Fast-FedPG), H = {h}", "tab:blue", "-"),
        "FedAvg-PG": (f"without correction (FedAvg-PG), H = {h}", "tab:red", "-"),
        "centralised PG (H = 1)": ("centralised (gradients pooled every step, H = 1)", "k", "--"),
    }
    series = []
    for method, runs in results.items():  # mean and range (min to max) over seeds, as zoo.plot --band minmax
        label, color, style = styles[method]
        curves = [(r["curve"]["timesteps"], r["curve"]["global_return"]) for r in runs]
        series.append(Series(label, aggregate_curves(curves, band="minmax"), color, style))
    draw_panel(ax, series, title=demo_title(args.env, args.n_agents, args.heterogeneity, args.seeds))
    fig.tight_layout()
    png = output / "learning_curve.png"
    fig.savefig(png, dpi=120)
    payload = {"args": vars(args), "hyperparams": HYPERPARAMS, "results": results}
    (output / "demo.json").write_text(json.dumps(payload, indent=2))
    console.print(f"Learning curves: {png}\nCurves and table: {output / 'demo.json'}")
    return payload


if __name__ == "__main__":
    main()
