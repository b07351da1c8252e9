"""
SB3's identity tasks at the budgets SB3's own tests give A2C and PPO (issue 27, deliverable 2).

SB3's ``tests/test_identity.py`` trains A2C and PPO on ``IdentityEnv(4)``, ``IdentityEnvMultiDiscrete(4)`` and
``IdentityEnvMultiBinary(4)`` (one env in a ``DummyVecEnv``; ``gamma=0.4``, ``learning_rate=0.002``, 1200 steps; PPO
also ``n_steps=256, n_epochs=4``; ``seed=3``) and on ``IdentityEnvBox(eps=0.5)`` (the raw env; A2C 2000 steps,
``learning_rate=1e-3``, ``gamma=0.95``, ``net_arch=[64, 64]``, ``log_std_init=-0.5``; PPO 1000 steps,
``learning_rate=1e-3``, ``n_steps=256, n_epochs=4``; ``seed=0``), then asserts that ``evaluate_policy`` over 20
episodes (on the training env) reaches a mean reward of 90. Here every algorithm runs those settings exactly, with
seeds 0-9 instead of the test's one: SB3's A2C and PPO, and the federated algorithm standing for each (one agent on
SB3's plain ``VecEnv``): FederatedPG, FederatedSVRPGM and FederatedA2C (FederatedPG with A2C's defaults) where A2C
stands, FederatedPPO where PPO stands, each with
its library defaults for everything the test leaves unset. ``CANDIDATES`` are A2C-like FederatedPG settings (added to
the test's A2C settings), evidence for a change of FederatedPG's defaults.

A federated row is **level** with the SB3 algorithm it stands for on a task when neither its rewards nor its pass rate
differ from SB3's beyond the seed spread: a two-sided Mann-Whitney U test on the ten rewards each (ranks: the rewards
saturate at 100, where a t-test is undefined, and a failed seed is an outlier, not a shift) and a two-sided Fisher
exact test on the pass counts (reward ≥ 90), each at 5 %. It is **behind** when either rejects in SB3's favour,
**ahead** when one rejects in its favour and neither in SB3's. The project's mean ± std overlap rule (mean − std
against mean + std) is kept beside it (``overlap`` in the JSON, and listed where it judges otherwise): it compares
single seeds' spread rather than means, so with ten seeds it lets far lower means pass as level.

Every run is cached in ``benchmarks/cache/identity_parity/`` (keyed by a hash of its algorithm, task, settings,
budget, evaluation and seed), so a rerun only reports.

    nice -n 10 python benchmarks/identity_parity.py   # run what is missing (16 CPU minutes in all), report
    python benchmarks/identity_parity.py --report-only # rebuild benchmarks/results/identity_parity.{json,md}
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import platform
import statistics
import time
import warnings
from typing import Any

from sb3_fedpg.common.cli import ArgumentParser

HERE = pathlib.Path(__file__).resolve().parent
RESULTS = HERE / "results"
CACHE = HERE / "cache" / "identity_parity"

DIM = 4
TASKS = ("Discrete", "MultiDiscrete", "MultiBinary", "Box")
#: the seed SB3's test uses on each task
TEST_SEED = {"Discrete": 3, "MultiDiscrete": 3, "MultiBinary": 3, "Box": 0}
SEEDS = tuple(range(10))
EVAL_EPISODES = 20
THRESHOLD = 90.0
#: significance of the two-sided Fisher exact test on the pass counts
ALPHA = 0.05
#: in a candidate: the critic's step size is the run's ``learning_rate`` (A2C has one optimiser for actor and critic)
SAME_AS_LEARNING_RATE = "learning_rate"
#: A2C's optimiser (``use_rms_prop=True, rms_prop_eps=1e-5``), given by name so that it hashes and prints
A2C_RMSPROP = {"optimizer_class": "RMSprop", "optimizer_kwargs": {"alpha": 0.99, "eps": 1e-5, "weight_decay": 0}}


@dataclasses.dataclass(frozen=True)
class Method:
    """
    :param algo: the algorithm's class name (SB3's ``A2C``/``PPO`` or one of sb3_fedpg's)
    :param stands_for: the SB3 algorithm whose test settings it runs with, and which it is compared with
    :param label: its name in the tables
    :param extra: settings on top of the test's (a candidate's)
    """

    algo: str
    stands_for: str
    label: str
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


REFERENCES = {"a2c": Method("A2C", "A2C", "A2C"), "ppo": Method("PPO", "PPO", "PPO")}
DEFAULTS = {
    "fedpg": Method("FederatedPG", "A2C", "FederatedPG"),
    "fedsvrpgm": Method("FederatedSVRPGM", "A2C", "FederatedSVRPGM"),
    "feda2c": Method("FederatedA2C", "A2C", "FederatedA2C"),
    "fedppo": Method("FederatedPPO", "PPO", "FederatedPPO"),
}
#: A2C-like FederatedPG settings, from the smallest change (A2C's rollout length) to A2C's whole update
CANDIDATE_SETTINGS: dict[str, dict[str, Any]] = {
    "n5_sgd": {"n_steps": 5},
    "n5_adam": {"n_steps": 5, "local_optimizer": "adam"},
    "n5_rmsprop": {"n_steps": 5, "policy_kwargs": A2C_RMSPROP},
    "n16_adam_raw": {"n_steps": 16, "local_optimizer": "adam", "normalize_advantage": False},
    "n5_adam_raw": {"n_steps": 5, "local_optimizer": "adam", "normalize_advantage": False},
    "n5_rmsprop_raw": {"n_steps": 5, "policy_kwargs": A2C_RMSPROP, "normalize_advantage": False},
    "n5_adam_a2c": {
        "n_steps": 5,
        "local_optimizer": "adam",
        "normalize_advantage": False,
        "gae_lambda": 1.0,
        "max_grad_norm": 0.5,
        "critic_learning_rate": SAME_AS_LEARNING_RATE,
    },
    "n5_rmsprop_a2c": {
        "n_steps": 5,
        "policy_kwargs": A2C_RMSPROP,
        "normalize_advantage": False,
        "gae_lambda": 1.0,
        "max_grad_norm": 0.5,
        "critic_learning_rate": SAME_AS_LEARNING_RATE,
    },
}


def describe(settings: dict[str, Any]) -> str:
    """:return: a candidate's settings as keyword arguments"""
    parts = []
    for key, value in settings.items():
        if key == "policy_kwargs" and value == A2C_RMSPROP:
            parts.append("RMSprop as A2C's (alpha=0.99, eps=1e-5)")
        elif value == SAME_AS_LEARNING_RATE:
            parts.append(f"{key}=learning_rate")
        else:
            parts.append(f"{key}={value!r}")
    return ", ".join(parts)


