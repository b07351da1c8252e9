"""
The comparison: Fast-FedPG vs FedAvg-PG vs SB3 A2C/PPO (centralised) vs local-only training.

For each heterogeneous family (CartPole, Pendulum, HalfCheetah) at a low and a high
heterogeneity, every method gets the same budget of **total** environment steps (all
agents together) and is evaluated on the **global objective** ``J(θ) = (1/N) Σ_i J_i(θ)``:
the mean over agents of the return of the stochastic policy under each agent's own reward
(:func:`~sb3_fedpg.common.evaluation.evaluate_agents` with ``deterministic=False``).

Methods (hyperparameters from ``zoo_configs/<algo>.yml``, with the overrides in ``FAMILIES``):

- ``fedpg``: ``FederatedPG`` (Fast-FedPG, drift correction on), ``N`` agents, ``H`` local steps;
- ``fedavg``: the same with ``correction=False`` (FedAvg-PG): same ``H``, seed and everything else;
- ``a2c`` / ``ppo``: SB3 A2C / PPO trained centrally on the pooled ``FederatedVecEnv`` of all
  agents (each sub-env keeps its agent's reward): the privacy-violating reference;
- ``local``: each agent alone: ``N`` independent single-agent ``FederatedPG`` models (same
  hyperparameters as ``fedpg``), agent ``i``'s on agent ``i``'s env with ``budget / N`` steps;
  each model is evaluated on the global objective and the curve is the mean over the ``N`` models.

Curves: ``J`` vs total env steps and vs communication rounds (``fedpg``/``fedavg``: rounds;
``a2c``: gradient updates, what a federated A2C would have to exchange; ``ppo``: rollouts;
``local``: 0, it never communicates).

Every (family, heterogeneity, method, seed) run is cached as JSON under ``runs/comparison/``
(keyed by a hash of its configuration), so an interrupted invocation resumes where it stopped
and ``--families cartpole`` then ``--families pendulum`` ... fill the results in stages; the
outputs are rebuilt from every cached run of the current configuration each time.

Writes ``benchmarks/results/comparison.json``, ``comparison.png`` and ``comparison.md``.
Run: ``python benchmarks/comparison.py`` (``--quick`` for a smoke run into ``runs/comparison_quick/``, ``--help`` for
options).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import copy
import hashlib
import json
import multiprocessing
import os
import pathlib
import platform
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np

from sb3_fedpg.common.cli import ArgumentParser

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
CACHE = ROOT / "runs" / "comparison"

METHODS = ("fedpg", "fedavg", "a2c", "ppo", "local")
LABELS = {
    "fedpg": "Fast-FedPG",
    "fedavg": "FedAvg-PG",
    "a2c": "A2C (central, pooled)",
    "ppo": "PPO (central, pooled)",
    "local": "local-only",
}
COLORS = {"fedpg": "tab:blue", "fedavg": "tab:red", "a2c": "tab:orange", "ppo": "tab:green", "local": "tab:gray"}
HETEROGENEITY = (0.2, 1.0)


class MethodSpec(NamedTuple):
    """
    How a method is trained.

    :param algo: the zoo algorithm (``zoo_configs/<algo>.yml``, ``ALGORITHMS``) and the family's override key
    :param fixed: hyperparameters that define the method (e.g. ``correction=False``), applied last
    :param local: train ``N`` single-agent models, agent ``i``'s on agent ``i``'s env with ``budget / N`` steps
    """

    algo: str
    fixed: dict[str, Any] = {}  # never mutated: algo_hyperparams copies it
    local: bool = False


METHOD_SPECS: dict[str, MethodSpec] = {
    "fedpg": MethodSpec("fedpg"),
    "fedavg": MethodSpec("fedpg", {"correction": False}),
    "a2c": MethodSpec("a2c"),
    "ppo": MethodSpec("ppo"),
    "local": MethodSpec("fedpg", local=True),
}
#: the algorithms a family can override (``family[algo]``); ``run_key`` leaves these entries out of the family config
ALGOS = ("fedpg", "fedppo", "fedsvrpgm", "a2c", "ppo")


def algorithm_class(algo: str) -> type:
    """:return: the class of a zoo algorithm name"""
    from stable_baselines3 import A2C, PPO

    from sb3_fedpg import FederatedPG, FederatedPPO, FederatedSVRPGM

    return {"fedpg": FederatedPG, "fedppo": FederatedPPO, "fedsvrpgm": FederatedSVRPGM, "a2c": A2C, "ppo": PPO}[algo]


SEEDS = (0, 1, 2)

#: One entry per family: the budget (total env steps), the federation and the evaluation, plus
#: overrides of the zoo_configs entries of each algorithm (``env_kwargs.heterogeneity`` and
#: ``n_timesteps`` are set by the benchmark).
FAMILIES: dict[str, dict[str, Any]] = {
    "cartpole": {
        "env_id": "sb3_fedpg/HeteroCartPole-v0",
        "budget": 200_000,
        "n_agents": 8,
        "n_evals": 20,
        "eval_envs_per_agent": 8,
        "final_episodes_per_env": 2,
        # zoo's lr 0.1 and H = 5; shorter segments (more rounds) and a faster local critic helped in a small sweep
        "fedpg": {"n_steps": 8, "critic_learning_rate": 3e-3},
        "a2c": {},
        "ppo": {},
    },
    "pendulum": {
        "env_id": "sb3_fedpg/HeteroPendulum-v0",
        "budget": 300_000,
        "n_agents": 8,
        "n_evals": 15,
        "eval_envs_per_agent": 8,
        "final_episodes_per_env": 2,
        # zoo's Adam 3e-3, H = 5, gamma 0.9; shorter segments (more rounds), GAE lambda 0.9 and a faster local
        # critic (values of order -100 are out of reach of one Adam 1e-3 step per batch) in a small sweep
        "fedpg": {"n_steps": 8, "gae_lambda": 0.9, "critic_learning_rate": 1e-2},
        "a2c": {},
        "ppo": {},
    },
    "halfcheetah": {
        "env_id": "sb3_fedpg/HeteroHalfCheetah-v0",
        # MuJoCo is slow here (~4,400 raw steps/s, PPO ~1,000 steps/s): a small budget, 5 evaluations during
        # training with 4 episodes per agent, 8 per agent at the end
        "budget": 50_000,
        "n_agents": 4,
        "n_evals": 5,
        "eval_envs_per_agent": 4,
        "final_episodes_per_env": 2,
        # zoo's Adam 3e-4, H = 5; shorter segments (more rounds) and a faster local critic
        "fedpg": {"n_steps": 16, "critic_learning_rate": 1e-2},
        "a2c": {},
        "ppo": {},
    },
}

#: ``--quick``: tiny federations and budgets, CartPole and Pendulum only (no MuJoCo needed).
QUICK_FAMILIES: dict[str, dict[str, Any]] = {
    "cartpole": {
        "env_id": "sb3_fedpg/HeteroCartPole-v0",
        "budget": 2048,
        "n_agents": 2,
        "n_evals": 2,
        "eval_envs_per_agent": 2,
        "final_episodes_per_env": 1,
        "fedpg": {"n_envs": 4, "n_steps": 16, "local_steps": 2},
        "a2c": {"n_envs": 4},
        "ppo": {"n_envs": 4, "n_steps": 64, "batch_size": 64, "n_epochs": 1},
    },
    "pendulum": {
        "env_id": "sb3_fedpg/HeteroPendulum-v0",
        "budget": 1024,
        "n_agents": 2,
        "n_evals": 1,
        "eval_envs_per_agent": 1,
        "final_episodes_per_env": 1,
        "fedpg": {"n_envs": 4, "n_steps": 16, "local_steps": 2},
        "a2c": {"n_envs": 4},
        "ppo": {"n_envs": 4, "n_steps": 64, "batch_size": 64, "n_epochs": 1},
    },
}


@contextlib.contextmanager
def quiet_native_output(enabled: bool = True) -> Iterator[None]:
    """
    Silence what C libraries print on the process's stdout/stderr (MuJoCo prints a deprecation
    warning for every model it compiles), Python output included, while the block runs.

    :param enabled: do nothing when ``False``
    """
    if not enabled:
        yield
        return
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def algo_hyperparams(
    family: dict[str, Any], method: str, heterogeneity: float, methods: dict[str, MethodSpec] = METHOD_SPECS
) -> tuple[str, dict[str, Any]]:
    """
    The zoo_configs entry of a method, with the benchmark's overrides applied.

    :param family: an entry of ``FAMILIES``
    :param method: a key of ``methods``
    :param heterogeneity: the family's heterogeneity knob
    :param methods: the methods of the benchmark
    :return: the zoo algorithm name and the (unvalidated) entry
    """
    from sb3_fedpg.zoo.config import apply_overrides, load_config_file, select_entry

    spec = methods[method]
    algo = spec.algo
    conf = ROOT / "zoo_configs" / f"{algo}.yml"
    entry = copy.deepcopy(select_entry(load_config_file(conf), family["env_id"], str(conf)))
    overrides = dict(family.get(algo, {}))
    n_agents = family["n_agents"]
    if "n_envs" not in overrides and "n_envs_per_agent" not in overrides and "n_envs" in entry:
        # Keep the zoo's envs per agent when the benchmark changes the number of agents.
        overrides["n_envs"] = entry["n_envs"] // entry.get("n_agents", 1) * n_agents
    entry = apply_overrides(entry, overrides)
    entry["n_agents"] = n_agents
    entry["n_timesteps"] = family["budget"]
    entry["env_kwargs"] = {**(entry.get("env_kwargs") or {}), "heterogeneity": heterogeneity}
    entry.update(copy.deepcopy(spec.fixed))
    return algo, entry


def run_key(family_name: str, family: dict[str, Any], heterogeneity: float, method: str, seed: int) -> str:
    """:return: the cache file stem of one run (its configuration's hash included)"""
    _, entry = algo_hyperparams(family, method, heterogeneity)
    config = {k: v for k, v in family.items() if k not in ALGOS}
    blob = json.dumps({"entry": entry, "config": config, "method": method, "version": 1}, sort_keys=True, default=str)
    digest = hashlib.sha1(blob.encode()).hexdigest()[:10]
    return f"{family_name}_h{heterogeneity}_{method}_s{seed}_{digest}"


class AgentReward:
    """
    One agent's reward of a family, as a single-agent reward function ``fn(obs, action, next_obs, reward)``:
    the shared dynamics (natively vectorised where possible) with only agent ``agent``'s reward,
    exactly the reward that agent has in the federation.

    :param reward: the family's batched reward (built for the whole federation)
    :param agent: the agent
    """

    def __init__(self, reward: Any, agent: int) -> None:
        self.reward = reward
        self.agent = agent

    def __call__(self, obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray, reward: np.ndarray) -> np.ndarray:
        return self.reward(obs, action, next_obs, reward, np.full(len(obs), self.agent))


def _make_curve_callback(evaluate: Callable[[Any], np.ndarray], every: int, stop_at: int) -> Any:
    """
    A callback recording the global objective of the current policy every ``every`` env steps:
    at round ends for federated algorithms (the only consistent state), at rollout starts (just after
    an update) for SB3 algorithms, and at the start of training. With each point it records the
    training time so far (wall-clock and process CPU seconds) **without** the time spent evaluating.

    :param evaluate: ``model -> per-agent returns``
    :param every: env steps between evaluations
    :param stop_at: no evaluation at or after this many env steps (the final one is the caller's)
    """
    from sb3_fedpg.common.callbacks import RoundCallback
    from sb3_fedpg.common.federated_algorithm import FederatedAlgorithm

    class GlobalObjectiveCurve(RoundCallback):
        def __init__(self) -> None:
            super().__init__()
            self.next_eval = 0
            self.curve: dict[str, list[Any]] = {"timesteps": [], "rounds": [], "per_agent": [], "wall": [], "cpu": []}
            self.start = (time.perf_counter(), time.process_time())
            self.eval_time = [0.0, 0.0]  # wall, cpu

        def training_time(self) -> tuple[float, float]:
            """:return: wall-clock and CPU seconds since training started, evaluations excluded"""
            return (
                time.perf_counter() - self.start[0] - self.eval_time[0],
                time.process_time() - self.start[1] - self.eval_time[1],
            )

        def _maybe_record(self) -> None:
            if self.num_timesteps < self.next_eval or self.num_timesteps >= stop_at:
                return
            wall, cpu = self.training_time()
            began = (time.perf_counter(), time.process_time())
            per_agent = evaluate(self.model)
            self.eval_time[0] += time.perf_counter() - began[0]
            self.eval_time[1] += time.process_time() - began[1]
            self.curve["timesteps"].append(int(self.num_timesteps))
            self.curve["rounds"].append(communication_rounds(self.model))
            self.curve["per_agent"].append(np.asarray(per_agent).tolist())
            self.curve["wall"].append(wall)
            self.curve["cpu"].append(cpu)
            while self.next_eval <= self.num_timesteps:
                self.next_eval += every

        def _on_training_start(self) -> None:
            self.start = (time.perf_counter(), time.process_time())
            self._maybe_record()

        def _on_rollout_start(self) -> None:
            if not isinstance(self.model, FederatedAlgorithm):
                self._maybe_record()

        def _on_round_end(self) -> bool:
            self._maybe_record()
            return True

    return GlobalObjectiveCurve()


def communication_rounds(model: Any) -> int:
    """
    :return: rounds of communication so far: ``FederatedPG`` / ``FederatedPPO`` rounds; A2C gradient updates (each would be one
        exchange if federated); PPO rollouts (one data exchange each)
    """
    from stable_baselines3 import PPO

    from sb3_fedpg.common.federated_algorithm import FederatedAlgorithm

    if isinstance(model, FederatedAlgorithm):
        return int(model._n_rounds)
    if isinstance(model, PPO):
        return int(model._n_updates // model.n_epochs)
    return int(model._n_updates)


def stochastic_returns(model: Any, eval_env: Any, n_episodes: int) -> np.ndarray:
    """:return: per-agent returns of the stochastic policy (the comparison's evaluation)"""
    from sb3_fedpg.common.evaluation import evaluate_agents

    return evaluate_agents(model, eval_env, n_episodes_per_env=n_episodes, deterministic=False)


#: ``evaluator(model, eval_env, n_episodes_per_env) -> per-agent returns``
Evaluator = Callable[[Any, Any, int], np.ndarray]


def train_curve(
    family: dict[str, Any],
    method: str,
    heterogeneity: float,
    seed: int,
    agent: int | None = None,
    methods: dict[str, MethodSpec] = METHOD_SPECS,
    evaluator: Evaluator = stochastic_returns,
) -> dict[str, Any]:
    """
    Train one model and record its global-objective curve.

    :param family: an entry of ``FAMILIES``
    :param method: a key of ``methods``
    :param heterogeneity: heterogeneity knob
    :param seed: seed of the model and its env
    :param agent: for local methods: the agent whose env the single-agent model trains on
    :param methods: the methods of the benchmark
    :param evaluator: the evaluation of a model on the evaluation federation
    :return: the curve (per-agent returns, training wall-clock and CPU seconds at each evaluation), the final
        per-agent returns, the timings and the hyperparameters
    """
    from sb3_fedpg.envs.families import get_family

    from sb3_fedpg import make_federated_vec_env
    from sb3_fedpg.zoo.config import validate_hyperparams

    algo, entry = algo_hyperparams(family, method, heterogeneity, methods)
    # a central baseline whose critic reads the agent one-hot (sb3_fedpg.common.agent_aware); not a zoo key
    agent_aware = bool(entry.pop("agent_aware_critic", False))
    algo_class = algorithm_class(algo)
    hp = validate_hyperparams(entry, algo_class, f"{algo} [{family['env_id']}]")
    n_agents, env_id, env_kwargs = family["n_agents"], family["env_id"], hp.env_kwargs
    budget = family["budget"]
    mujoco = "HalfCheetah" in env_id
    with quiet_native_output(mujoco):
        eval_env = make_federated_vec_env(
            env_id,
            n_agents=n_agents,
            n_envs_per_agent=family["eval_envs_per_agent"],
            env_kwargs=env_kwargs,
            seed=10_000 + seed,
        )
        if agent is None:
            env = make_federated_vec_env(
                env_id, n_agents=n_agents, n_envs_per_agent=hp.n_envs_per_agent, env_kwargs=env_kwargs, seed=seed
            )
        else:  # agent `agent` alone, on its own env (its own reward), with its share of the budget
            family_spec = get_family(env_id)
            if family_spec is None or family_spec.make_vector_env is not None:
                raise ValueError(f"{env_id}: local-only training needs a reward-heterogeneous family with shared dynamics.")
            reward, base_id, base_kwargs = family_spec.build(n_agents, **env_kwargs)
            env = make_federated_vec_env(
                base_id,
                n_envs_per_agent=hp.n_envs_per_agent,
                reward_fns=[AgentReward(reward, agent)],
                env_kwargs=base_kwargs,
                seed=1000 * seed + agent,
            )
            budget //= n_agents
    model_kwargs = dict(hp.model_kwargs)
    if agent_aware:
        from sb3_fedpg.common.agent_aware import AgentAwareCriticPolicy, AgentIdVecEnv

        env, eval_env = AgentIdVecEnv(env), AgentIdVecEnv(eval_env)
        model_kwargs["policy"] = AgentAwareCriticPolicy
        model_kwargs["policy_kwargs"] = {**(model_kwargs.get("policy_kwargs") or {}), "n_agent_ids": n_agents}
    model = algo_class(env=env, seed=seed if agent is None else 1000 * seed + agent, **model_kwargs)
    callback = _make_curve_callback(lambda m: evaluator(m, eval_env, 1), max(1, budget // family["n_evals"]), budget)
    start = time.perf_counter()
    model.learn(budget, callback=callback)
    train_seconds = time.perf_counter() - start
    train_wall, train_cpu = callback.training_time()
    began = (time.perf_counter(), time.process_time())
    final = evaluator(model, eval_env, family["final_episodes_per_env"])
    eval_wall = callback.eval_time[0] + time.perf_counter() - began[0]
    eval_cpu = callback.eval_time[1] + time.process_time() - began[1]
    curve = callback.curve
    curve["timesteps"].append(int(model.num_timesteps))
    curve["rounds"].append(communication_rounds(model))
    curve["per_agent"].append(np.asarray(final).tolist())
    curve["wall"].append(train_wall)
    curve["cpu"].append(train_cpu)
    env.close()
    eval_env.close()
    return {
        "curve": curve,
        "final_per_agent": np.asarray(final).tolist(),
        "seconds": time.perf_counter() - start,
        "train_seconds": train_seconds,
        "train_wall": train_wall,
        "train_cpu": train_cpu,
        "eval_wall": eval_wall,
        "eval_cpu": eval_cpu,
        "hyperparams": json.loads(json.dumps(entry, default=str)),
    }


def run_one(
    family_name: str,
    family: dict[str, Any],
    heterogeneity: float,
    method: str,
    seed: int,
    methods: dict[str, MethodSpec] = METHOD_SPECS,
    evaluator: Evaluator = stochastic_returns,
) -> dict[str, Any]:
    """
    One (family, heterogeneity, method, seed) run, with one torch thread (call it in a subprocess).

    :param methods: the methods of the benchmark
    :param evaluator: the evaluation of a model on the evaluation federation
    :return: the run: global objective vs total env steps, vs rounds and vs training wall-clock / CPU seconds
        (evaluations excluded), final per-agent returns, timings
    """
    import torch as th

    th.set_num_threads(1)
    start, cpu_start = time.perf_counter(), time.process_time()
    if not methods[method].local:
        res = train_curve(family, method, heterogeneity, seed, methods=methods, evaluator=evaluator)
        parts = [res]
        per_agent = np.asarray(res["curve"]["per_agent"])
        timesteps = np.asarray(res["curve"]["timesteps"], dtype=float)
        rounds = np.asarray(res["curve"]["rounds"], dtype=float)
        wall, cpu = np.asarray(res["curve"]["wall"]), np.asarray(res["curve"]["cpu"])
        final = np.asarray(res["final_per_agent"])
        extra: dict[str, Any] = {}
    else:
        n = family["n_agents"]
        parts = [
            train_curve(family, method, heterogeneity, seed, agent=i, methods=methods, evaluator=evaluator) for i in range(n)
        ]
        grid = np.asarray(parts[0]["curve"]["timesteps"], dtype=float)
        # Each model's curve on the global objective, on model 0's grid of its own env steps.
        stacked = np.stack(
            [
                np.stack(
                    [np.interp(grid, p["curve"]["timesteps"], np.asarray(p["curve"]["per_agent"])[:, j]) for j in range(n)],
                    axis=1,
                )
                for p in parts
            ]
        )  # (model, eval, agent)
        per_agent = stacked.mean(axis=0)
        timesteps = grid * n  # all N models train side by side: total env steps
        rounds = np.zeros_like(grid)
        # the compute that brings all N models to a grid point: the sum of their training times there
        wall, cpu = (sum(np.interp(grid, p["curve"]["timesteps"], p["curve"][k]) for p in parts) for k in ("wall", "cpu"))
        finals = np.asarray([p["final_per_agent"] for p in parts])  # (model, agent)
        final = finals.mean(axis=0)
        res = parts[0]
        extra = {
            # model i on its own task (the diagonal) vs on everyone's (the global objective)
            "own_task_final": float(np.mean(np.diag(finals))),
            "global_final_per_model": finals.mean(axis=1).tolist(),
        }
    return {
        "family": family_name,
        "env_id": family["env_id"],
        "heterogeneity": heterogeneity,
        "method": method,
        "seed": seed,
        "timesteps": timesteps.tolist(),
        "rounds": rounds.tolist(),
        "global_return": per_agent.mean(axis=1).tolist(),
        "final_per_agent": final.tolist(),
        "final_global": float(final.mean()),
        "wall": np.asarray(wall).tolist(),
        "cpu": np.asarray(cpu).tolist(),
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu_start,
        **{k: float(sum(p[k] for p in parts)) for k in ("train_wall", "train_cpu", "eval_wall", "eval_cpu")},
        "hyperparams": res["hyperparams"],
        **extra,
    }


def _cached_run(cache: pathlib.Path, key: str, job: tuple[Any, ...]) -> dict[str, Any]:
    path = cache / f"{key}.json"
    if path.exists():
        return json.loads(path.read_text())
    result = run_one(*job)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, path)  # atomic: an interrupted run leaves no half-written result
    return result


# ---------------------------------------------------------------------------------- summary
def summarize(runs: list[dict[str, Any]], families: dict[str, dict[str, Any]], hets: tuple[float, ...]) -> dict[str, Any]:
    """
    Mean and spread over seeds of the final global objective, and the targets of the issue.

    :param runs: every completed run
    :param families: the families of the benchmark
    :param hets: the heterogeneity levels
    :return: ``{family: {h: {method: stats}}}`` and the target checks
    """
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for name in families:
        for h in hets:
            cell: dict[str, Any] = {}
            for method in METHODS:
                sel = [r for r in runs if r["family"] == name and r["heterogeneity"] == h and r["method"] == method]
                if not sel:
                    continue
                finals = np.asarray([r["final_global"] for r in sel])
                cell[method] = {
                    "mean": float(finals.mean()),
                    "std": float(finals.std(ddof=1)) if len(finals) > 1 else 0.0,
                    "finals": finals.tolist(),
                    "seeds": [r["seed"] for r in sel],
                    "rounds": float(np.mean([r["rounds"][-1] for r in sel])),
                    "seconds": float(np.mean([r["seconds"] for r in sel])),
                }
                if method == "local":
                    cell[method]["own_task_mean"] = float(np.mean([r["own_task_final"] for r in sel]))
            if cell:
                table.setdefault(name, {})[str(h)] = cell
    checks = []
    for name, by_h in table.items():
        for h, cell in by_h.items():
            row: dict[str, Any] = {"family": name, "heterogeneity": float(h)}
            if "fedpg" in cell and "fedavg" in cell:
                diff = cell["fedpg"]["mean"] - cell["fedavg"]["mean"]
                spread = cell["fedpg"]["std"] + cell["fedavg"]["std"]
                row.update(fedpg_minus_fedavg=diff, spread=spread, beats_fedavg=bool(diff > spread))
            if "fedpg" in cell and "a2c" in cell:
                ref = cell["a2c"]["mean"]
                gap = (cell["fedpg"]["mean"] - ref) / abs(ref) if ref != 0 else float("nan")
                row.update(relative_gap_to_a2c=gap, within_10pct_of_a2c=bool(gap >= -0.10))
            checks.append(row)
    high = [c for c in checks if c["heterogeneity"] == max(hets)]
    targets = {
        "beats_fedavg_at_high_h": [c["family"] for c in high if c.get("beats_fedavg")],
        "target_beats_fedavg_met": sum(bool(c.get("beats_fedavg")) for c in high) >= 2,
        "within_10pct_of_a2c_at_high_h": [c["family"] for c in high if c.get("within_10pct_of_a2c")],
        "target_a2c_met": bool(high) and all(c.get("within_10pct_of_a2c", False) for c in high),
    }
    return {"table": table, "checks": checks, "targets": targets}


def markdown_table(summary: dict[str, Any], families: dict[str, dict[str, Any]]) -> str:
    """The results table (final global objective, mean ± std over seeds), generated from the summary."""
    methods = [m for m in METHODS if any(m in c for by_h in summary["table"].values() for c in by_h.values())]
    own = "local" in methods
    head = "| family | h | " + " | ".join(LABELS[m] for m in methods) + (" | local-only, own task" if own else "")
    head += " | FedPG − FedAvg (spread) | FedPG vs A2C |"
    lines = [head, "|---|---:|" + "---:|" * (len(methods) + own) + "---:|---:|"]
    checks = {(c["family"], c["heterogeneity"]): c for c in summary["checks"]}
    for name, by_h in summary["table"].items():
        for h, cell in by_h.items():
            cells = []
            for m in methods:
                if m in cell:
                    s = cell[m]
                    cells.append(
                        f"{s['mean']:.1f} ± {s['std']:.1f}" + ("" if len(s["finals"]) >= 3 else f" (n={len(s['finals'])})")
                    )
                else:
                    cells.append("—")
            if own:
                cells.append(f"{cell['local']['own_task_mean']:.1f}" if "local" in cell else "—")
            c = checks[(name, float(h))]
            diff = f"{c['fedpg_minus_fedavg']:+.1f} ({c['spread']:.1f})" if "spread" in c else "—"
            if c.get("beats_fedavg"):
                diff = f"**{diff}**"
            gap = f"{100 * c['relative_gap_to_a2c']:+.1f}%" if "relative_gap_to_a2c" in c else "—"
            lines.append(f"| {name} | {h} | " + " | ".join(cells) + f" | {diff} | {gap} |")
    t = summary["targets"]
    lines += [
        "",
        "Final global objective J (mean over agents of each agent's return under its own reward, stochastic policy),",
        "mean ± std over seeds at the budget. FedPG − FedAvg in bold when it exceeds the spread (sum of the two stds).",
        "local-only: N single-agent models, each trained on its own agent's env with budget / N steps; J is the mean over",
        "the models of each model's global objective; 'own task' is the mean of each model's return on its own agent's task.",
        "FedPG vs A2C: (J_FedPG − J_A2C) / |J_A2C|.",
        "",
        "| target (highest heterogeneity) | met? | where |",
        "|---|---|---|",
        f"| Fast-FedPG beats FedAvg-PG by more than the seed spread on ≥ 2 families | "
        f"{'yes' if t['target_beats_fedavg_met'] else 'no'} | {', '.join(t['beats_fedavg_at_high_h']) or 'none'} |",
        f"| Fast-FedPG within 10% of centrally trained A2C | {'yes' if t['target_a2c_met'] else 'no'} | "
        f"{', '.join(t['within_10pct_of_a2c_at_high_h']) or 'none'} |",
    ]
    budgets = ", ".join(f"{n} {families[n]['budget']:,} steps (N = {families[n]['n_agents']})" for n in summary["table"])
    lines += ["", f"Budgets (total env steps, all agents): {budgets}."]
    return "\n".join(lines) + "\n"


def plot(runs: list[dict[str, Any]], families: dict[str, dict[str, Any]], hets: tuple[float, ...], path: pathlib.Path) -> None:
    """One row per family; for each heterogeneity, J vs env steps and J vs communication rounds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sb3_fedpg.common.plotting import Series, aggregate_curves, draw_panel

    def curve(sel: list[dict[str, Any]], x_key: str) -> Any:  # every seed on the first seed's grid
        return aggregate_curves([(r[x_key], r["global_return"]) for r in sel], grid=sel[0][x_key])

    names = [n for n in families if any(r["family"] == n for r in runs)]
    fig, axes = plt.subplots(len(names), 2 * len(hets), figsize=(4.6 * 2 * len(hets), 3.4 * len(names)), squeeze=False)
    for row, name in enumerate(names):
        for col, h in enumerate(hets):
            ax_s, ax_r = axes[row, 2 * col], axes[row, 2 * col + 1]
            steps, rounds = [], []
            for method in METHODS:
                sel = [r for r in runs if r["family"] == name and r["heterogeneity"] == h and r["method"] == method]
                if not sel:
                    continue
                steps.append(Series(f"{LABELS[method]} ({len(sel)} seeds)", curve(sel, "timesteps"), COLORS[method]))
                if method in ("fedpg", "fedavg"):
                    rounds.append(Series(LABELS[method], curve(sel, "rounds"), COLORS[method]))
                else:
                    final = np.mean([r["final_global"] for r in sel])
                    ax_r.axhline(final, color=COLORS[method], ls="--", lw=1, label=f"{LABELS[method]} (final)")
            env_id = families[name]["env_id"].split("/")[-1]
            ylabel = "J: mean return over agents"
            title = f"{env_id}, h = {h}: J vs "
            draw_panel(ax_s, steps, title + "env steps", ylabel, "total env steps (all agents)", fontsize=9, legend=None)
            xlabel = "communication rounds (FedPG / FedAvg-PG)"
            draw_panel(ax_r, rounds, title + "rounds", "", xlabel, steps=False, fontsize=9, legend=None)
            for ax in (ax_s, ax_r):
                ax.tick_params(labelsize=8)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(handles), fontsize=9, bbox_to_anchor=(0.5, 0.0))
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None, output: pathlib.Path = RESULTS) -> dict[str, Any]:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny budgets, CartPole and Pendulum only (smoke run)")
    parser.add_argument("--families", nargs="+", default=None, help="families to run now (default: all)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, help="methods to run now")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS), help="seeds")
    parser.add_argument("--heterogeneity", nargs="+", type=float, default=list(HETEROGENEITY), help="heterogeneity levels")
    parser.add_argument("--workers", type=int, default=2, help="parallel worker processes (one torch thread each)")
    parser.add_argument("--cache", type=pathlib.Path, default=None, help="folder of the per-run results (resume)")
    parser.add_argument(
        "--output", type=pathlib.Path, default=None, help="folder for the JSON, PNG and table (--quick: runs/comparison_quick)"
    )
    args = parser.parse_args(argv)
    if args.output is not None:
        output = args.output
    elif args.quick and output == RESULTS:  # a smoke run never overwrites the committed results
        output = ROOT / "runs" / "comparison_quick"

    families = QUICK_FAMILIES if args.quick else FAMILIES
    if args.quick:  # smoke run: two seeds (a spread to compute), the high heterogeneity only
        args.seeds = args.seeds[:2]
        args.heterogeneity = args.heterogeneity[-1:]
    cache = args.cache or (output / "comparison_runs" if args.quick else CACHE)
    hets = tuple(args.heterogeneity)
    to_run = args.families or list(families)
    unknown = set(to_run) - set(families)
    if unknown:
        parser.error(f"unknown families {sorted(unknown)}; choose from {sorted(families)}")

    # Jobs in delivery order (family by family); the slow PPO runs first within a family.
    order = sorted(args.methods, key=lambda m: ("ppo", "local", "a2c", "fedpg", "fedavg").index(m))
    jobs = [
        (run_key(name, families[name], h, m, s), (name, families[name], h, m, s))
        for name in to_run
        for h in hets
        for m in order
        for s in args.seeds
    ]
    from tqdm import tqdm

    start = time.perf_counter()
    if args.workers <= 1 or args.quick:
        for key, job in tqdm(jobs, desc="comparison"):
            _cached_run(cache, key, job)
    else:
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=args.workers, mp_context=ctx) as pool:
            futures = {pool.submit(_cached_run, cache, key, job): key for key, job in jobs}
            for future in tqdm(concurrent.futures.as_completed(futures), total=len(futures), desc="comparison"):
                result = future.result()
                tqdm.write(f"{futures[future]}: J = {result['final_global']:.1f} ({result['seconds']:.0f} s)")
    wall = time.perf_counter() - start

    # Rebuild the outputs from every cached run of the current configuration (all families, all seeds).
    runs = []
    for name, family in families.items():
        for h in hets:
            for m in METHODS:
                for s in args.seeds:
                    path = cache / f"{run_key(name, family, h, m, s)}.json"
                    if path.exists():
                        runs.append(json.loads(path.read_text()))
    summary = summarize(runs, families, hets)
    payload = {
        "quick": args.quick,
        "families": {n: f for n, f in families.items() if any(r["family"] == n for r in runs)},
        "heterogeneity": list(hets),
        "seeds": args.seeds,
        "evaluation": "evaluate_agents(model, eval_env, deterministic=False): one episode per eval sub-env during training, "
        "final_episodes_per_env at the end; eval env seeded 10000 + seed",
        "machine": {"python": platform.python_version(), "cpus": multiprocessing.cpu_count(), "torch_threads": 1},
        "wall_seconds_this_invocation": wall,
        "run_seconds_total": float(sum(r["seconds"] for r in runs)),
        "run_seconds_by_family": {n: float(sum(r["seconds"] for r in runs if r["family"] == n)) for n in families},
        "summary": summary,
        "runs": runs,
    }
    output.mkdir(parents=True, exist_ok=True)
    (output / "comparison.json").write_text(json.dumps(payload, indent=1))
    (output / "comparison.md").write_text(markdown_table(summary, families))
    if runs:
        plot(runs, families, hets, output / "comparison.png")
    print(markdown_table(summary, families))
    return payload


if __name__ == "__main__":
    main()
