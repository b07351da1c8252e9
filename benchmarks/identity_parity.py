"""
SB3's identity tasks at the budgets SB3's own tests give A2C and PPO (issue 27, deliverable 2).

SB3's ``tests/test_identity.py`` trains A2C and PPO on ``IdentityEnv(4)``, ``IdentityEnvMultiDiscrete(4)``,
``IdentityEnvMultiBinary(4)`` (in a ``DummyVecEnv``) and ``IdentityEnvBox(eps=0.5)`` (raw) at small fixed budgets
(:func:`config` gives its settings) and asserts that ``evaluate_policy`` over 20 episodes on the training env reaches
a mean reward of 90. Here every algorithm runs those settings exactly, with seeds 0-9 instead of the test's one: SB3's
A2C and PPO, and the federated algorithm standing for each (one agent on SB3's plain ``VecEnv``, its library defaults
for everything the test leaves unset): FederatedPG, FederatedSVRPGM and FederatedA2C (FederatedPG with A2C's
defaults) for A2C, FederatedPPO for PPO. ``CANDIDATES`` are A2C-like FederatedPG settings (added to the test's A2C
settings), evidence for a change of FederatedPG's defaults.

A federated row is **level** with the SB3 algorithm it stands for on a task when neither a two-sided Mann-Whitney U
test on the ten rewards each (ranks: the rewards saturate at 100, where a t-test is undefined, and a failed seed is an
outlier, not a shift) nor a two-sided Fisher exact test on the pass counts (reward ≥ 90) rejects at 5 %; **behind**
when either rejects in SB3's favour, **ahead** when one rejects in its favour and neither in SB3's. The project's mean
± std overlap rule is kept beside it (``overlap`` in the JSON; the report lists where it judges otherwise): it
compares single seeds' spread rather than means, so with ten seeds it lets far lower means pass as level.

A study on ``benchmarks/harness``, each run cached in ``benchmarks/cache/identity_parity/``. Run
``nice -n 10 python benchmarks/identity_parity.py`` (the missing runs, about 18 CPU minutes in all, then the report;
``--methods fedpg ...``: those rows and the SB3 rows they stand beside; ``--quick``: a smoke run), or with ``--report``
to rebuild ``benchmarks/results/identity_parity.{json,md}`` from the cache alone.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Context, Report, Run, Settings, Study, table

TEST_SEED = {"Discrete": 3, "MultiDiscrete": 3, "MultiBinary": 3, "Box": 0}  # the seed SB3's test uses on each task
THRESHOLD, ALPHA = 90.0, 0.05  # the test's pass mark; the significance of both tests
SAME_AS_LEARNING_RATE = "learning_rate"  # a candidate's critic step size is learning_rate (A2C has one optimiser)
#: A2C's optimiser (``use_rms_prop=True, rms_prop_eps=1e-5``), given by name so that it hashes and prints
A2C_RMSPROP = {"optimizer_class": "RMSprop", "optimizer_kwargs": {"alpha": 0.99, "eps": 1e-5, "weight_decay": 0}}


@dataclasses.dataclass(frozen=True)
class Method:
    """An algorithm's class name, the SB3 algorithm whose test settings it runs with (and is compared with), its name
    in the tables, and settings on top of the test's (a candidate's)."""

    algo: str
    stands_for: str
    label: str
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


REFERENCES = {"a2c": Method("A2C", "A2C", "A2C"), "ppo": Method("PPO", "PPO", "PPO")}
ALGOS = {"fedpg": "FederatedPG", "fedsvrpgm": "FederatedSVRPGM", "feda2c": "FederatedA2C", "fedppo": "FederatedPPO"}
DEFAULTS = {name: Method(algo, "PPO" if algo == "FederatedPPO" else "A2C", algo) for name, algo in ALGOS.items()}
ADAM, RMSPROP, RAW = {"local_optimizer": "adam"}, {"policy_kwargs": A2C_RMSPROP}, {"normalize_advantage": False}
A2C_UPDATE = {**RAW, "gae_lambda": 1.0, "max_grad_norm": 0.5, "critic_learning_rate": SAME_AS_LEARNING_RATE}
#: A2C-like FederatedPG settings, from the smallest change (A2C's rollout length) to A2C's whole update
CANDIDATE_SETTINGS: dict[str, dict[str, Any]] = {
    "n5_sgd": {"n_steps": 5},
    "n5_adam": {"n_steps": 5, **ADAM},
    "n5_rmsprop": {"n_steps": 5, **RMSPROP},
    "n16_adam_raw": {"n_steps": 16, **ADAM, **RAW},
    "n5_adam_raw": {"n_steps": 5, **ADAM, **RAW},
    "n5_rmsprop_raw": {"n_steps": 5, **RMSPROP, **RAW},
    "n5_adam_a2c": {"n_steps": 5, **ADAM, **A2C_UPDATE},
    "n5_rmsprop_a2c": {"n_steps": 5, **RMSPROP, **A2C_UPDATE},
}


def describe(settings: dict[str, Any]) -> str:
    """:return: a candidate's settings as keyword arguments"""
    parts = []
    for key, value in settings.items():
        if key == "policy_kwargs" and value == A2C_RMSPROP:
            parts.append("RMSprop as A2C's (alpha=0.99, eps=1e-5)")
        else:
            parts.append(f"{key}=learning_rate" if value == SAME_AS_LEARNING_RATE else f"{key}={value!r}")
    return ", ".join(parts)