CANDIDATES = {f"fedpg_{name}": Method("FederatedPG", "A2C", describe(s), s) for name, s in CANDIDATE_SETTINGS.items()}
METHODS = {**REFERENCES, **DEFAULTS, **CANDIDATES}


def test_settings(reference: str, task: str) -> tuple[int, dict[str, Any]]:
    """:return: SB3's test budget and keyword arguments for ``reference`` (``"A2C"`` or ``"PPO"``) on ``task``"""
    if task != "Box":  # test_discrete
        kwargs: dict[str, Any] = {"gamma": 0.4, "learning_rate": 0.002}
        if reference == "PPO":
            kwargs.update(n_epochs=4, n_steps=256)
        return 1200, kwargs
    if reference == "A2C":  # test_continuous
        policy_kwargs = {"net_arch": [64, 64], "log_std_init": -0.5}
        return 2000, {"policy_kwargs": policy_kwargs, "gamma": 0.95, "learning_rate": 1e-3}
    return 1000, {"n_steps": 256, "n_epochs": 4, "learning_rate": 1e-3}


def run_config(method: str, task: str, seed: int) -> dict[str, Any]:
    """:return: everything that decides one run (its cache key hashes it): JSON values only"""
    spec = METHODS[method]
    budget, kwargs = test_settings(spec.stands_for, task)
    kwargs = {**kwargs, "seed": seed}
    for key, value in spec.extra.items():
        if key == "policy_kwargs":  # merged with the test's (the Box task's network and log_std_init)
            kwargs["policy_kwargs"] = {**kwargs.get("policy_kwargs", {}), **value}
        else:
            kwargs[key] = kwargs["learning_rate"] if value == SAME_AS_LEARNING_RATE else value
    return {"algo": spec.algo, "task": task, "dim": DIM, "total_timesteps": budget, "kwargs": kwargs, "eval": EVAL_EPISODES}


