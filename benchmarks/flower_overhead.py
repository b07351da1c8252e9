"""
Per-round overhead of Fast-FedPG on Flower versus the in-process FederatedPG, same configuration.

Three ways to run the same rounds (neural HeteroCartPole, N agents, default hyperparameters):
in-process ``FederatedPG.train()`` (all agents batched in one process), Flower's simulation
engine (Ray, one ClientApp call per agent and phase) and a real loopback deployment
(SuperLink + N SuperNodes; every message is handled by a fresh ClientApp process).

Writes ``benchmarks/results/flower_overhead.{json,png,md}``::

    python benchmarks/flower_overhead.py                # ~4 min on 2 cores
    python benchmarks/flower_overhead.py --agents 4 --sim-rounds 8 --deploy-rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import tempfile
import time

RESULTS = pathlib.Path(__file__).resolve().parent / "results"


def in_process(n_agents: int, rounds: int, seed: int) -> list[float]:
    """
    :param n_agents: agents
    :param rounds: timed rounds (after one warm-up round)
    :param seed: seed
    :return: seconds per round
    """
    import torch as th

    from sb3_fedpg import FederatedPG

    th.set_num_threads(1)
    model = FederatedPG("MlpPolicy", "sb3_fedpg/HeteroCartPole-v0", n_agents=n_agents, seed=seed, device="cpu")
    from stable_baselines3.common.callbacks import CallbackList

    model._setup_learn(total_timesteps=10**9, callback=None)
    callback = CallbackList([])
    callback.init_callback(model)
    model.train(callback)  # warm-up
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        model.train(callback)
        times.append(time.perf_counter() - start)
    return times


def read_round_times(folder: pathlib.Path) -> list[float]:
    """
    :param folder: a Flower run's output folder
    :return: ``round_s`` of every round (round 1 includes the workers' start-up)
    """
    return [json.loads(line)["round_s"] for line in (folder / "rounds.jsonl").read_text().splitlines()]


def main() -> None:
    """Run the three measurements and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--sim-rounds", type=int, default=8)
    parser.add_argument("--deploy-rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    n = args.agents
    work = pathlib.Path(tempfile.mkdtemp(prefix="flower_overhead_"))
    os.environ["FLWR_HOME"] = str(work / "flwr_home")
    results: dict = {
        "config": {
            "env": "sb3_fedpg/HeteroCartPole-v0",
            "agents": n,
            "hyperparameters": "FederatedPG defaults (64x64 MLP, n_steps=64, 8 envs/agent, H=4, gae)",
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
            "note": "round 1 of the Flower runs (worker start-up) is excluded from the medians",
        }
    }

    t0 = time.perf_counter()
    times = in_process(n, args.sim_rounds, args.seed)
    results["in_process"] = {"round_s": times, "median_round_s": statistics.median(times), "wall_s": time.perf_counter() - t0}
    print("in-process", results["in_process"]["median_round_s"], flush=True)

    from sb3_fedpg.flower.simulation import run_simulation

    t0 = time.perf_counter()
    sim_out = work / "sim"
    run_simulation(n, {"num-rounds": args.sim_rounds + 1, "seed": args.seed, "output-dir": str(sim_out), "min-agents": n})
    times = read_round_times(sim_out)
    results["simulation"] = {
        "round_s": times,
        "median_round_s": statistics.median(times[1:]),
        "first_round_s": times[0],
        "wall_s": time.perf_counter() - t0,
    }
    print("simulation", results["simulation"]["median_round_s"], flush=True)

    from sb3_fedpg.flower.deploy import LoopbackDeployment

    t0 = time.perf_counter()
    dep_out = work / "deploy_out"
    with LoopbackDeployment(work / "deploy", n) as deployment:
        deployment.start()
        code = deployment.run(
            {
                "num-rounds": args.deploy_rounds + 1,
                "seed": args.seed,
                "output-dir": str(dep_out),
                "min-agents": n,
                "num-agents": n,
            },
            timeout=1800,
        )
    if code != 0:
        raise RuntimeError(f"the deployment run failed ({code}); logs in {work / 'deploy'}")
    times = read_round_times(dep_out)
    results["deployment"] = {
        "round_s": times,
        "median_round_s": statistics.median(times[1:]),
        "first_round_s": times[0],
        "wall_s": time.perf_counter() - t0,
    }
    print("deployment", results["deployment"]["median_round_s"], flush=True)

    base = results["in_process"]["median_round_s"]
    for key in ("simulation", "deployment"):
        results[key]["overhead_s"] = results[key]["median_round_s"] - base
        results[key]["slowdown"] = results[key]["median_round_s"] / base
    write(results)


def write(results: dict) -> None:
    """
    :param results: the measurements
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "flower_overhead.json").write_text(json.dumps(results, indent=2))
    names = ["in_process", "simulation", "deployment"]
    labels = ["in-process\nFederatedPG", "Flower\nsimulation", "Flower loopback\ndeployment"]
    medians = [results[k]["median_round_s"] for k in names]
    fig, ax = plt.subplots(figsize=(6, 4))
    bars = ax.bar(labels, medians, color=["tab:blue", "tab:orange", "tab:red"])
    ax.set_yscale("log")
    ax.set_ylabel("seconds per round (median)")
    n = results["config"]["agents"]
    ax.set_title(f"Fast-FedPG round time, HeteroCartPole, {n} agents")
    for bar, value in zip(bars, medians, strict=True):
        ax.annotate(f"{value:.2f} s", (bar.get_x() + bar.get_width() / 2, value), ha="center", va="bottom")
    fig.tight_layout()
    fig.savefig(RESULTS / "flower_overhead.png", dpi=120)
    rows = [
        "| run | median s / round | overhead vs in-process | first round (start-up) | wall s |",
        "|---|---|---|---|---|",
    ]
    for key, label in zip(
        names, ["in-process FederatedPG", "Flower simulation (Ray)", "Flower deployment (loopback)"], strict=True
    ):
        r = results[key]
        overhead = "—" if key == "in_process" else f"+{r['overhead_s']:.2f} s (×{r['slowdown']:.0f})"
        first = f"{r['first_round_s']:.1f} s" if "first_round_s" in r else "—"
        rows.append(f"| {label} | {r['median_round_s']:.3f} | {overhead} | {first} | {r['wall_s']:.0f} |")
    text = "\n".join(rows) + f"\n\n{results['config']['agents']} agents, {results['config']['hyperparameters']}; "
    text += f"{results['config']['machine']}; {results['config']['note']}.\n"
    (RESULTS / "flower_overhead.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
