"""
FederatedPPO vs SB3 PPO: env-steps/s on the same 64-env federated CartPole, like with like.

All three train on one federated ``VecEnv`` (HeteroCartPole, N = 8 agents × 8 envs) with the same rollout
(``n_steps`` per env, ``64 × n_steps`` samples per iteration/round) and the same ``n_epochs``.
FederatedPPO gives each agent minibatches of ``batch_size`` from its own rollout; the 8 agents'
minibatches run as one batched optimiser step. SB3 PPO, pooled over the 64 envs, is measured twice:

- **equal optimiser steps** (the headline): SB3's ``batch_size = 8 × batch_size``, so both take the same
  number of optimiser steps on the same number of samples per step, i.e. nearly the same arithmetic: the
  ratio measures overhead, not a federated advantage;
- **equal minibatch size**: SB3's ``batch_size = batch_size``, 8× more optimiser steps than FederatedPPO's
  batched ones (how a PPO user would port a per-agent config).

One process, one torch thread; the three are measured in rotating order over several repeats so machine
load cannot favour one side; each ratio is the median over repeats of the per-repeat ratio. Each
measurement records wall-clock time and the process's CPU time (``time.process_time``): on a machine
shared with other jobs the wall clock includes the time the process waited for a core, the CPU time does not.

    python benchmarks/ppo_speed.py            # ~8 min on an idle 2-core machine, far longer under load
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

from sb3_fedpg.common.cli import ArgumentParser

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


N_AGENTS = 8
# method -> SB3 PPO's batch size as a multiple of FederatedPPO's per-agent batch size (None: FederatedPPO itself)
METHODS = {"federated_ppo": None, "federated_ppo_default": None, "sb3_ppo_equal_steps": N_AGENTS, "sb3_ppo_equal_minibatch": 1}
#: FederatedPPO's two rows: the update machinery without a correction (what the SB3 rows are compared with) and the
#: library's default, whose SNR-damped surrogate correction adds a Fisher solve and two half-rollout backward passes
FEDPPO_KWARGS = {"federated_ppo": {"correction": False, "variance_control": "none"}, "federated_ppo_default": {}}
LABELS = {
    "sb3_ppo_equal_steps": "equal optimiser steps",
    "sb3_ppo_equal_minibatch": "equal minibatch size",
}


def build(method: str, n_steps: int, batch_size: int, n_epochs: int, seed: int, device: str = "cpu"):
    from stable_baselines3 import PPO

    from sb3_fedpg import FederatedPPO, make_federated_vec_env

    env = make_federated_vec_env("sb3_fedpg/HeteroCartPole-v0", n_agents=N_AGENTS, n_envs_per_agent=8, seed=seed)
    if METHODS[method] is not None:
        sb3_batch = batch_size * METHODS[method]
        return PPO("MlpPolicy", env, n_steps=n_steps, batch_size=sb3_batch, n_epochs=n_epochs, seed=seed, device=device)
    return FederatedPPO(
        "MlpPolicy",
        env,
        n_steps=n_steps,
        batch_size=batch_size,
        n_epochs=n_epochs,
        seed=seed,
        device=device,
        **FEDPPO_KWARGS[method],
    )


def main(argv: list[str] | None = None) -> dict:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    methods = list(METHODS)
    models = {m: build(m, args.n_steps, args.batch_size, args.n_epochs, seed=0, device=args.device) for m in methods}
    steps = 64 * args.n_steps * args.iterations
    for model in models.values():  # warm-up: first-call costs (lazy imports, allocations) out of the timings
        model.learn(64 * args.n_steps)
    speeds: dict[str, list[float]] = {m: [] for m in methods}
    cpu_speeds: dict[str, list[float]] = {m: [] for m in methods}
    load_before = os.getloadavg()[0]
    for repeat in range(args.repeats):
        shift = repeat % len(methods)  # rotate, and reverse every other repeat: each method in every position
        order = methods[shift:] + methods[:shift]
        order = order if repeat % 2 == 0 else order[::-1]
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

    def ratios(table: dict[str, list[float]], rival: str) -> list[float]:
        return [f / s for f, s in zip(table["federated_ppo"], table[rival], strict=True)]

    rivals = [m for m in methods if METHODS[m] is not None]
    comparisons = {
        rival: {
            "sb3_batch_size": args.batch_size * METHODS[rival],
            "ratio_per_repeat": ratios(speeds, rival),
            "ratio_median": float(np.median(ratios(speeds, rival))),
            "cpu_ratio_per_repeat": ratios(cpu_speeds, rival),
            "cpu_ratio_median": float(np.median(ratios(cpu_speeds, rival))),
        }
        for rival in rivals
    }
    result = {
        "config": {
            "env": f"sb3_fedpg/HeteroCartPole-v0, {N_AGENTS} agents x 8 envs",
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
        "comparisons": comparisons,
        "correction_cost": {
            "ratio_per_repeat": [d / u for d, u in zip(speeds["federated_ppo_default"], speeds["federated_ppo"], strict=True)],
            "cpu_ratio_per_repeat": [
                d / u for d, u in zip(cpu_speeds["federated_ppo_default"], cpu_speeds["federated_ppo"], strict=True)
            ],
        },
        "headline": "sb3_ppo_equal_steps",
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
        f"| method (64 envs, n_steps {args.n_steps}, {args.n_epochs} epochs) | optimiser steps per epoch "
        "| env-steps/s, wall clock | env-steps per CPU-second | FederatedPPO's speed-up, wall (CPU) |",
        "|---|---:|---:|---:|---:|",
        f"| FederatedPPO ({N_AGENTS} agents, batch {args.batch_size} per agent), no correction "
        f"| {args.n_steps * 8 // args.batch_size} "
        f"| {np.median(speeds['federated_ppo']):,.0f} | {np.median(cpu_speeds['federated_ppo']):,.0f} | |",
        f"| FederatedPPO, default (SNR-damped surrogate correction) | {args.n_steps * 8 // args.batch_size} "
        f"| {np.median(speeds['federated_ppo_default']):,.0f} | {np.median(cpu_speeds['federated_ppo_default']):,.0f} "
        f"| {np.median(result['correction_cost']['ratio_per_repeat']):.2f}× of no correction "
        f"({np.median(result['correction_cost']['cpu_ratio_per_repeat']):.2f}×) |",
    ]
    for rival in rivals:
        c = comparisons[rival]
        lines.append(
            f"| SB3 PPO (pooled), batch {c['sb3_batch_size']}: **{LABELS[rival]}** "
            f"| {64 * args.n_steps // c['sb3_batch_size']} | {np.median(speeds[rival]):,.0f} "
            f"| {np.median(cpu_speeds[rival]):,.0f} | **{c['ratio_median']:.1f}×** ({c['cpu_ratio_median']:.1f}×) |"
        )
    per_repeat = "; ".join(
        f"{LABELS[r]}: wall {listed(comparisons[r]['ratio_per_repeat'])}, CPU {listed(comparisons[r]['cpu_ratio_per_repeat'])}"
        for r in rivals
    )
    lines += [
        "",
        f"Medians of {args.repeats} repeats of {steps:,} env steps per method, in rotating order, one process, one torch "
        f"thread{on_device}. Speed-ups (of FederatedPPO without correction, the update machinery) are medians of the "
        f"per-repeat ratios ({per_repeat}). At equal optimiser steps "
        "both do nearly the same arithmetic, so that ratio measures overhead; at equal minibatch size SB3 takes "
        f"{N_AGENTS}× more (smaller) optimiser steps. 1-minute load average {load_before:.1f} before and "
        f"{load_after:.1f} after the run on {os.cpu_count()} cores (above the core count absolute speeds drop; ratios "
        "compare measurements taken back to back).",
    ]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    main()
