"""
Training throughput: FederatedPG vs SB3 A2C and PPO on the same federated tasks.

All measurements run in one invocation, each in a fresh single-use subprocess (so the
peak RSS of each is its own), one after the other, with one torch thread:

- raw env stepping of the same vectorised env (random actions, no learning);
- ``FederatedPG.learn`` for N agents x 8 envs on ``sb3_fedpg/HeteroCartPole-v0`` (64x64 MLP);
- SB3 A2C and PPO trained centrally on the same pooled ``FederatedVecEnv`` (64 envs,
  per-agent rewards), default hyperparameters and the same 64x64 network; PPO's
  ``n_steps`` is 256 so that one rollout is 16,384 samples, the size of SB3's default
  PPO rollout on 8 envs (its update cost per sample is then SB3's default);
- the N curve: FederatedPG env-steps/s and peak RSS for N = 1 ... 64 agents.

Writes ``benchmarks/results/throughput.json`` and ``throughput.png``.
Run: ``python benchmarks/throughput.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import pathlib
import platform
import resource
import time
from typing import Any

from sb3_fedpg.common.cli import ArgumentParser

RESULTS = pathlib.Path(__file__).parent / "results"
ENV_ID = "sb3_fedpg/HeteroCartPole-v0"
MUJOCO_ID = "sb3_fedpg/HeteroHalfCheetah-v0"


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _time_random_steps(venv: Any, actions: Any, timesteps: int) -> tuple[int, float]:
    """Step ``venv`` (Gymnasium or SB3 vector env) with pre-drawn random actions; return (steps, seconds)."""
    if hasattr(venv, "single_action_space"):
        venv.reset(seed=0)
    else:
        venv.reset()
    start = time.perf_counter()
    steps = 0
    while steps < timesteps:
        venv.step(actions[(steps // venv.num_envs) % len(actions)])
        steps += venv.num_envs
    return steps, time.perf_counter() - start


def measure(kind: str, n_agents: int, n_envs_per_agent: int, timesteps: int, ppo_n_steps: int = 256) -> dict[str, Any]:
    """Run one measurement (in a subprocess) and return steps/s and peak RSS."""
    import numpy as np
    import torch as th

    th.set_num_threads(1)
    from sb3_fedpg import FederatedPG, make_federated_vec_env

    env_id = MUJOCO_ID if kind.startswith("mujoco") else ENV_ID
    env = make_federated_vec_env(env_id, n_agents=n_agents, n_envs_per_agent=n_envs_per_agent, seed=0)
    rng = np.random.default_rng(0)
    if kind == "mujoco_raw_vector_env":
        # Raw single-process stepping of the same vectorised MuJoCo envs, random actions.
        actions = rng.uniform(-1, 1, size=(64, *env.venv.action_space.shape)).astype(np.float32)
        steps, elapsed = _time_random_steps(env.venv, actions, timesteps)
    elif kind == "raw_env":  # the FederatedVecEnv (SB3 interface, per-agent rewards)
        steps, elapsed = _time_random_steps(env, rng.integers(0, 2, size=(64, env.num_envs)), timesteps)
    elif kind == "raw_vector_env":  # the Gymnasium vector env underneath
        steps, elapsed = _time_random_steps(env.venv, rng.integers(0, 2, size=(64, env.num_envs)), timesteps)
    else:
        if kind in ("fedpg", "mujoco_fedpg"):
            model = FederatedPG("MlpPolicy", env, seed=0)
        elif kind == "a2c":
            from stable_baselines3 import A2C

            model = A2C("MlpPolicy", env, seed=0)
        elif kind == "ppo":
            from stable_baselines3 import PPO

            model = PPO("MlpPolicy", env, n_steps=ppo_n_steps, seed=0)
        else:
            raise ValueError(kind)
        model.learn(1)  # warm-up: first allocations and lazy imports happen outside the timing
        start = time.perf_counter()
        model.learn(timesteps, reset_num_timesteps=True)
        steps = model.num_timesteps
        elapsed = time.perf_counter() - start
    return {
        "kind": kind,
        "n_agents": n_agents,
        "n_envs": n_agents * n_envs_per_agent,
        "timesteps": steps,
        "seconds": elapsed,
        "steps_per_second": steps / elapsed,
        "peak_rss_mb": _peak_rss_mb(),
    }


def markdown_table(payload: dict[str, Any]) -> str:
    """The README table, generated from the JSON."""
    names = {
        "raw_vector_env": "raw vector env (random actions)",
        "raw_env": "FederatedVecEnv (random actions)",
        "fedpg": "FederatedPG.learn",
        "a2c": "SB3 A2C.learn",
        "ppo": "SB3 PPO.learn",
        "mujoco_raw_vector_env": "HalfCheetah raw vector env (random actions)",
        "mujoco_fedpg": "HalfCheetah FederatedPG.learn",
    }
    lines = ["| what | agents | envs | env steps/s | peak RSS (MB) |", "|---|---:|---:|---:|---:|"]
    for r in payload["rows"]:
        speed, rss = f"{r['steps_per_second']:,.0f}", f"{r['peak_rss_mb']:,.0f}"
        lines.append(f"| {names[r['kind']]} | {r['n_agents']} | {r['n_envs']} | {speed} | {rss} |")
    ratios = payload["ratios"]
    lines += [
        "",
        "| ratio (N = 8 agents x 8 envs) | value |",
        "|---|---:|",
        f"| FederatedPG / SB3 A2C | {ratios['fedpg_over_a2c']:.1f}x |",
        f"| FederatedPG / SB3 PPO | {ratios['fedpg_over_ppo']:.1f}x |",
        f"| FederatedPG / raw vector env stepping | {ratios['fedpg_over_raw_vector_env']:.0%} |",
        f"| FederatedPG / FederatedVecEnv stepping | {ratios['fedpg_over_federated_env']:.0%} |",
    ]
    if ratios.get("fedpg_n64_over_n8") is not None:
        lines.append(f"| FederatedPG steps/s at N = 64 / at N = 8 | {ratios['fedpg_n64_over_n8']:.2f} |")
        lines.append(f"| peak RSS at N = 64 agents | {ratios['peak_rss_mb_n64']:,.0f} MB |")
    lines.append(
        f"| HalfCheetah (4 agents x 4 envs): FederatedPG / raw MuJoCo stepping | {ratios['mujoco_fedpg_over_raw']:.0%} |"
    )
    return "\n".join(lines) + "\n"


def run_isolated(*args: Any) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        return pool.submit(measure, *args).result()


def main(argv: list[str] | None = None, output: pathlib.Path = RESULTS) -> dict[str, Any]:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny budgets (smoke run)")
    args = parser.parse_args(argv)
    if args.quick:  # smoke run: in-process, tiny budgets, tiny PPO rollouts
        budget = {"raw": 4096, "fedpg": 4096, "a2c": 1024, "ppo": 1024, "mujoco": 512}
        n_values, ppo_n_steps, runner = [1, 8], 16, measure
    else:
        budget = {"raw": 2_000_000, "fedpg": 400_000, "a2c": 60_000, "ppo": 33_000, "mujoco": 60_000}
        n_values, ppo_n_steps, runner = [1, 2, 4, 8, 16, 32, 64], 256, run_isolated

    from tqdm import tqdm

    jobs = [
        ("raw_vector_env", 8, 8, budget["raw"]),
        ("raw_env", 8, 8, budget["raw"]),
        ("a2c", 8, 8, budget["a2c"]),
        ("ppo", 8, 8, budget["ppo"], ppo_n_steps),
        *[("fedpg", n, 8, budget["fedpg"] * max(1, n // 8)) for n in n_values],
        ("mujoco_raw_vector_env", 4, 4, budget["mujoco"]),
        ("mujoco_fedpg", 4, 4, budget["mujoco"]),
    ]
    rows = [runner(*job) for job in tqdm(jobs, desc="throughput")]
    by = {(r["kind"], r["n_agents"]): r for r in rows}
    fed8 = by[("fedpg", 8)]["steps_per_second"]
    ratios = {
        "fedpg_over_a2c": fed8 / by[("a2c", 8)]["steps_per_second"],
        "fedpg_over_ppo": fed8 / by[("ppo", 8)]["steps_per_second"],
        "fedpg_over_raw_vector_env": fed8 / by[("raw_vector_env", 8)]["steps_per_second"],
        "fedpg_over_federated_env": fed8 / by[("raw_env", 8)]["steps_per_second"],
        "fedpg_n64_over_n8": (by[("fedpg", 64)]["steps_per_second"] / fed8) if ("fedpg", 64) in by else None,
        "mujoco_fedpg_over_raw": by[("mujoco_fedpg", 4)]["steps_per_second"]
        / by[("mujoco_raw_vector_env", 4)]["steps_per_second"],
        "peak_rss_mb_n64": by[("fedpg", 64)]["peak_rss_mb"] if ("fedpg", 64) in by else None,
    }
    payload = {
        "env": ENV_ID,
        "quick": args.quick,
        "machine": {
            "python": platform.python_version(),
            "processor": platform.processor(),
            "cpus": multiprocessing.cpu_count(),
        },
        "rows": rows,
        "ratios": ratios,
    }
    output.mkdir(parents=True, exist_ok=True)
    (output / "throughput.json").write_text(json.dumps(payload, indent=2))
    (output / "throughput.md").write_text(markdown_table(payload))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    names = ["raw_vector_env", "raw_env", "fedpg", "a2c", "ppo"]
    labels = ["raw vector env", "FederatedVecEnv\n(random actions)", "FederatedPG", "SB3 A2C", "SB3 PPO"]
    values = [by[(k, 8)]["steps_per_second"] for k in names]
    ax1.bar(labels, values, color=["grey", "silver", "tab:blue", "tab:orange", "tab:green"])
    ax1.set_yscale("log")
    ax1.set_ylabel("env steps / s (log)")
    ax1.set_title("N = 8 agents x 8 envs, HeteroCartPole, 1 thread")
    for i, v in enumerate(values):
        ax1.text(i, v, f"{v:,.0f}", ha="center", va="bottom", fontsize=8)
    fed_rows = [by[("fedpg", n)] for n in n_values]
    ax2.plot(n_values, [r["steps_per_second"] for r in fed_rows], "o-", label="FederatedPG steps/s")
    ax2.set_xscale("log", base=2)
    ax2.set_xlabel("agents N (8 envs each)")
    ax2.set_ylabel("env steps / s")
    ax3 = ax2.twinx()
    ax3.plot(n_values, [r["peak_rss_mb"] for r in fed_rows], "s--", color="tab:red", label="peak RSS (MB)")
    ax3.set_ylabel("peak RSS (MB)")
    ax2.set_title("Scaling with the number of agents")
    fig.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(output / "throughput.png", dpi=120)
    print(json.dumps(ratios, indent=2))
    return payload


if __name__ == "__main__":
    main()