CANDIDATES = {f"fedpg_{name}": Method("FederatedPG", "A2C", describe(s), s) for name, s in CANDIDATE_SETTINGS.items()}
METHODS = {**REFERENCES, **DEFAULTS, **CANDIDATES}


def train_and_evaluate(algo: str, task: str, dim: int, total_timesteps: int, kwargs: dict, eval: int) -> dict[str, Any]:
    """
    One run as SB3's test does it: the same env object for training and evaluation (in a ``DummyVecEnv`` for the
    discrete tasks, raw for the Box task, as the test passes them).

    :return: the mean reward over ``eval`` episodes, its spread, the env steps taken and the CPU seconds
    """
    import stable_baselines3
    import torch as th
    from stable_baselines3.common import envs
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import DummyVecEnv

    import sb3_fedpg

    th.set_num_threads(1)
    start = time.process_time()
    kwargs = copy.deepcopy(kwargs)
    if "optimizer_class" in kwargs.get("policy_kwargs", {}):
        kwargs["policy_kwargs"]["optimizer_class"] = getattr(th.optim, kwargs["policy_kwargs"]["optimizer_class"])
    model_class = getattr(stable_baselines3, algo, None) or getattr(sb3_fedpg, algo)
    discrete = {"Discrete": envs.IdentityEnv, "MultiDiscrete": envs.IdentityEnvMultiDiscrete}
    discrete["MultiBinary"] = envs.IdentityEnvMultiBinary
    raw = envs.IdentityEnvBox(eps=0.5) if task == "Box" else discrete[task](dim)
    env = raw if task == "Box" else DummyVecEnv([lambda: raw])
    with warnings.catch_warnings():  # the federated algorithms' note that learn() runs whole rounds (env_steps says it)
        warnings.simplefilter("ignore")
        model = model_class("MlpPolicy", env, device="cpu", **kwargs).learn(total_timesteps)
    train_seconds = time.process_time() - start
    reward, spread = evaluate_policy(model, env, n_eval_episodes=eval, warn=False)
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs (shared), one torch thread"
    result = {"reward": float(reward), "episode_std": float(spread), "env_steps": int(model.num_timesteps)}
    return result | {"train_cpu_seconds": train_seconds, "cpu_seconds": time.process_time() - start, "machine": machine}