def run_key(method: str, task: str, seed: int) -> str:
    """:return: the cache file stem of one run: readable, with its configuration's hash"""
    config = run_config(method, task, seed)
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]
    return f"{config['algo']}_{task}_s{seed}_{digest}"


def make_env(task: str) -> Any:
    from stable_baselines3.common.envs import IdentityEnv, IdentityEnvBox, IdentityEnvMultiBinary, IdentityEnvMultiDiscrete

    return {
        "Discrete": lambda: IdentityEnv(DIM),
        "MultiDiscrete": lambda: IdentityEnvMultiDiscrete(DIM),
        "MultiBinary": lambda: IdentityEnvMultiBinary(DIM),
        "Box": lambda: IdentityEnvBox(eps=0.5),
    }[task]()


def train_and_evaluate(config: dict[str, Any]) -> dict[str, Any]:
    """
    One run as SB3's test does it: the same env object for training and evaluation (in a ``DummyVecEnv`` for the
    discrete tasks, raw for the Box task, as the test passes them).

    :return: the mean reward over the evaluation episodes, its spread, the env steps taken and the CPU seconds
    """
    import stable_baselines3
    import torch as th
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import DummyVecEnv

    import sb3_fedpg

    th.set_num_threads(1)
    start = time.process_time()
    kwargs = json.loads(json.dumps(config["kwargs"]))
    policy_kwargs = kwargs.get("policy_kwargs", {})
    if "optimizer_class" in policy_kwargs:
        policy_kwargs["optimizer_class"] = getattr(th.optim, policy_kwargs["optimizer_class"])
    algo = getattr(stable_baselines3, config["algo"], None) or getattr(sb3_fedpg, config["algo"])
    raw = make_env(config["task"])
    env = raw if config["task"] == "Box" else DummyVecEnv([lambda: raw])
    with warnings.catch_warnings():  # the federated algorithms' note that learn() runs whole rounds (env_steps says it)
        warnings.simplefilter("ignore")
        model = algo("MlpPolicy", env, device="cpu", **kwargs).learn(config["total_timesteps"])
    train_seconds = time.process_time() - start
    reward, spread = evaluate_policy(model, env, n_eval_episodes=config["eval"], warn=False)
    return {
        "config": config,
        "reward": float(reward),
        "episode_std": float(spread),
        "env_steps": int(model.num_timesteps),
        "train_cpu_seconds": train_seconds,
        "cpu_seconds": time.process_time() - start,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared), one torch thread",
    }


def _write_json(path: pathlib.Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1) + "\n")
    os.replace(tmp, path)  # atomic: an interrupted run leaves no half-written result


def sweep(methods: list[str], cache: pathlib.Path) -> None:
    """Run the missing runs, seed by seed across methods and tasks (a partial sweep already covers every cell)."""
    for seed in SEEDS:
        for method in methods:
            for task in TASKS:
                path = cache / f"{run_key(method, task, seed)}.json"
                if path.exists():
                    continue
                result = train_and_evaluate(run_config(method, task, seed))
                _write_json(path, result)
                print(f"{method} {task} seed {seed}: {result['reward']:.1f} ({result['cpu_seconds']:.1f} CPU s)", flush=True)


