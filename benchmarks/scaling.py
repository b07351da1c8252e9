"""
Scaling with the number of agents, in-process (issue 29, deliverable 4).

FederatedPG and FederatedPPO on ``sb3_fedpg/HeteroCartPole-v0`` with ``n_envs_per_agent`` envs per agent and a 64x64
MLP, for N = 8 ... 4,096 agents: env steps per second over whole rounds (after a warm-up round) and the process's
peak resident memory, each measurement in a fresh process (so its peak is its own), one torch thread. The grid is
walked ``repeats`` times in alternating order (small N first, then large N first), and the median is reported.
Memory per agent is the slope of peak memory against N between the two largest N.

Run: ``python benchmarks/scaling.py`` (``--quick`` for a smoke run). Writes ``benchmarks/results/scaling.*``.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Context, Report, Run, Settings, Study, table

#: constructor arguments (besides the agents and envs) of each algorithm: rounds of 64 steps per env, so that a round
#: at N = 4,096 stays within seconds; FederatedPPO's per-agent minibatch is one env's rollout
ALGORITHMS: dict[str, dict[str, Any]] = {
    "FederatedPG": {"n_steps": 16},
    "FederatedPPO": {"n_steps": 64, "batch_size": 64, "n_epochs": 4},
}


def _one(algorithm: str, n_agents: int, n_envs_per_agent: int, rounds: int, seed: int) -> dict[str, float]:
    import resource
    import time
    import warnings

    import torch as th

    import sb3_fedpg

    th.set_num_threads(1)
    warnings.simplefilter("ignore")  # whole-round notes
    algo = getattr(sb3_fedpg, algorithm)
    model = algo(
        "MlpPolicy",
        "sb3_fedpg/HeteroCartPole-v0",
        n_agents=n_agents,
        n_envs_per_agent=n_envs_per_agent,
        seed=seed,
        device="cpu",
        policy_kwargs={"net_arch": [64, 64]},
        **ALGORITHMS[algorithm],
    )
    steps = model.steps_per_round
    model.learn(steps)  # warm-up round
    start, cpu = time.perf_counter(), time.process_time()
    model.learn(rounds * steps, reset_num_timesteps=False)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"steps_per_s": rounds * steps / wall, "steps_per_cpu_s": rounds * steps / cpu, "peak_mb": peak_mb}


def measure(
    algorithms: list[str], n_agents: list[int], n_envs_per_agent: int, rounds: int, repeats: int, seed: int
) -> dict[str, Any]:
    """
    Every (algorithm, N), each in a fresh process, the grid walked ``repeats`` times in alternating order.

    :return: algorithm -> N -> the repeats' measurements
    """
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    results: dict[str, dict[str, list[dict[str, float]]]] = {a: {str(n): [] for n in n_agents} for a in algorithms}
    for repeat in range(repeats):
        grid = n_agents if repeat % 2 == 0 else list(reversed(n_agents))
        for n in grid:
            for algorithm in algorithms:
                with context.Pool(1) as pool:
                    one = pool.apply(_one, (algorithm, n, n_envs_per_agent, rounds, seed))
                results[algorithm][str(n)].append(one)
    return results


def run(s: Settings) -> Run:
    config = dict(algorithms=s.algorithms, n_agents=s.n_agents, n_envs_per_agent=s.n_envs_per_agent)
    return Run(measure, config | dict(rounds=s.rounds, repeats=s.repeats, seed=s.seed), "scaling")


def report(ctx: Context) -> Report:
    import matplotlib.pyplot as plt

    s = ctx.settings
    result = ctx.results[run(s)]
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for algorithm in s.algorithms:
        summary[algorithm] = {}
        for n in s.n_agents:
            rows = result[algorithm][str(n)]
            summary[algorithm][str(n)] = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    big, bigger = s.n_agents[-2], s.n_agents[-1]
    header = ["N", *(f"{a} steps/s (CPU)" for a in s.algorithms), *(f"{a} peak MB" for a in s.algorithms)]
    rows = [header]
    for n in s.n_agents:
        cells = [
            f"{summary[a][str(n)]['steps_per_s']:,.0f} ({summary[a][str(n)]['steps_per_cpu_s']:,.0f})" for a in s.algorithms
        ]
        rows.append([f"{n:,}", *cells, *(f"{summary[a][str(n)]['peak_mb']:,.0f}" for a in s.algorithms)])
    per_agent = {
        a: (summary[a][str(bigger)]["peak_mb"] - summary[a][str(big)]["peak_mb"]) / (bigger - big) for a in s.algorithms
    }
    largest_over = {
        a: summary[a][str(bigger)]["steps_per_cpu_s"] / max(summary[a][str(n)]["steps_per_cpu_s"] for n in s.n_agents)
        for a in s.algorithms
    }
    lines = table(rows, "l" + "r" * (len(header) - 1))
    lines += [
        "",
        "Memory per extra agent between N = "
        + f"{big:,} and {bigger:,}: "
        + ", ".join(f"{a} {per_agent[a]:.2f} MB" for a in s.algorithms)
        + f". Throughput at N = {bigger:,} as a fraction of the best N (CPU time): "
        + ", ".join(f"{a} {largest_over[a]:.0%}" for a in s.algorithms)
        + f". {s.n_envs_per_agent} envs per agent, {s.rounds} timed rounds after a warm-up round, each (algorithm, N) in "
        f"a fresh process, medians of {s.repeats} walks of the grid in alternating order; one torch thread. Settings: "
        + "; ".join(f"{a} {ALGORITHMS[a]}" for a in s.algorithms)
        + ".",
    ]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for a in s.algorithms:
        axes[0].plot(s.n_agents, [summary[a][str(n)]["steps_per_cpu_s"] for n in s.n_agents], marker="o", label=a)
        axes[1].plot(s.n_agents, [summary[a][str(n)]["peak_mb"] for n in s.n_agents], marker="o", label=a)
    for ax, label in zip(axes, ["env steps per CPU-second", "peak resident memory (MB)"], strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("agents N")
        ax.set_ylabel(label)
        ax.legend()
    axes[1].set_yscale("log")
    fig.suptitle(f"In-process scaling, {s.n_envs_per_agent} envs per agent, one torch thread")
    data = dict(settings=dict(s), summary=summary, memory_per_agent_mb=per_agent, largest_over_best=largest_over)
    return Report(data | dict(runs=result), fig, "\n".join(lines) + "\n", indent=1)


STUDY = Study(
    "scaling",
    __doc__,
    dict(
        algorithms=list(ALGORITHMS),
        n_agents=[8, 32, 128, 256, 512, 1024, 2048, 4096],
        n_envs_per_agent=4,
        rounds=2,
        repeats=2,
        seed=0,
    ),
    lambda s: [run(s)],
    report,
    quick=dict(n_agents=[2, 4], rounds=1, repeats=1),
)
main = STUDY.main

if __name__ == "__main__":
    main()
