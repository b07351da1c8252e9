"""
What a Fast-FedPG round costs on Flower, next to what Flower itself costs, side by side in one run.

For each number of agents (default 4 and 8), the same rounds (neural HeteroCartPole, FederatedPG defaults) run:

- **in-process**: ``FederatedPG.train()`` (all agents batched in one process);
- **simulation**: Flower's simulation engine (Ray, one ClientApp call per agent and phase);
- **deployment**: a loopback deployment (SuperLink + N SuperNodes, each with its long-lived agent worker), the
  supported configuration of ``sb3_fedpg.flower.deploy``;
- **no-op app**: ``benchmarks/flower_noop_app`` on the **same** SuperLink and SuperNodes: the same two phases, the
  same message sizes and the same push/pull loop, but ClientApps that answer with zeros at once — Flower's floor.

The deployment and no-op runs alternate (``--repeats`` each). Wall time per round is the median ``round_s`` of the
timed rounds (round 1, the start-up, is left out); **CPU-seconds per round** are summed over every process of the
run (this process and Ray's for the simulation; SuperLink, SuperNodes, SuperExecs, ServerApp/ClientApp processes,
agent workers and ``flwr run`` for the deployments) from ``/proc``, between the end of round 1 and the end of the
last round, divided by the rounds. CPU-seconds barely depend on how loaded the machine is; wall time does.

Writes ``benchmarks/results/flower_overhead.{json,md,png}``::

    nice -n 10 python benchmarks/flower_overhead.py                 # ~10 min on 2 busy cores
    python benchmarks/flower_overhead.py --agents 4 --rounds 3 --repeats 1
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterable

from sb3_fedpg.common.cli import ArgumentParser

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
NOOP_APP = pathlib.Path(__file__).resolve().parent / "flower_noop_app"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(roots: Iterable[int]) -> float:
    """
    CPU time of processes and all their descendants, from ``/proc``: user + system of every live process in the
    trees, plus the children times they collected from processes that already ended.

    :param roots: process ids
    :return: CPU-seconds
    """
    parent: dict[int, int] = {}
    times: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as file:
                fields = file.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        # fields[0] is the state (field 3 of stat); ppid is field 4, utime..cstime fields 14..17
        parent[int(entry)] = int(fields[1])
        times[int(entry)] = sum(int(x) for x in fields[11:15])
    wanted = {pid for pid in roots if pid in times}
    children: dict[int, list[int]] = {}
    for pid, ppid in parent.items():
        children.setdefault(ppid, []).append(pid)
    stack, seen = list(wanted), set()
    while stack:
        pid = stack.pop()
        if pid not in seen:
            seen.add(pid)
            stack += children.get(pid, [])
    return sum(times[pid] for pid in seen) / CLOCK_TICKS


class RoundMonitor(threading.Thread):
    """
    Watches a run's ``rounds.jsonl`` and takes the wall clock and the CPU time of the run's processes whenever a
    round ends.

    :param rounds_path: the run's ``rounds.jsonl``
    :param roots: returns the process ids whose trees make up the run
    """

    def __init__(self, rounds_path: pathlib.Path, roots: Callable[[], Iterable[int]]) -> None:
        super().__init__(daemon=True)
        self.rounds_path = rounds_path
        self.roots = roots
        self.marks: list[tuple[float, float]] = []
        self.finished = threading.Event()

    def run(self) -> None:
        seen = 0
        while not self.finished.is_set():
            lines = self.rounds_path.read_text().splitlines() if self.rounds_path.exists() else []
            if len(lines) > seen:
                seen = len(lines)
                self.marks.append((time.monotonic(), tree_cpu_seconds(self.roots())))
            time.sleep(0.02)

    def summary(self) -> dict:
        """:return: wall and CPU seconds per round over the rounds after the first"""
        self.finished.set()
        self.join()
        round_s = [json.loads(line)["round_s"] for line in self.rounds_path.read_text().splitlines()]
        c1, cn = self.marks[0][1], self.marks[-1][1]
        rounds = len(self.marks) - 1
        if rounds < 1 or len(self.marks) != len(round_s):
            raise RuntimeError(f"saw {len(self.marks)} round ends for {len(round_s)} rounds in {self.rounds_path}")
        return {
            "round_s": round_s,
            "wall_s_per_round": statistics.median(round_s[1:]),
            "cpu_s_per_round": (cn - c1) / rounds,
            "first_round_s": round_s[0],
        }


def in_process(n_agents: int, rounds: int, seed: int) -> dict:
    """
    :param n_agents: agents
    :param rounds: timed rounds (after one warm-up round)
    :param seed: seed
    :return: wall and CPU seconds per round
    """
    import torch as th
    from stable_baselines3.common.callbacks import CallbackList

    from sb3_fedpg import FederatedPG

    th.set_num_threads(1)
    model = FederatedPG(
        "MlpPolicy", "sb3_fedpg/HeteroCartPole-v0", n_agents=n_agents, n_envs_per_agent=8, seed=seed, device="cpu"
    )
    model._setup_learn(total_timesteps=10**9, callback=None)
    callback = CallbackList([])
    callback.init_callback(model)
    model.train(callback)  # warm-up
    walls, cpus = [], []
    for _ in range(rounds):
        wall, cpu = time.perf_counter(), time.process_time()
        model.train(callback)
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return {"round_s": walls, "wall_s_per_round": statistics.median(walls), "cpu_s_per_round": statistics.mean(cpus)}


def simulation(n_agents: int, rounds: int, seed: int, work: pathlib.Path) -> dict:
    """
    :param n_agents: agents
    :param rounds: timed rounds (after round 1)
    :param seed: seed
    :param work: scratch folder
    :return: wall and CPU seconds per round
    """
    from sb3_fedpg.flower.simulation import run_simulation

    out = work / f"sim{n_agents}"
    monitor = RoundMonitor(out / "rounds.jsonl", lambda: [os.getpid()])
    monitor.start()
    run_simulation(n_agents, {"num-rounds": rounds + 1, "seed": seed, "output-dir": str(out), "min-agents": n_agents})
    return monitor.summary()


def deployed_run(deployment, app_dir: pathlib.Path | None, run_config: dict, out: pathlib.Path) -> dict:
    """
    Submit one run to a started deployment, wait for its end, measure it.

    :param deployment: the started :class:`~sb3_fedpg.flower.deploy.LoopbackDeployment`
    :param app_dir: the app folder (``None``: the Fast-FedPG app)
    :param run_config: its run config (``output-dir`` is set here)
    :param out: its output folder
    :return: wall and CPU seconds per round
    """
    monitor = RoundMonitor(out / "rounds.jsonl", lambda: [p.pid for p in list(deployment.processes.values())])
    monitor.start()
    saved = deployment.app_dir
    if app_dir is not None:
        deployment.app_dir = app_dir
    try:
        code = deployment.submit({**run_config, "output-dir": str(out)}).wait(timeout=1800)
    finally:
        deployment.app_dir = saved
    if code != 0:
        raise RuntimeError(f"the run in {out} failed ({code}); logs in {deployment.workdir}")
    return monitor.summary()


def deployment_and_noop(n_agents: int, rounds: int, repeats: int, seed: int, work: pathlib.Path) -> dict:
    """
    The Fast-FedPG deployment and the no-op app, alternating on one SuperLink and the same SuperNodes.

    :param n_agents: agents (SuperNodes)
    :param rounds: timed rounds per run (after round 1)
    :param repeats: runs of each
    :param seed: seed
    :param work: scratch folder
    :return: ``{"deployment": [...], "noop": [...]}``, one measurement per run
    """
    from sb3_fedpg.flower.agent import NeuralAgent
    from sb3_fedpg.flower.config import parse_run_config
    from sb3_fedpg.flower.deploy import LoopbackDeployment

    n_params = NeuralAgent(parse_run_config({"seed": seed}), 0, n_agents).n_params
    common = {"num-rounds": rounds + 1, "num-agents": n_agents}
    runs: dict[str, list[dict]] = {"deployment": [], "noop": []}
    with LoopbackDeployment(work / f"deploy{n_agents}", n_agents) as deployment:
        deployment.start()
        for repeat in range(repeats):
            noop = {**common, "num-params": n_params}
            runs["noop"].append(deployed_run(deployment, NOOP_APP, noop, work / f"noop{n_agents}_{repeat}"))
            fedpg = {**common, "seed": seed, "min-agents": n_agents}
            runs["deployment"].append(deployed_run(deployment, None, fedpg, work / f"dep{n_agents}_{repeat}"))
            print(n_agents, "agents, repeat", repeat, {k: v[-1]["wall_s_per_round"] for k, v in runs.items()}, flush=True)
    return runs


def main() -> None:
    """Run the measurements and write the results."""
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per run (after one start-up round)")
    parser.add_argument("--repeats", type=int, default=2, help="deployment and no-op runs each, alternating")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
    work = pathlib.Path(tempfile.mkdtemp(prefix="flower_overhead_"))
    os.environ["FLWR_HOME"] = str(work / "flwr_home")
    results: dict = {
        "config": {
            "env": "sb3_fedpg/HeteroCartPole-v0",
            "hyperparameters": "FederatedPG defaults (64x64 MLP, n_steps=64, 8 envs/agent, H=4, gae)",
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
            "load_average_at_start": os.getloadavg()[0],
            "rounds": args.rounds,
            "repeats": args.repeats,
        },
        "agents": {},
    }
    for n in args.agents:
        entry = {"in_process": in_process(n, args.rounds, args.seed)}
        entry["simulation"] = simulation(n, args.rounds, args.seed, work)
        runs = deployment_and_noop(n, args.rounds, args.repeats, args.seed, work)
        for key, measured in runs.items():
            entry[key] = {
                "runs": measured,
                "wall_s_per_round": statistics.median(r["wall_s_per_round"] for r in measured),
                "cpu_s_per_round": statistics.median(r["cpu_s_per_round"] for r in measured),
            }
        for key in ("wall", "cpu"):
            entry[f"deployment_over_noop_{key}"] = (
                entry["deployment"][f"{key}_s_per_round"] / entry["noop"][f"{key}_s_per_round"]
            )
        results["agents"][str(n)] = entry
        print(
            n, "agents:", {k: (v["wall_s_per_round"], v["cpu_s_per_round"]) for k, v in entry.items() if isinstance(v, dict)}
        )
    results["config"]["load_average_at_end"] = os.getloadavg()[0]
    write(results)


LABELS = {
    "in_process": "in-process FederatedPG",
    "simulation": "Flower simulation (Ray)",
    "deployment": "Flower deployment (loopback, agent workers)",
    "noop": "no-op Flower app, same SuperLink/SuperNodes",
}
#: The acceptance bound of issue 14: the deployment within this factor of the no-op app (wall and CPU).
BOUND = 1.5


def write(results: dict) -> None:
    """
    :param results: the measurements
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "flower_overhead.json").write_text(json.dumps(results, indent=2))
    agents = list(results["agents"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    width = 0.8 / len(LABELS)
    for ax, key, title in zip(axes, ("wall", "cpu"), ("wall seconds per round", "CPU-seconds per round"), strict=True):
        for i, (name, label) in enumerate(LABELS.items()):
            values = [results["agents"][n][name][f"{key}_s_per_round"] for n in agents]
            ax.bar([a + i * width for a in range(len(agents))], values, width, label=label)
        ax.set_xticks([a + width * (len(LABELS) - 1) / 2 for a in range(len(agents))], [f"{n} agents" for n in agents])
        ax.set_yscale("log")
        ax.set_title(title)
    axes[0].legend(fontsize=7)
    fig.suptitle("Fast-FedPG round on HeteroCartPole: in-process, Flower simulation, deployment, Flower's floor")
    fig.tight_layout()
    fig.savefig(RESULTS / "flower_overhead.png", dpi=120)
    rows = ["| agents | run | wall s / round | CPU-s / round |", "|---|---|---|---|"]
    verdicts = []
    for n in agents:
        entry = results["agents"][n]
        for name, label in LABELS.items():
            rows.append(f"| {n} | {label} | {entry[name]['wall_s_per_round']:.3f} | {entry[name]['cpu_s_per_round']:.2f} |")
        wall, cpu = entry["deployment_over_noop_wall"], entry["deployment_over_noop_cpu"]
        met = "within" if max(wall, cpu) <= BOUND else "NOT within"
        verdicts.append(f"{n} agents: deployment / no-op app = ×{wall:.2f} wall, ×{cpu:.2f} CPU ({met} ×{BOUND})")
    config = results["config"]
    text = "\n".join(rows) + "\n\n" + "; ".join(verdicts) + ".\n\n"
    text += (
        f"{config['hyperparameters']}; {config['machine']}, load average {config['load_average_at_start']:.1f} at the "
        f"start and {config['load_average_at_end']:.1f} at the end (a shared machine). Medians over {config['rounds']} "
        f"timed rounds (round 1, the start-up, left out); deployment and no-op app alternate, {config['repeats']} runs "
        "each, median of the runs. CPU-s sum every process of the run.\n"
    )
    (RESULTS / "flower_overhead.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