def config(method: str, task: str, seed: int, eval_episodes: int) -> dict[str, Any]:
    """:return: one run's arguments: SB3's test budget and settings for the algorithm ``method`` stands for, its own"""
    spec = METHODS[method]
    if task != "Box":  # test_discrete
        ppo = {"n_epochs": 4, "n_steps": 256} if spec.stands_for == "PPO" else {}
        budget, kwargs = 1200, {"gamma": 0.4, "learning_rate": 0.002, **ppo}
    elif spec.stands_for == "A2C":  # test_continuous
        policy_kwargs = {"net_arch": [64, 64], "log_std_init": -0.5}
        budget, kwargs = 2000, {"policy_kwargs": policy_kwargs, "gamma": 0.95, "learning_rate": 1e-3}
    else:
        budget, kwargs = 1000, {"n_steps": 256, "n_epochs": 4, "learning_rate": 1e-3}
    kwargs["seed"] = seed
    for key, value in spec.extra.items():
        if key == "policy_kwargs":  # merged with the test's (the Box task's network and log_std_init)
            kwargs["policy_kwargs"] = {**kwargs.get("policy_kwargs", {}), **value}
        else:
            kwargs[key] = kwargs["learning_rate"] if value == SAME_AS_LEARNING_RATE else value
    return {"algo": spec.algo, "task": task, "dim": 4, "total_timesteps": budget, "kwargs": kwargs, "eval": eval_episodes}


def methods(s: Settings) -> list[str]:
    """:return: the rows asked for and the SB3 rows they are compared with, in the tables' order"""
    if unknown := sorted(set(s.methods) - set(METHODS)):
        raise SystemExit(f"identity_parity: no method {', '.join(unknown)} (methods: {', '.join(METHODS)})")
    return [m for m in METHODS if m in s.methods or m in {METHODS[n].stands_for.lower() for n in s.methods}]


def run(s: Settings, method: str, task: str, seed: int) -> Run:
    return Run(train_and_evaluate, config(method, task, seed, s.eval_episodes), f"{method}_{task}_s{seed}")


def runs(s: Settings) -> list[Run]:  # seed by seed: a partial sweep already covers every cell
    return [run(s, method, task, seed) for seed in s.seeds for method in methods(s) for task in s.tasks]


