"""
Learning parity between devices: the same configurations trained on the CPU and on a GPU must learn alike
(the two draw different random numbers, so the comparison is over several seeds, not bit for bit).

SB3's identity envs (the pattern of SB3's tests/test_identity.py) on a federated env of two agents, the settings of
tests/common/test_identity.py; every run's evaluation return (20 episodes, deterministic, 100 is perfect) is printed
and written as JSON.

    python tools/device_parity.py --devices cpu cuda --output parity.json     # on a GPU machine
    python tools/device_parity.py --report parity.json --output benchmarks/results/device_parity   # its table
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np
import torch as th
from stable_baselines3.common.envs import IdentityEnv, IdentityEnvBox
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_fedpg import FederatedPG, FederatedPPO, make_federated_vec_env
from sb3_fedpg.common.cli import ArgumentParser

ENVS = {"Discrete": lambda: IdentityEnv(4), "Box": lambda: IdentityEnvBox(eps=0.5)}
SETTINGS = {
    "FederatedPG": (FederatedPG, 10_000, {}),
    "FederatedPPO": (FederatedPPO, 4000, {"learning_rate": 3e-3, "n_epochs": 4}),
}


def run(algo: str, space: str, seed: int, device: str) -> float:
    seeds = iter(range(1000))

    def make():
        env = ENVS[space]()
        env.action_space.seed(next(seeds))
        return env

    env = make_federated_vec_env([make] * 2, n_envs_per_agent=2, seed=0)
    cls, budget, kwargs = SETTINGS[algo]
    model = cls("MlpPolicy", env, gamma=0.4, n_steps=16, seed=seed, device=device, **kwargs)
    model.learn(budget)
    return float(evaluate_policy(model, env, n_eval_episodes=20, warn=False)[0])


def report(results: list[dict], output: pathlib.Path) -> str:
    """Write ``output``.json and the table ``output``.md (one row per case, one column group per device)."""
    devices = list(dict.fromkeys(r["device"] for r in results))
    cases = list(dict.fromkeys((r["algo"], r["space"]) for r in results))
    lines = [
        "| algorithm | action space | " + " | ".join(f"{d}: returns per seed | {d}: s per run" for d in devices) + " |",
        "|---|---|" + "---|---:|" * len(devices),
    ]
    for algo, space in cases:
        cells = []
        for device in devices:
            runs = [r for r in results if (r["algo"], r["space"], r["device"]) == (algo, space, device)]
            cells.append(", ".join(f"{r['eval_return']:g}" for r in runs))
            cells.append(f"{np.median([r['seconds'] for r in runs]):.1f}")
        lines.append(f"| {algo} | {space} | " + " | ".join(cells) + " |")
    seeds = sorted({r["seed"] for r in results})
    lines += [
        "",
        f"Seeds {', '.join(map(str, seeds))} in this order; evaluation return over 20 deterministic episodes (100 is "
        "perfect); the devices' runs interleaved seed by seed in one process, one torch thread.",
    ]
    output.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    output.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return "\n".join(lines)


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", nargs="+", default=["cpu", "cuda"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[3, 4, 5, 6])
    parser.add_argument("--cases", nargs="+", default=["FederatedPG:Box", "FederatedPG:Discrete", "FederatedPPO:Box"])
    parser.add_argument("--output", default="parity", help="writes <output>.json and <output>.md")
    parser.add_argument("--report", help="only write the table of a JSON this script wrote")
    args = parser.parse_args()
    output = pathlib.Path(args.output)
    if args.report:
        print(report(json.loads(pathlib.Path(args.report).read_text()), output))
        return
    th.set_num_threads(1)
    results = []
    for case in args.cases:
        algo, space = case.split(":")
        for seed in args.seeds:
            for device in args.devices:  # interleaved: a slow device cannot hide behind the other's order
                start = time.perf_counter()
                ret = run(algo, space, seed, device)
                results.append(
                    dict(
                        algo=algo, space=space, seed=seed, device=device, eval_return=ret, seconds=time.perf_counter() - start
                    )
                )
                print(json.dumps(results[-1]), flush=True)
    print(report(results, output))


if __name__ == "__main__":
    main()
