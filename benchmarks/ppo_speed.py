"""
FederatedPPO vs SB3 PPO: env-steps/s on the same 64-env federated CartPole with the same rollout size,
``n_epochs`` and minibatch size.

Both train on one federated ``VecEnv`` (HeteroCartPole, N = 8 agents × 8 envs): SB3 PPO pooled over the
64 envs (``n_steps`` per env, minibatches of ``batch_size`` from the pooled rollout), FederatedPPO with
the same ``n_steps`` per env and the same ``batch_size`` per agent (each agent's PPO sees minibatches of
that size from its own rollout; the 8 agents' minibatches run as one batched step). Same rollout
(``64 × n_steps`` samples per iteration/round), same epochs. One process, one torch thread; the two
are measured alternately (ABBA...) over several repeats so machine load cannot favour one side; the
ratio is the median over repeats of the per-pair ratio. Each measurement records wall-clock time and
the process's CPU time (``time.process_time``): on a machine shared with other jobs the wall clock
includes the time the process waited for a core, the CPU time does not.

    python benchmarks/ppo_speed.py            # ~5 min on an idle 2-core machine, far longer under load
    python benchmarks/ppo_speed.py --quick    # smoke test
    python benchmarks/ppo_speed.py --device cuda --output benchmarks/results/ppo_speed_cuda   # on a GPU machine
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import time

import numpy as np

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def build(method: str, n_steps: int, batch_size: int, n_epochs: int, seed: int, device: str = "cpu"):
    from stable_baselines3 import PPO

    from sb3_fedpg import FederatedPPO, make_federated_vec_env

    env = make_federated_vec_env("sb3_fedpg/HeteroCartPole-v0", n_agents=8, n_envs_per_agent=8, seed=seed)
    if method == "sb3_ppo":
        return PPO("MlpPolicy", env, n_steps=n_steps, batch_size=batch_size, n_epochs=n_epochs, seed=seed, device=device)
    return FederatedPPO("MlpPolicy", env, n_steps=n_steps, batch_size=batch_size, n_epochs=n_epochs, seed=seed, device=device)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-steps", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--n-epochs", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=2, help="rollout+update iterations per measurement")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cpu", help="torch device of both models (cpu, cuda)")
    parser.add_argument("--output", default=str(RESULTS / "ppo_speed"))
    args = parser.parse_args(argv)
    if args.quick:
        args.n_steps, args.n_epochs, args.iterations, args.repeats = 32, 2, 1, 1

    import torch as th

    th.set_num_threads(1)
    methods = ["federated_ppo", "sb3_ppo"]
    models = {m: build(m, args.n_steps, args.batch_size, args.n_epochs, seed=0, device=args.device) for m in methods}
    steps = 64 * args.n_steps * args.iterations
    for model in models.values():  # warm-up: first-call costs (lazy imports, allocations) out of the timings
        model.learn(64 * args.n_steps)
    speeds: dict[str, list[float]] = {m: [] for m in methods}
    cpu_speeds: dict[str, list[float]] = {m: [] for m in methods}
    load_before = os.getloadavg()[0]
    for repeat in range(args.repeats):
        order = methods if repeat % 2 == 0 else methods[::-1]
        for method in order:
            model = models[method]
            start_steps = model.num_timesteps
            start, start_cpu = time.perf_counter(), time.process_time()
            model.learn(steps, reset_num_timesteps=False)
            seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
            speeds[method].append((model.num_timesteps - start_steps) / seconds)
            cpu_speeds[method].append((model.num_timesteps - start_steps) / cpu_seconds)
            print(
                f"repeat {repeat} {method}: {speeds[method][-1]:,.0f} env-steps/s, "
                f"{cpu_speeds[method][-1]:,.0f} per CPU-second",
                flush=True,
            )
    load_after = os.getloadavg()[0]

    def ratios(table: dict[str, list[float]]) -> list[float]:
        return [f / s for f, s in zip(table["federated_ppo"], table["sb3_ppo"], strict=True)]

    wall_ratios, cpu_ratios = ratios(speeds), ratios(cpu_speeds)
    result = {
        "config": {
            "env": "sb3_fedpg/HeteroCartPole-v0, 8 agents x 8 envs",
            "n_steps": args.n_steps,
            "batch_size": args.batch_size,
            "n_epochs": args.n_epochs,
            "iterations_per_measurement": args.iterations,
            "repeats": args.repeats,
            "torch_threads": 1,
            "device": str(models["federated_ppo"].device),
            "device_name": th.cuda.get_device_name() if models["federated_ppo"].device.type == "cuda" else None,
        },
        "env_steps_per_s": speeds,
        "env_steps_per_cpu_s": cpu_speeds,
        "ratio_per_repeat": wall_ratios,
        "ratio_median": float(np.median(wall_ratios)),
        "cpu_ratio_per_repeat": cpu_ratios,
        "cpu_ratio_median": float(np.median(cpu_ratios)),
        "load_average_1min": {"before": load_before, "after": load_after, "cores": os.cpu_count()},
    }
    out = pathlib.Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")

    def listed(values: list[float]) -> str:
        return ", ".join(f"{r:.1f}" for r in values)

    name = result["config"]["device_name"]
    on_device = f", both models on {result['config']['device']} ({name})" if name else ""
    lines = [
        f"| method (64 envs, n_steps {args.n_steps}, batch {args.batch_size}, {args.n_epochs} epochs) "
        "| env-steps/s, wall clock | env-steps per CPU-second |",
        "|---|---:|---:|",
        f"| FederatedPPO (8 agents, batch {args.batch_size} per agent) | {np.median(speeds['federated_ppo']):,.0f} "
        f"| {np.median(cpu_speeds['federated_ppo']):,.0f} |",
        f"| SB3 PPO (pooled) | {np.median(speeds['sb3_ppo']):,.0f} | {np.median(cpu_speeds['sb3_ppo']):,.0f} |",
        f"| **ratio** (median of the per-pair ratios; lowest) | **{result['ratio_median']:.1f}×** ({min(wall_ratios):.1f}×) "
        f"| **{result['cpu_ratio_median']:.1f}×** ({min(cpu_ratios):.1f}×) |",
        "",
        f"Medians of {args.repeats} interleaved repeats of {steps:,} env steps per method, one process, one torch thread"
        f"{on_device}. "
        f"Per-pair ratios, wall clock: {listed(wall_ratios)}; CPU time: {listed(cpu_ratios)}. "
        f"1-minute load average {load_before:.1f} before and {load_after:.1f} after the run on {os.cpu_count()} cores "
        "(the machine is shared with other jobs: above the core count, absolute speeds are well below an idle "
        "machine's and vary between repeats; each ratio compares two measurements taken back to back).",
    ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    main()
