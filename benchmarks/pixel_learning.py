"""
FederatedPG with ``CnnPolicy`` (``SmallCNN`` extractor) learns a pixel task: ``sb3_fedpg/HeteroPixelGrid-v0``
from 42×42 images.

4 agents × 8 envs, each agent with its own goal and cost weight (heterogeneity ``h = 1``); Fast-FedPG's
correction on (the default). Every tenth of the budget the global policy is evaluated deterministically on a
separate federated env (2 episodes per sub-environment, 64 episodes, every agent under its own reward) and
its average return ``J`` is set against the exact yardsticks of the family (dynamic programming over the
49 cells, :func:`sb3_fedpg.envs.pixelgrid.pixel_grid_returns`): the best single policy ``J*`` and the uniformly
random policy. ``score = (J − J_random) / (J* − J_random)``: 0 is random, 1 is optimal. One process per seed,
one torch thread each.
Writes ``benchmarks/results/pixel_learning.{json,md}``.

    python benchmarks/pixel_learning.py            # a few minutes on 2 cores
    python benchmarks/pixel_learning.py --quick    # smoke test
"""

from __future__ import annotations

import argparse
import concurrent.futures
import importlib.util
import json
import multiprocessing
import pathlib
import time
from typing import Any

from sb3_fedpg.common.cli import ArgumentParser

HERE = pathlib.Path(__file__).resolve().parent
RESULTS = HERE / "results"


def _common() -> Any:
    spec = importlib.util.spec_from_file_location("pixel_common", HERE / "pixel_common.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def run(seed: int, budget: int, n_evals: int) -> dict[str, Any]:
    """:return: the learning curve (env steps, seconds, J) of one seed (run in its own process, one torch thread)"""
    import torch as th

    from sb3_fedpg import FederatedPG
    from sb3_fedpg.common.evaluation import evaluate_agents

    th.set_num_threads(1)
    common = _common()
    env, policy_kwargs = common.make_env(seed), common.policy_kwargs()
    model = FederatedPG("CnnPolicy", env, seed=seed, device="cpu", policy_kwargs=policy_kwargs, **common.FEDPG_KWARGS)
    eval_env = common.make_env(10_000 + seed)
    curve: list[dict[str, float]] = []
    train_seconds = 0.0
    for _ in range(n_evals):
        start = time.perf_counter()
        model.learn(budget // n_evals, reset_num_timesteps=False)
        train_seconds += time.perf_counter() - start
        j = float(evaluate_agents(model, eval_env, n_episodes_per_env=2).mean())
        curve.append({"env_steps": model.num_timesteps, "train_seconds": train_seconds, "J": j})
        print(f"seed {seed}: {model.num_timesteps:,} steps, {train_seconds:.0f} s, J = {j:.2f}", flush=True)
    return {"seed": seed, "curve": curve}


def write_table(result: dict[str, Any], output: pathlib.Path) -> None:
    """
    Write ``pixel_learning.md``: per seed the first and last evaluations and the mean of the last three (the
    deterministic evaluations are noisy from one to the next).

    :param result: the benchmark's result (as saved in ``pixel_learning.json``)
    :param output: the results folder
    """
    reference = result["reference"]

    def score(j: float) -> float:
        return (j - reference["random"]) / (reference["optimal"] - reference["random"])

    lines = [
        "| seed | env steps | training time (s) | J first eval → last | J mean of last 3 evals | score of that mean "
        "(0 random, 1 optimal) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for run in result["runs"]:
        curve = run["curve"]
        late = sum(point["J"] for point in curve[-3:]) / len(curve[-3:])
        lines.append(
            f"| {run['seed']} | {curve[-1]['env_steps']:,} | {curve[-1]['train_seconds']:.0f} | "
            f"{curve[0]['J']:.1f} → {curve[-1]['J']:.1f} | {late:.1f} | **{score(late):.2f}** |"
        )
    lines += [
        "",
        f"Exact yardsticks (dynamic programming): best single policy J* = {reference['optimal']:.2f}, uniformly random "
        f"policy {reference['random']:.2f}. Evaluations every {curve[0]['env_steps']:,} steps. FederatedPG, `CnnPolicy` "
        f"with `SmallCNN`: `{result['config']['fedpg_kwargs']}`; one torch thread per seed on a shared 2-core machine "
        "(training time excludes the evaluations).",
    ]
    (output / "pixel_learning.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv: list[str] | None = None, output: pathlib.Path = RESULTS) -> dict[str, Any]:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=int, default=100_000, help="env steps per seed (all agents)")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--evals", type=int, default=10)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--table-only", action="store_true", help="rewrite the table from the saved JSON")
    args = parser.parse_args(argv)
    if args.table_only:
        result = json.loads((output / "pixel_learning.json").read_text())
        write_table(result, output)
        return result
    if args.quick:
        args.budget, args.seeds, args.evals = 1024, 1, 2
    from sb3_fedpg.envs.pixelgrid import pixel_grid_returns

    common = _common()
    reference = pixel_grid_returns(common.N_AGENTS, common.HETEROGENEITY)
    # one process per seed (they share nothing; the wall time is the slowest seed's)
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(args.seeds, mp_context=context) as pool:
        runs = list(pool.map(run, range(args.seeds), [args.budget] * args.seeds, [args.evals] * args.seeds))

    def score(j: float) -> float:
        return (j - reference["random"]) / (reference["optimal"] - reference["random"])

    finals = [r["curve"][-1] for r in runs]
    result = {
        "config": {
            "env": f"{common.ENV_ID}, {common.N_AGENTS} agents x {common.N_ENVS_PER_AGENT} envs, "
            f"heterogeneity {common.HETEROGENEITY}",
            "policy": "CnnPolicy with features_extractor_class=SmallCNN",
            "fedpg_kwargs": common.FEDPG_KWARGS,
            "budget": args.budget,
            "seeds": args.seeds,
            "evaluation": "deterministic, 2 episodes per sub-environment (64), each agent under its own reward",
            "torch_threads": 1,
        },
        "reference": reference,
        "runs": runs,
        "final": [{"seed": r["seed"], **f, "score": score(f["J"])} for r, f in zip(runs, finals, strict=True)],
    }
    output.mkdir(parents=True, exist_ok=True)
    (output / "pixel_learning.json").write_text(json.dumps(result, indent=2) + "\n")
    write_table(result, output)
    return result


if __name__ == "__main__":
    main()
