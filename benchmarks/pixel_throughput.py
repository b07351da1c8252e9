"""
Pixel observations: env-steps/s of FederatedPG / FederatedPPO with ``CnnPolicy`` vs SB3 PPO with ``CnnPolicy``
on the same federated image envs.

All train on ``sb3_fedpg/HeteroPixelGrid-v0`` (42×42×1 images, 4 agents × 8 envs = 32 envs, per-agent
rewards), every method with the same features extractor — the library's ``SmallCNN`` (the configuration of the
learning benchmark) and SB3's default ``NatureCNN``:

- ``FederatedPG`` with the settings of ``benchmarks/pixel_learning.py`` (the run whose learning is reported);
- ``FederatedPPO`` and SB3 ``PPO`` (pooled over the 32 envs) with rl-zoo's Atari PPO settings
  (``n_steps=128`` per env, ``batch_size=256``, ``n_epochs=4``; FederatedPPO's minibatches are per agent);
- the raw ``FederatedVecEnv`` stepped with random actions (the ceiling).

One process, one torch thread; the methods are measured in turn, in an order that alternates between
repeats, so that machine load cannot favour one side; figures are medians over repeats and the ratios
are medians of the per-repeat ratios. Writes ``benchmarks/results/pixel_throughput.{json,md}``.

    python benchmarks/pixel_throughput.py            # ~10 min on 2 busy cores
    python benchmarks/pixel_throughput.py --quick    # smoke test
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import pathlib
import sys
import time
from typing import Any

import numpy as np

from sb3_fedpg.common.cli import ArgumentParser

HERE = pathlib.Path(__file__).resolve().parent
RESULTS = HERE / "results"


def _common() -> Any:
    spec = importlib.util.spec_from_file_location("pixel_common", HERE / "pixel_common.py")
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


METHODS = ("fedpg", "federated_ppo", "sb3_ppo")
LABELS = {
    "fedpg": "FederatedPG",
    "federated_ppo": "FederatedPPO",
    "sb3_ppo": "SB3 PPO (pooled)",
    "raw_env": "FederatedVecEnv, random actions",
}


def build(method: str, extractor: str, common: Any, ppo_kwargs: dict[str, Any], seed: int = 0) -> Any:
    from stable_baselines3 import PPO

    from sb3_fedpg import FederatedPG, FederatedPPO

    env, policy_kwargs = common.make_env(seed), common.policy_kwargs(extractor)
    if method == "fedpg":
        return FederatedPG("CnnPolicy", env, seed=seed, device="cpu", policy_kwargs=policy_kwargs, **common.FEDPG_KWARGS)
    if method == "federated_ppo":
        return FederatedPPO("CnnPolicy", env, seed=seed, device="cpu", policy_kwargs=policy_kwargs, **ppo_kwargs)
    return PPO("CnnPolicy", env, seed=seed, device="cpu", policy_kwargs=policy_kwargs, **ppo_kwargs)


def raw_env_speed(common: Any, steps: int) -> float:
    env = common.make_env(0)
    rng = np.random.default_rng(0)
    env.reset()
    start, done = time.perf_counter(), 0
    while done < steps:
        env.step(rng.integers(0, 5, env.num_envs))
        done += env.num_envs
    return done / (time.perf_counter() - start)


def main(argv: list[str] | None = None, output: pathlib.Path = RESULTS) -> dict[str, Any]:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4096, help="env steps per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--extractors", nargs="+", default=["SmallCNN", "NatureCNN"])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    common = _common()
    ppo_kwargs = dict(common.PPO_KWARGS)
    if args.quick:
        args.steps, args.repeats, args.extractors = 256, 1, ["SmallCNN"]
        ppo_kwargs.update(n_steps=8, batch_size=64, n_epochs=1)

    import torch as th

    th.set_num_threads(1)
    keys = [(method, extractor) for extractor in args.extractors for method in METHODS]
    models = {key: build(*key, common, ppo_kwargs) for key in keys}
    for model in models.values():  # warm-up: first-call costs (lazy imports, allocations) out of the timings
        model.learn(min(args.steps, 1024))
    speeds: dict[str, list[float]] = {f"{method}/{extractor}": [] for method, extractor in keys}
    speeds["raw_env"] = []
    for repeat in range(args.repeats):
        for key in keys if repeat % 2 == 0 else keys[::-1]:
            model, name = models[key], "/".join(key)
            start_steps, start = model.num_timesteps, time.perf_counter()
            model.learn(args.steps, reset_num_timesteps=False)
            speeds[name].append((model.num_timesteps - start_steps) / (time.perf_counter() - start))
            print(f"repeat {repeat} {name}: {speeds[name][-1]:,.0f} env-steps/s", flush=True)
        speeds["raw_env"].append(raw_env_speed(common, args.steps * 4))
    ratios = {
        f"{method}/{extractor}": [
            a / b for a, b in zip(speeds[f"{method}/{extractor}"], speeds[f"sb3_ppo/{extractor}"], strict=True)
        ]
        for method, extractor in keys
        if method != "sb3_ppo"
    }
    result = {
        "config": {
            "env": f"{common.ENV_ID}, {common.N_AGENTS} agents x {common.N_ENVS_PER_AGENT} envs, "
            f"heterogeneity {common.HETEROGENEITY}",
            "policy": "CnnPolicy with the same features extractor for every method",
            "extractors": args.extractors,
            "fedpg_kwargs": common.FEDPG_KWARGS,
            "ppo_kwargs": ppo_kwargs,
            "steps_per_measurement": args.steps,
            "repeats": args.repeats,
            "torch_threads": 1,
            "python": sys.version.split()[0],
        },
        "env_steps_per_s": speeds,
        "ratio_to_sb3_ppo_per_repeat": ratios,
        "ratio_to_sb3_ppo_median": {name: float(np.median(values)) for name, values in ratios.items()},
    }
    output.mkdir(parents=True, exist_ok=True)
    (output / "pixel_throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    n_envs = common.N_AGENTS * common.N_ENVS_PER_AGENT
    lines = [
        f"| method ({common.N_AGENTS} agents x {common.N_ENVS_PER_AGENT} envs, 42x42 images) | features extractor "
        "| env-steps/s (median) | range over repeats | vs SB3 PPO, same extractor |",
        "|---|---|---:|---:|---:|",
    ]
    for method, extractor in keys:
        name = f"{method}/{extractor}"
        values, ratio = speeds[name], result["ratio_to_sb3_ppo_median"].get(name)
        shown = f"**{ratio:.2f}×**" if ratio is not None else "1.00×"
        spread = f"{min(values):,.0f} – {max(values):,.0f}"
        lines.append(f"| {LABELS[method]} | {extractor} | {np.median(values):,.0f} | {spread} | {shown} |")
    raw = speeds["raw_env"]
    lines.append(f"| {LABELS['raw_env']} | – | {np.median(raw):,.0f} | {min(raw):,.0f} – {max(raw):,.0f} | – |")
    lines += [
        "",
        f"Median of {args.repeats} interleaved repeats of {args.steps:,} env steps each ({n_envs} envs), one process, "
        f"one torch thread, on a shared 2-core machine. FederatedPG: `{common.FEDPG_KWARGS}`; PPO (both): `{ppo_kwargs}`.",
    ]
    (output / "pixel_throughput.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    main()
