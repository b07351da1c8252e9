"""
Roofline: each algorithm's time against the floor of the work it cannot avoid (issue 29, deliverable 1).

One process, one torch thread, the same federated task for every algorithm (``sb3_fedpg/HeteroCartPole-v0``, 8 agents
x 8 envs, 64x64 MLPs; SB3's A2C and PPO trained centrally on the same 64 envs). For each algorithm:

- **FLOPs** of one round, split into the rollout (sampling the batches) and the update (gradients, optimiser steps,
  averaging), counted by ``torch.utils.flop_counter.FlopCounterMode`` on the torch path (the NumPy fast path of the
  federated rollouts does the same matrix products, uncounted there);
- **matmul floor**: every matrix product of that round (``mm``/``addmm``/``bmm``/``baddbmm``, with its shapes)
  replayed back to back on random tensors: what this machine needs for that arithmetic at those shapes, per phase;
- **env floor**: the same federated vector env stepped with pre-drawn random actions for as many steps;
- **measured**: ``learn`` over whole rounds, with the rollout timed apart (``collect_batch``; SB3's
  ``collect_rollouts``).

All timings are repeated and interleaved (the algorithms' order rotates every repeat, each repeat times all of
them), and the median is reported. Fractions: rollout ÷ (env floor + rollout matmul floor), update ÷ update matmul
floor, steps/s ÷ env stepping steps/s, and the large-matmul peak (GFLOP/s of a square ``peak_size`` product) for scale.

Run: ``python benchmarks/roofline.py`` (``--quick`` for a smoke run). Writes ``benchmarks/results/roofline.*``.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Context, Report, Run, Settings, Study, table

#: algorithm -> constructor arguments besides policy/env/seed (the library's and SB3's defaults otherwise)
ALGORITHMS: dict[str, dict[str, Any]] = {
    "FederatedPG": {},
    "FederatedA2C": {},
    "FederatedSVRPGM": {},
    "FederatedPPO": {},
    "A2C": {},
    "PPO": {"n_steps": 256},  # one rollout of 16,384 samples on 64 envs, SB3's default on 8 envs x 2048
}
PHASES = ("rollout", "update")


def _build(name: str, env: Any, seed: int) -> Any:
    import stable_baselines3

    import sb3_fedpg

    algo = getattr(sb3_fedpg, name, None) or getattr(stable_baselines3, name)
    policy_kwargs = {"net_arch": [64, 64]}
    return algo("MlpPolicy", env, seed=seed, policy_kwargs=policy_kwargs, device="cpu", **ALGORITHMS[name])


def _round_steps(model: Any) -> int:
    return int(getattr(model, "steps_per_round", model.n_steps * model.n_envs))


class _PhaseTimer:
    """Times the rollout method of a model (``collect_batch`` or SB3's ``collect_rollouts``) inside ``learn``."""

    def __init__(self, model: Any) -> None:
        self.name = "collect_batch" if hasattr(model, "collect_batch") else "collect_rollouts"
        self.inner = getattr(model, self.name)
        self.seconds = 0.0
        setattr(model, self.name, self)
        self.recorder: Any = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        if self.recorder is not None:
            self.recorder.phase = "rollout"
        try:
            return self.inner(*args, **kwargs)
        finally:
            if self.recorder is not None:
                self.recorder.phase = "update"
            self.seconds += time.perf_counter() - start


def _recorder() -> Any:
    import torch as th
    from torch.utils._python_dispatch import TorchDispatchMode

    matmuls = {th.ops.aten.mm.default, th.ops.aten.addmm.default, th.ops.aten.bmm.default, th.ops.aten.baddbmm.default}

    class MatmulRecorder(TorchDispatchMode):
        """Records every matrix product's op and argument shapes, by phase."""

        def __init__(self) -> None:
            super().__init__()
            self.phase = "update"
            self.calls: dict[str, list[tuple[Any, list[Any], dict[str, Any]]]] = {p: [] for p in PHASES}

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func in matmuls:
                spec = [(tuple(a.shape), a.dtype) if isinstance(a, th.Tensor) else a for a in args]
                self.calls[self.phase].append((func, spec, dict(kwargs)))
            return func(*args, **kwargs)

    return MatmulRecorder()


def _replay_seconds(calls: list[tuple[Any, list[Any], dict[str, Any]]]) -> float:
    """Seconds to run the recorded matrix products back to back (inputs made beforehand, outside the timing)."""
    import torch as th

    generator = th.Generator().manual_seed(0)
    made = [
        (func, [th.randn(a[0], dtype=a[1], generator=generator) if isinstance(a, tuple) else a for a in spec], kwargs)
        for func, spec, kwargs in calls
    ]
    start = time.perf_counter()
    for func, args, kwargs in made:
        func(*args, **kwargs)
    return time.perf_counter() - start


class _RandomStepper:
    """The same federated vector env, stepped with pre-drawn random actions (the env-stepping floor)."""

    def __init__(self, env_id: str, n_agents: int, n_envs_per_agent: int, seed: int) -> None:
        from sb3_fedpg import make_federated_vec_env

        self.env = make_federated_vec_env(env_id, n_agents, n_envs_per_agent, seed=seed)
        self.env.action_space.seed(seed)
        self.actions = [[self.env.action_space.sample() for _ in range(self.env.num_envs)] for _ in range(64)]
        self.env.reset()

    def seconds(self, steps: int) -> float:
        """:return: the seconds of ``steps`` env steps (all sub-environments' steps counted)"""
        import numpy as np

        actions = [np.array(a) for a in self.actions]
        start = time.perf_counter()
        for k in range(-(-steps // self.env.num_envs)):
            self.env.step(actions[k % 64])
        return time.perf_counter() - start


def _peak_gflops(size: int) -> float:
    import torch as th

    a, b = th.randn(size, size), th.randn(size, size)
    th.mm(a, b)
    start = time.perf_counter()
    th.mm(a, b)
    return 2 * size**3 / (time.perf_counter() - start) / 1e9


def measure(
    env_id: str,
    n_agents: int,
    n_envs_per_agent: int,
    algorithms: list[str],
    min_steps: int,
    repeats: int,
    seed: int,
    peak_size: int,
) -> dict[str, Any]:
    """
    Count, replay and time every algorithm (see the module docstring).

    :return: per algorithm: the FLOPs and matmul calls of one round by phase, and per repeat the measured rollout
        and update seconds, the matmul replay seconds by phase and the env stepping seconds, over the whole rounds
        that make at least ``min_steps`` env steps (``rounds``); the peak GFLOP/s per repeat
    """
    import warnings

    import torch as th
    from torch.utils.flop_counter import FlopCounterMode

    from sb3_fedpg import make_federated_vec_env

    th.set_num_threads(1)
    warnings.simplefilter("ignore")  # whole-round notes: every learn() below asks for whole rounds
    models, timers, counts, calls, envs = {}, {}, {}, {}, {}
    for name in algorithms:
        env = make_federated_vec_env(env_id, n_agents, n_envs_per_agent, seed=seed)
        model = _build(name, env, seed)
        model.learn(_round_steps(model))  # warm-up round
        timer = _PhaseTimer(model)
        numpy_path = getattr(model, "_numpy_rollout", False)
        if numpy_path:
            model._numpy_rollout = False  # the torch path: the same products, visible to the counters
        recorder = _recorder()
        timer.recorder = recorder
        counter = FlopCounterMode(display=False)
        with counter, recorder:
            model.learn(_round_steps(model), reset_num_timesteps=False)
        timer.recorder = None
        if numpy_path:
            model._numpy_rollout = True
        total_flops = counter.get_total_flops()
        calls[name] = recorder.calls
        rollout_flops = sum(_flops_of(func, spec) for func, spec, _ in recorder.calls["rollout"])
        counts[name] = {
            "round_steps": _round_steps(model),
            "rounds": -(-min_steps // _round_steps(model)),
            "flops": {"rollout": rollout_flops, "update": total_flops - rollout_flops},
            "matmul_calls": {p: len(recorder.calls[p]) for p in PHASES},
            # the counter's total and the recorded products' (they agree when the round's FLOPs are all matmuls)
            "counter_flops": total_flops,
            "recorded_flops": sum(_flops_of(func, spec) for p in PHASES for func, spec, _ in recorder.calls[p]),
        }
        models[name], timers[name] = model, timer
        envs[name] = _RandomStepper(env_id, n_agents, n_envs_per_agent, seed)
    timings: dict[str, list[dict[str, float]]] = {name: [] for name in algorithms}
    peaks, load_before = [], os.getloadavg()[0]
    for repeat in range(repeats):
        order = algorithms[repeat % len(algorithms) :] + algorithms[: repeat % len(algorithms)]
        for name in order:
            model, timer = models[name], timers[name]
            rounds = counts[name]["rounds"]
            steps = rounds * counts[name]["round_steps"]
            timer.seconds = 0.0
            start = time.perf_counter()
            model.learn(steps, reset_num_timesteps=False)
            total = time.perf_counter() - start
            replay = {p: rounds * _replay_seconds(calls[name][p]) for p in PHASES}
            env_seconds = envs[name].seconds(steps)
            row = {"rollout": timer.seconds, "update": total - timer.seconds, "env": env_seconds}
            timings[name].append(row | {f"mm_{p}": replay[p] for p in PHASES})
        peaks.append(_peak_gflops(peak_size))
    load = {"before": load_before, "after": os.getloadavg()[0], "cpus": os.cpu_count()}
    return {"counts": counts, "timings": timings, "peak_gflops": peaks, "load_average": load}


def _flops_of(func: Any, spec: list[Any]) -> int:
    """FLOPs of one recorded matrix product (2 per multiply-add), from its shapes."""
    shapes = [a[0] for a in spec if isinstance(a, tuple)]
    name = str(func)
    if "baddbmm" in name or "addmm" in name:
        shapes = shapes[1:]  # the added term
    (a, b) = shapes[:2]
    if len(a) == 3:  # (batch, n, k) @ (batch, k, m)
        return 2 * a[0] * a[1] * a[2] * b[2]
    return 2 * a[0] * a[1] * b[1]


def run(s: Settings) -> Run:
    config = dict(env_id=s.env, n_agents=s.n_agents, n_envs_per_agent=s.n_envs_per_agent, algorithms=s.algorithms)
    config |= dict(min_steps=s.min_steps, repeats=s.repeats, seed=s.seed, peak_size=s.peak_size)
    return Run(measure, config, "roofline")


def _median(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def report(ctx: Context) -> Report:
    import matplotlib.pyplot as plt
    import numpy as np

    s = ctx.settings
    result = ctx.results[run(s)]
    peak, load = statistics.median(result["peak_gflops"]), result["load_average"]
    summary: dict[str, dict[str, float]] = {}
    for name in s.algorithms:
        counts, rows = result["counts"][name], result["timings"][name]
        per_k = 1000 / (counts["rounds"] * counts["round_steps"])  # seconds per 1,000 env steps
        m = {key: _median(rows, key) * per_k for key in ("rollout", "update", "env", "mm_rollout", "mm_update")}
        flops = {p: counts["flops"][p] * counts["rounds"] * per_k for p in PHASES}
        m["steps_per_s"] = 1000 / (m["rollout"] + m["update"])
        m["env_steps_per_s"] = 1000 / m["env"]
        m["of_env_stepping"] = m["steps_per_s"] / m["env_steps_per_s"]
        m["rollout_over_floor"] = m["rollout"] / (m["env"] + m["mm_rollout"])
        m["update_over_floor"] = m["update"] / m["mm_update"] if m["mm_update"] > 0 else float("nan")
        m["update_gflops"] = flops["update"] / m["update"] / 1e9
        m["update_over_peak_floor"] = m["update"] / (flops["update"] / (peak * 1e9))
        m |= {f"flops_{p}": flops[p] for p in PHASES}
        summary[name] = m
    rows = [
        [
            "algorithm",
            "steps/s",
            "of env stepping",
            "rollout ms / 1k steps (floor: env + matmuls)",
            "rollout ÷ floor",
            "update ms / 1k steps (matmul floor)",
            "update ÷ floor",
            "update MFLOP / 1k steps",
            "update GFLOP/s",
        ]
    ]
    for name, m in summary.items():
        rows.append(
            [
                name,
                f"{m['steps_per_s']:,.0f}",
                f"{m['of_env_stepping']:.0%}",
                f"{m['rollout'] * 1e3:.1f} ({m['env'] * 1e3:.1f} + {m['mm_rollout'] * 1e3:.1f})",
                f"{m['rollout_over_floor']:.2f}x",
                f"{m['update'] * 1e3:.1f} ({m['mm_update'] * 1e3:.1f})",
                f"{m['update_over_floor']:.2f}x",
                f"{m['flops_update'] / 1e6:,.0f}",
                f"{m['update_gflops']:.2f}",
            ]
        )
    env_rate = statistics.median(m["env_steps_per_s"] for m in summary.values())
    lines = table(rows, "lrrrrrrrr")
    lines += [
        "",
        f"Random stepping of the same federated env: {env_rate:,.0f} steps/s (median over the algorithms' runs). "
        f"Large-matmul peak ({s.peak_size}x{s.peak_size}, one thread): {peak:.1f} GFLOP/s. Medians of {s.repeats} "
        f"interleaved repeats of at least {s.min_steps:,} env steps (whole rounds) each; "
        f"{s.n_agents} agents x {s.n_envs_per_agent} envs, {s.env}, one torch thread. 1-minute load average "
        f"{load['before']:.1f} before and {load['after']:.1f} after the run on {load['cpus']} cores.",
    ]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    names = list(summary)
    x = np.arange(len(names))
    panels = [
        ("rollout", ["env", "mm_rollout"], "floor: env stepping + its matmuls"),
        ("update", ["mm_update"], "floor: its matmuls"),
    ]
    for ax, (phase, floor_keys, floor_label) in zip(axes, panels, strict=True):
        ax.bar(x - 0.2, [summary[n][phase] * 1e3 for n in names], 0.4, label="measured")
        ax.bar(x + 0.2, [sum(summary[n][k] for k in floor_keys) * 1e3 for n in names], 0.4, label=floor_label)
        ax.set_xticks(x, names, rotation=30, ha="right")
        ax.set_yscale("log")
        ax.set_ylabel("ms per 1,000 env steps")
        ax.set_title(f"{phase}")
        ax.legend(fontsize=8)
    fig.suptitle(f"Roofline: measured vs floor ({s.n_agents} agents x {s.n_envs_per_agent} envs, one torch thread)")
    data = dict(settings=dict(s), peak_gflops=peak, summary=summary, counts=result["counts"], timings=result["timings"])
    return Report(data, fig, "\n".join(lines) + "\n", indent=1)


STUDY = Study(
    "roofline",
    __doc__,
    dict(
        env="sb3_fedpg/HeteroCartPole-v0",
        n_agents=8,
        n_envs_per_agent=8,
        algorithms=list(ALGORITHMS),
        min_steps=65_536,
        repeats=5,
        seed=0,
        peak_size=1024,
    ),
    lambda s: [run(s)],
    report,
    quick=dict(n_agents=2, n_envs_per_agent=2, min_steps=1_024, repeats=2, peak_size=128),
)
main = STUDY.main

if __name__ == "__main__":
    main()