def summarize(results: list[dict[str, Any]], task: str, seeds: list[int]) -> dict[str, Any]:
    """:return: one cell: the rewards by seed, their mean and (sample) standard deviation, the passes"""
    rewards = [r["reward"] for r in results]
    cell = {"rewards": rewards, "mean": statistics.fmean(rewards), "std": statistics.stdev(rewards)}
    cell |= {"passes": sum(r >= THRESHOLD for r in rewards), "seeds": len(rewards)}
    cell["test_seed_reward"] = dict(zip(seeds, rewards, strict=True)).get(TEST_SEED[task])
    return cell | {
        "env_steps": sorted({r["env_steps"] for r in results}),
        "cpu_seconds": sum(r["cpu_seconds"] for r in results),
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

    def overall(*outcomes: str) -> str:
        return "behind" if "worse" in outcomes else "ahead" if "better" in outcomes else "level"

    rewards_p = float(mannwhitneyu(cell["rewards"], reference["rewards"], alternative="two-sided").pvalue)
    table_2x2 = [[c["passes"], c["seeds"] - c["passes"]] for c in (cell, reference)]
    passes_p = float(fisher_exact(table_2x2)[1])
    rewards = direction(rewards_p, cell["mean"], reference["mean"])
    passes = direction(passes_p, cell["passes"] / cell["seeds"], reference["passes"] / reference["seeds"])
    # the project's mean ± std overlap rule in place of the rank test, for comparison
    low, high = reference["mean"] - reference["std"], reference["mean"] + reference["std"]
    overlap = "worse" if cell["mean"] + cell["std"] < low else "better" if cell["mean"] - cell["std"] > high else "level"
    return {"rewards_vs_sb3": rewards, "mann_whitney_p": rewards_p, "passes_vs_sb3": passes, "fisher_p": passes_p} | {
        "verdict": overall(rewards, passes),
        "overlap": overlap,
        "overlap_verdict": overall(overlap, passes),
    }


def report(ctx: Context) -> Report:
    s, rows = ctx.settings, methods(ctx.settings)
    results = {(m, t): [ctx.results[run(s, m, t, seed)] for seed in s.seeds] for m in rows for t in s.tasks}
    cells: dict[str, Any] = {m: {t: summarize(results[m, t], t, s.seeds) for t in s.tasks} for m in rows}
    for m in rows:
        if m not in REFERENCES:
            for t in s.tasks:
                cells[m][t] |= verdict(cells[m][t], cells[METHODS[m].stands_for.lower()][t])
            cells[m]["level_on_all"] = all(cells[m][t]["verdict"] != "behind" for t in s.tasks)
    every = [r for rs in results.values() for r in rs]
    payload = {"tasks": s.tasks, "seeds": s.seeds, "test_seed": TEST_SEED, "eval_episodes": s.eval_episodes}
    payload |= {"threshold": THRESHOLD, "alpha": ALPHA, "methods": {m: dataclasses.asdict(METHODS[m]) for m in rows}}
    payload["settings"] = {m: {t: config(m, t, TEST_SEED[t], s.eval_episodes) for t in s.tasks} for m in rows}
    payload |= {"cells": cells, "runs": len(every), "cpu_seconds": sum(r["cpu_seconds"] for r in every)}
    payload["machines"] = sorted({r["machine"] for r in every})
    return Report(payload, markdown=markdown(payload), indent=1, final_newline=True)


def markdown(p: dict[str, Any]) -> str:
    """:return: the report's tables (from the JSON data alone)"""
    cells, seeds, tasks = p["cells"], p["seeds"], p["tasks"]
    cell = lambda c: f"{c['mean']:.1f} ± {c['std']:.1f}"
    passes = lambda c: f"{c['passes']}/{c['seeds']}"
    test_seed = lambda c: "n/a" if c["test_seed_reward"] is None else "pass" if c["test_seed_reward"] >= THRESHOLD else "fail"
    pval = lambda value: "< 0.001" if value < 0.001 else f"{value:.3f}"
    cpu = lambda row: f"{sum(row[t]['cpu_seconds'] for t in tasks) / (len(tasks) * len(seeds)):.1f}"
    label = lambda m: p["methods"][m]["label"]
    name = lambda m: (
        f"FederatedPG with `{label(m)}`" if m in CANDIDATES else f"{label(m)} defaults" if m in DEFAULTS else label(m)
    )

    def judged(c: dict[str, Any], tests: bool = True) -> str:
        """:return: the verdict (bold when behind), with the tests that reject unless ``tests=False``"""
        why = [f"U p {pval(c['mann_whitney_p'])}"] * (c["rewards_vs_sb3"] != "level")
        why += [f"Fisher p {pval(c['fisher_p'])}"] * (c["passes_vs_sb3"] != "level")
        text = c["verdict"] + (f" ({', '.join(why)})" if tests and c["verdict"] != "level" else "")
        return f"**{text}**" if c["verdict"] == "behind" else text

    lines = [
        "SB3's `tests/test_identity.py` settings and budgets, exactly (discrete tasks: `gamma=0.4`, "
        "`learning_rate=0.002`, 1200 steps, PPO `n_steps=256, n_epochs=4`; Box: A2C 2000 steps, `learning_rate=1e-3`, "
        "`gamma=0.95`, `net_arch=[64, 64]`, `log_std_init=-0.5`, PPO 1000 steps, `learning_rate=1e-3`, "
        "`n_steps=256, n_epochs=4`), "
        f"{len(seeds)} seeds ({seeds[0]}-{seeds[-1]}; the test itself uses 3, and 0 on Box); each run's reward is "
        f"`evaluate_policy`'s mean over {p['eval_episodes']} episodes, and it passes at ≥ {p['threshold']:g} "
        "(the test's assertion). Cells: mean ± standard deviation of the reward over the seeds, pass count. The "
        "federated algorithms run one agent on SB3's `DummyVecEnv` with their library defaults for everything the "
        "test leaves unset. Verdict against the SB3 algorithm the row stands for: **behind** when a two-sided "
        "Mann-Whitney U test on the rewards (U p) or a two-sided Fisher exact test on the pass counts (Fisher p) rejects "
        f"at {p['alpha']:.0%} in SB3's favour, ahead when one rejects in the federated row's favour and neither "
        "in SB3's, else level.",
        "",
    ]
    rows = [["task", "SB3", "reward", "passes", "test seed", "federated", "reward", "passes", "test seed", "U p"]]
    rows[0] += ["Fisher p", "verdict"]
    for task in tasks:
        for m in (m for m in DEFAULTS if m in cells):
            sb3, c, ref = cells[p["methods"][m]["stands_for"].lower()][task], cells[m][task], p["methods"][m]["stands_for"]
            rows.append([task, ref, cell(sb3), passes(sb3), test_seed(sb3), label(m), cell(c), passes(c), test_seed(c)])
            rows[-1] += [pval(c["mann_whitney_p"]), pval(c["fisher_p"]), judged(c, tests=False)]
    lines += table(rows, "llrrllrrlrrl")
    lines += [
        "",
        "A2C-like FederatedPG settings (added to the test's A2C settings: `learning_rate` stays the test's 0.002, 1e-3 "
        "on Box) against A2C, same seeds and rule.",
        "",
    ]
    lines += [f"| FederatedPG settings | {' | '.join(tasks)} | level with A2C on all four | CPU s / run |"]
    lines += ["|---|" + "---|" * len(tasks) + "---|---:|"]
    if "a2c" in cells:
        a2c = " | ".join(f"{cell(cells['a2c'][t])}, {passes(cells['a2c'][t])}" for t in tasks)
        lines.append(f"| A2C (reference) | {a2c} | | {cpu(cells['a2c'])} |")
    for m in (m for m in ("fedpg", *CANDIDATES) if m in cells):
        row = " | ".join(f"{cell(cells[m][t])}, {passes(cells[m][t])}, {judged(cells[m][t])}" for t in tasks)
        level = "yes" if cells[m]["level_on_all"] else "no"
        lines.append(f"| {'library defaults' if m == 'fedpg' else f'`{label(m)}`'} | {row} | {level} | {cpu(cells[m])} |")
    groups: dict[str, list[str]] = {}
    for m in p["methods"]:
        groups.setdefault(", ".join(f"{t} {'/'.join(map(str, cells[m][t]['env_steps']))}" for t in tasks), []).append(name(m))
    lines += ["", "Env steps per run (the federated algorithms run whole rounds, PPO whole rollouts):", ""]
    lines += [f"- {steps}: {'; '.join(labels)}" for steps, labels in groups.items()]
    federated = [m for m in (*DEFAULTS, *CANDIDATES) if m in cells]
    differ = [
        f"{name(m)} on {t}: {cells[m][t]['verdict']} (overlap rule: {cells[m][t]['overlap_verdict']})"
        for m in federated
        for t in tasks
        if cells[m][t]["overlap_verdict"] != cells[m][t]["verdict"]
    ]
    if differ:
        lines += [
            "",
            "Where the project's mean ± std overlap rule (mean − std against mean + std, in place of the U test; the "
            "Fisher test kept) would judge otherwise:",
            "",
            *(f"- {text}" for text in differ),
        ]
    lines += [
        "",
        f"Written by `python benchmarks/identity_parity.py` from {p['runs']} cached runs "
        f"(`benchmarks/cache/identity_parity/`), {p['cpu_seconds'] / 60:.1f} CPU minutes of training and evaluation "
        f"in all, on {'; '.join(p['machines'])}.",
    ]
    return "\n".join(lines) + "\n"


STUDY = Study(
    "identity_parity",
    __doc__,
    dict(methods=list(METHODS), tasks=list(TEST_SEED), seeds=list(range(10)), eval_episodes=20),
    runs,
    report,
    quick=dict(methods=["fedpg"], tasks=["Discrete"], seeds=[0, 3], eval_episodes=2),
)
main = STUDY.main

if __name__ == "__main__":
    main()