def summarize(runs: list[dict[str, Any]], task: str) -> dict[str, Any]:
    """:return: one cell: the rewards by seed, their mean and (sample) standard deviation, the passes"""
    rewards = [r["reward"] for r in runs]
    return {
        "rewards": rewards,
        "mean": statistics.fmean(rewards),
        "std": statistics.stdev(rewards),
        "passes": sum(r >= THRESHOLD for r in rewards),
        "seeds": len(rewards),
        "test_seed_reward": rewards[SEEDS.index(TEST_SEED[task])],
        "env_steps": sorted({r["env_steps"] for r in runs}),
        "cpu_seconds": sum(r["cpu_seconds"] for r in runs),
    }


def verdict(cell: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """
    :param cell: a federated row's cell (:func:`summarize`)
    :param reference: the SB3 algorithm's cell on the same task
    :return: the rewards' and the pass counts' comparisons (each ``better``, ``worse`` or ``level``) with their tests'
        p-values, the verdict (``behind``, ``ahead`` or ``level``), and the mean ± std overlap rule's comparison
    """
    from scipy.stats import fisher_exact, mannwhitneyu

    def direction(p_value: float, ours: float, theirs: float) -> str:
        return "level" if p_value >= ALPHA or ours == theirs else "worse" if ours < theirs else "better"

    rewards_p = float(mannwhitneyu(cell["rewards"], reference["rewards"], alternative="two-sided").pvalue)
    failures = [cell["seeds"] - cell["passes"], reference["seeds"] - reference["passes"]]
    passes_p = float(fisher_exact([[cell["passes"], failures[0]], [reference["passes"], failures[1]]])[1])
    rewards = direction(rewards_p, cell["mean"], reference["mean"])
    passes = direction(passes_p, cell["passes"] / cell["seeds"], reference["passes"] / reference["seeds"])
    outcomes = {rewards, passes}
    overall = "behind" if "worse" in outcomes else "ahead" if "better" in outcomes else "level"
    # the project's mean ± std overlap rule in place of the rank test, for comparison
    if cell["mean"] + cell["std"] < reference["mean"] - reference["std"]:
        overlap = "worse"
    elif cell["mean"] - cell["std"] > reference["mean"] + reference["std"]:
        overlap = "better"
    else:
        overlap = "level"
    outcomes = {overlap, passes}
    overlap_verdict = "behind" if "worse" in outcomes else "ahead" if "better" in outcomes else "level"
    return {
        "rewards_vs_sb3": rewards,
        "mann_whitney_p": rewards_p,
        "passes_vs_sb3": passes,
        "fisher_p": passes_p,
        "verdict": overall,
        "overlap": overlap,
        "overlap_verdict": overlap_verdict,
    }


def report(cache: pathlib.Path, output: pathlib.Path) -> dict[str, Any]:
    """Rebuild ``identity_parity.{json,md}`` from the cached runs (every run must be there)."""
    missing = [(m, t, s) for m in METHODS for t in TASKS for s in SEEDS if not (cache / f"{run_key(m, t, s)}.json").exists()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} runs are not in {cache} (first: {missing[0]}): run without --report-only")
    runs = {
        (m, t): [json.loads((cache / f"{run_key(m, t, s)}.json").read_text()) for s in SEEDS] for m in METHODS for t in TASKS
    }
    cells: dict[str, Any] = {}
    for method, spec in METHODS.items():
        cells[method] = {}
        for task in TASKS:
            cell = summarize(runs[method, task], task)
            if method not in REFERENCES:
                cell.update(verdict(cell, summarize(runs[spec.stands_for.lower(), task], task)))
            cells[method][task] = cell
        if method not in REFERENCES:
            cells[method]["level_on_all"] = all(cells[method][t]["verdict"] != "behind" for t in TASKS)
    every_run = [r for rs in runs.values() for r in rs]
    payload = {
        "tasks": list(TASKS),
        "seeds": list(SEEDS),
        "test_seed": TEST_SEED,
        "eval_episodes": EVAL_EPISODES,
        "threshold": THRESHOLD,
        "alpha": ALPHA,
        "methods": {m: {**dataclasses.asdict(spec)} for m, spec in METHODS.items()},
        "settings": {m: {t: run_config(m, t, TEST_SEED[t]) for t in TASKS} for m in METHODS},
        "cells": cells,
        "runs": len(every_run),
        "cpu_seconds": sum(r["cpu_seconds"] for r in every_run),
        "machines": sorted({r["machine"] for r in every_run}),
    }
    output.mkdir(parents=True, exist_ok=True)
    (output / "identity_parity.json").write_text(json.dumps(payload, indent=1) + "\n")
    (output / "identity_parity.md").write_text(markdown(payload))
    return payload


def _cell(cell: dict[str, Any]) -> str:
    return f"{cell['mean']:.1f} ± {cell['std']:.1f}"


def _passes(cell: dict[str, Any]) -> str:
    return f"{cell['passes']}/{cell['seeds']}"


def _test_seed(cell: dict[str, Any]) -> str:
    return "pass" if cell["test_seed_reward"] >= THRESHOLD else "fail"


def _p(value: float) -> str:
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def _label(payload: dict[str, Any], method: str) -> str:
    label = payload["methods"][method]["label"]
    return f"FederatedPG with `{label}`" if method in CANDIDATES else f"{label} defaults" if method in DEFAULTS else label


def _verdict(cell: dict[str, Any], tests: bool = True) -> str:
    """:return: the verdict (bold when behind), with the tests that reject unless ``tests=False``"""
    if cell["verdict"] == "level" or not tests:
        return f"**{cell['verdict']}**" if cell["verdict"] == "behind" else cell["verdict"]
    rejecting = [f"U p {_p(cell['mann_whitney_p'])}"] if cell["rewards_vs_sb3"] != "level" else []
    rejecting += [f"Fisher p {_p(cell['fisher_p'])}"] if cell["passes_vs_sb3"] != "level" else []
    text = f"{cell['verdict']} ({', '.join(rejecting)})"
    return f"**{text}**" if cell["verdict"] == "behind" else text


def markdown(payload: dict[str, Any]) -> str:
    """:return: the report's tables (from :func:`report`'s payload only)"""
    cells, seeds = payload["cells"], payload["seeds"]
    lines = [
        "SB3's `tests/test_identity.py` settings and budgets, exactly (discrete tasks: `gamma=0.4`, "
        "`learning_rate=0.002`, 1200 steps, PPO `n_steps=256, n_epochs=4`; Box: A2C 2000 steps, `learning_rate=1e-3`, "
        "`gamma=0.95`, `net_arch=[64, 64]`, `log_std_init=-0.5`, PPO 1000 steps, `learning_rate=1e-3`, "
        "`n_steps=256, n_epochs=4`), "
        f"{len(seeds)} seeds ({seeds[0]}-{seeds[-1]}; the test itself uses 3, and 0 on Box); each run's reward is "
        f"`evaluate_policy`'s mean over {payload['eval_episodes']} episodes, and it passes at ≥ {payload['threshold']:g} "
        "(the test's assertion). Cells: mean ± standard deviation of the reward over the seeds, pass count. The "
        "federated algorithms run one agent on SB3's `DummyVecEnv` with their library defaults for everything the "
        "test leaves unset. Verdict against the SB3 algorithm the row stands for: **behind** when a two-sided "
        "Mann-Whitney U test on the rewards (U p) or a two-sided Fisher exact test on the pass counts (Fisher p) rejects "
        f"at {payload['alpha']:.0%} in SB3's favour, ahead when one rejects in the federated row's favour and neither "
        "in SB3's, else level.",
        "",
        "| task | SB3 | reward | passes | test seed | federated | reward | passes | test seed | U p | Fisher p | verdict |",
        "|---|---|---:|---:|---|---|---:|---:|---|---:|---:|---|",
    ]
    for task in payload["tasks"]:
        for method in DEFAULTS:
            spec = payload["methods"][method]
            ref, cell = cells[spec["stands_for"].lower()][task], cells[method][task]
            lines.append(
                f"| {task} | {spec['stands_for']} | {_cell(ref)} | {_passes(ref)} | {_test_seed(ref)} | {spec['label']} | "
                f"{_cell(cell)} | {_passes(cell)} | {_test_seed(cell)} | {_p(cell['mann_whitney_p'])} | "
                f"{_p(cell['fisher_p'])} | {_verdict(cell, tests=False)} |"
            )
    lines += [
        "",
        "A2C-like FederatedPG settings (added to the test's A2C settings: `learning_rate` stays the test's 0.002, 1e-3 "
        "on Box) against A2C, same seeds and rule.",
        "",
        "| FederatedPG settings | " + " | ".join(payload["tasks"]) + " | level with A2C on all four | CPU s / run |",
        "|---|" + "---|" * len(payload["tasks"]) + "---|---:|",
    ]
    a2c = cells["a2c"]
    a2c_cpu = sum(a2c[t]["cpu_seconds"] for t in payload["tasks"]) / (len(payload["tasks"]) * len(seeds))
    row = " | ".join(f"{_cell(a2c[t])}, {_passes(a2c[t])}" for t in payload["tasks"])
    lines.append(f"| A2C (reference) | {row} | | {a2c_cpu:.1f} |")
    for method in ("fedpg", *CANDIDATES):
        spec, cell = payload["methods"][method], cells[method]
        label = "library defaults" if method == "fedpg" else f"`{spec['label']}`"
        row = " | ".join(f"{_cell(cell[t])}, {_passes(cell[t])}, {_verdict(cell[t])}" for t in payload["tasks"])
        cpu = sum(cell[t]["cpu_seconds"] for t in payload["tasks"]) / (len(payload["tasks"]) * len(seeds))
        lines.append(f"| {label} | {row} | {'yes' if cell['level_on_all'] else 'no'} | {cpu:.1f} |")
    groups: dict[str, list[str]] = {}
    for method in payload["methods"]:
        steps = ", ".join(f"{t} {'/'.join(map(str, cells[method][t]['env_steps']))}" for t in payload["tasks"])
        groups.setdefault(steps, []).append(_label(payload, method))
    lines += ["", "Env steps per run (the federated algorithms run whole rounds, PPO whole rollouts):", ""]
    lines += [f"- {steps}: {'; '.join(labels)}" for steps, labels in groups.items()]
    differ = [
        f"{_label(payload, m)} on {t}: {cells[m][t]['verdict']} (overlap rule: {cells[m][t]['overlap_verdict']})"
        for m in (*DEFAULTS, *CANDIDATES)
        for t in payload["tasks"]
        if cells[m][t]["overlap_verdict"] != cells[m][t]["verdict"]
    ]
    if differ:
        lines += [
            "",
            "Where the project's mean ± std overlap rule (mean − std against mean + std, in place of the U test; the "
            "Fisher test kept) would judge otherwise:",
            "",
        ]
        lines += [f"- {text}" for text in differ]
    lines += [
        "",
        f"Written by `python benchmarks/identity_parity.py` from {payload['runs']} cached runs "
        f"(`benchmarks/cache/identity_parity/`), {payload['cpu_seconds'] / 60:.1f} CPU minutes of training and evaluation "
        f"in all, on {'; '.join(payload['machines'])}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None, output: pathlib.Path = RESULTS, cache: pathlib.Path = CACHE) -> dict[str, Any]:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("--report-only", action="store_true", help="rebuild the report from the cache, run nothing")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS), help="rows to run now")
    args = parser.parse_args(argv)
    if not args.report_only:
        sweep(args.methods, cache)
    return report(cache, output)


if __name__ == "__main__":
    main()
