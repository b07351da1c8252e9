"""
Acceptance of the zoo's ``--optimize`` (issue 28): 20-trial Optuna studies per algorithm on one family, then each
tuned entry against the default entry of ``zoo_configs/<algo>.yml``.

For FederatedPG and FederatedPPO on ``sb3_fedpg/HeteroCartPole-v0`` (the configs' entry: 8 agents × 8 envs,
heterogeneity 1) and each per-trial budget (half the entry's 2e5 steps, and all of it), a study (``python -m
sb3_fedpg.zoo.train --optimize``: TPE, median pruner, one job, run in this process); then the entry it writes
(``best_hyperparameters.yml``) and the default entry, each trained with 3 seeds the trials did not use at the entry's
``n_timesteps`` and evaluated on the same episodes: ``J̄``, the mean over agents of each agent's deterministic return
under its own reward. Studies and trainings are cached in ``benchmarks/cache/zoo_optimize/`` (a study stopped midway
starts again). Writes ``benchmarks/results/zoo_optimize.{json,md}``. Run: ``python benchmarks/zoo_optimize.py`` (about
15 minutes on 2 shared cores; ``--quick`` for a smoke run of a few trials at tiny budgets).
"""

from __future__ import annotations

import functools
import pathlib
import statistics
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import yaml
from harness import Context, Report, Results, Run, Settings, Study, table

from sb3_fedpg import make_federated_vec_env
from sb3_fedpg.common.evaluation import evaluate_agents
from sb3_fedpg.zoo import get_algo_class
from sb3_fedpg.zoo.config import load_config_file, select_entry, validate_hyperparams

ROOT = pathlib.Path(__file__).resolve().parents[1]
ENV_ID = "sb3_fedpg/HeteroCartPole-v0"
ALGO_NAMES = {"fedpg": "FederatedPG", "fedppo": "FederatedPPO", "fedsvrpgm": "FederatedSVRPGM"}


def run_study(algo, trial_budget, trials, n_evaluations, eval_episodes, n_startup_trials) -> dict:
    """:return: the study's record (trial counts and time, the best trial, the tuned entry, each trial's values)"""
    import optuna

    from sb3_fedpg.zoo.optimize import trial_counts
    from sb3_fedpg.zoo.train import train

    name = f"{algo}-{ENV_ID}-{trials}x{trial_budget}"
    with tempfile.TemporaryDirectory(prefix="zoo_optimize_") as work:
        storage = f"{work}/{algo}_study.log"
        argv = ["--algo", algo, "--env", ENV_ID, "--conf-file", str(ROOT / "zoo_configs" / f"{algo}.yml"), "--optimize"]
        argv += f"--n-trials {trials} --max-total-trials {trials} -n {trial_budget} --n-evaluations {n_evaluations}".split()
        argv += f"--eval-episodes {eval_episodes} --n-startup-trials {n_startup_trials} --sampler tpe --pruner median".split()
        argv += ["--n-jobs", "1", "--storage", storage, "--study-name", name, "--seed", "0"]
        argv += ["-f", f"{work}/logs/{trial_budget}", "--num-threads", "1", "--device", "cpu"]
        tuned = yaml.safe_load(pathlib.Path(train(argv)).read_text())[ENV_ID]
        backend = optuna.storages.journal.JournalFileBackend(storage)
        study = optuna.load_study(study_name=name, storage=optuna.storages.JournalStorage(backend))
        done = [t for t in study.get_trials(deepcopy=False) if t.datetime_start is not None]
        counts, best = trial_counts(study), study.best_trial  # read before the storage goes
    if counts["complete"] + counts["pruned"] + counts["failed"] < trials:  # stopped midway (Ctrl-C): not cached
        raise KeyboardInterrupt(f"{name}: {counts}")
    record = {"study_name": name, "command": "python -m sb3_fedpg.zoo.train " + " ".join(argv), "trials": counts}
    record["trial_seconds"] = sum(t.duration.total_seconds() for t in done if t.duration is not None)  # their own clock
    record |= {"best_trial": best.number, "best_value": best.value, "best_params": best.params}
    # each trial's state and reported J̄ by evaluation: where the pruner stopped it
    trial = lambda t: dict(number=t.number, state=t.state.name, value=t.value, evaluations=[*t.intermediate_values.values()])
    return record | {"tuned_entry": tuned, "trial_values": [trial(t) for t in done]}


def train_and_evaluate(algo: str, entry: dict, seed: int, episodes: int) -> dict:
    """:return: ``J̄`` (``J``, ``per_agent``) of one entry trained with one seed at its ``n_timesteps``"""
    algo_class = get_algo_class(algo)
    hyperparams = validate_hyperparams(dict(entry), algo_class, f"{algo} [{ENV_ID}]")
    federation = functools.partial(make_federated_vec_env, ENV_ID, hyperparams.n_agents, env_kwargs=hyperparams.env_kwargs)
    env = federation(hyperparams.n_envs_per_agent, seed=seed)
    model = algo_class(env=env, seed=seed, device="cpu", **hyperparams.model_kwargs)
    start = time.perf_counter()
    model.learn(hyperparams.n_timesteps)
    seconds = time.perf_counter() - start
    eval_env = federation(episodes, seed=10**6 + seed)
    per_agent = evaluate_agents(model, eval_env, n_episodes_per_env=1)
    env.close()
    eval_env.close()
    record = {"seed": seed, "J": float(per_agent.mean()), "per_agent": [float(r) for r in per_agent]}
    return record | {"env_steps": int(model.num_timesteps), "train_seconds": seconds}


def default_entry(s: Settings, algo: str) -> dict:
    """:return: the configs' entry, at the study's training budget (``n_timesteps``: ``None`` keeps the entry's)"""
    entry = select_entry(load_config_file(ROOT / "zoo_configs" / f"{algo}.yml"), ENV_ID)
    return entry | {"n_timesteps": int(s.n_timesteps or entry["n_timesteps"])}


def final(s: Settings, algo: str, entry: dict, kind: str) -> list[Run]:
    """:return: an entry's final trainings, one per seed"""
    config = dict(algo=algo, entry=entry, episodes=s.final_episodes)
    return [Run(train_and_evaluate, {**config, "seed": seed}, f"{algo}_{kind}_s{seed}") for seed in s.seeds]


def study(s: Settings, algo: str, budget: int) -> Run:
    keys = ("trials", "n_evaluations", "eval_episodes", "n_startup_trials")
    return Run(run_study, {"algo": algo, "trial_budget": budget, **{k: s[k] for k in keys}}, f"{algo}_study_{budget}")


def runs(s: Settings) -> list[Run]:
    defaults = [run for algo in s.algos for run in final(s, algo, default_entry(s, algo), "default")]
    return defaults + [study(s, algo, budget) for algo in s.algos for budget in s.trial_budgets]


def tuned(s: Settings, results: Results, algo: str, budget: int) -> list[Run]:
    """:return: the final trainings of the entry that a study found (at the default entry's budget)"""
    entry = results[study(s, algo, budget)]["tuned_entry"] | {"n_timesteps": default_entry(s, algo)["n_timesteps"]}
    return final(s, algo, entry, f"tuned{budget}")


def summary(runs: list[dict]) -> dict[str, float]:
    values = [r["J"] for r in runs]
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def report(ctx: Context) -> Report:
    s, results, studies, seconds = ctx.settings, ctx.results, [], 0.0
    for algo in s.algos:
        default = [results[run] for run in final(s, algo, default_entry(s, algo), "default")]
        seconds += sum(r["train_seconds"] for r in default)
        for budget in s.trial_budgets:
            record, found = results[study(s, algo, budget)], [results[run] for run in tuned(s, results, algo, budget)]
            seconds += record["trial_seconds"] + sum(r["train_seconds"] for r in found)
            d, x = summary(default), summary(found)
            gap = x["mean"] - d["mean"]
            entry = {"algo": algo, "trial_budget": budget, "study": record, "default_entry": default_entry(s, algo)}
            entry |= {"default": {"runs": default, "summary": d}, "tuned": {"runs": found, "summary": x}}
            studies.append(entry | {"tuned_better": gap > 0, "beyond_spread": gap > x["std"] + d["std"]})
    config = {"env": ENV_ID, **{k: s[k] for k in ("trials", "trial_budgets", "n_evaluations", "eval_episodes")}}
    config |= {k: s[k] for k in ("n_startup_trials", "seeds", "final_episodes", "quick")}
    machine = f"{ctx.sweep.machine.get('machine')}, {ctx.sweep.machine.get('cpus')} CPUs (shared)"
    result = {"config": config, "studies": studies, "compute_seconds": seconds, "machine": machine}
    return Report(result, markdown=markdown(result), indent=2, final_newline=True)


def markdown(result: dict) -> str:
    """:return: ``zoo_optimize.md``, from the result (as saved in ``zoo_optimize.json``)"""
    c = result["config"]
    lines = [
        f"{c['trials']}-trial studies on `{c['env']}` (per-trial budget `-n` in the table, {c['n_evaluations']} "
        f"evaluations of {c['eval_episodes']} episodes per agent, TPE with {c['n_startup_trials']} random startup trials, "
        "median pruner, one job, one torch thread), then the tuned and the default entry trained at the entry's budget "
        f"with {len(c['seeds'])} seeds the trials did not use ({', '.join(map(str, c['seeds']))}) and evaluated on "
        f"{c['final_episodes']} episodes per agent. J̄: mean over agents of each agent's return under its own reward "
        "(deterministic policy).",
        "",
    ]
    rows, uneven = [HEADER], False
    for r in result["studies"]:
        per_seed = {k: ", ".join(f"{x['J']:.0f}" for x in r[k]["runs"]) for k in ("default", "tuned")}
        cells = ["{mean:.1f} ± {std:.1f}".format(**r[k]["summary"]) + f" ({per_seed[k]})" for k in ("default", "tuned")]
        steps, counts = [sorted({x["env_steps"] for x in r[k]["runs"]}) for k in ("default", "tuned")], r["study"]["trials"]
        uneven = uneven or steps[0] != steps[1]
        verdict = "yes, beyond the seed spread" if r["beyond_spread"] else "in the mean only: within the seed spread"
        rows.append([ALGO_NAMES.get(r["algo"], r["algo"]), f"{r['trial_budget']:,}"])
        rows[-1] += [f"{counts['complete']} / {counts['pruned']} / {counts['failed']}", f"{r['study']['trial_seconds']:.0f}"]
        rows[-1] += [f"{r['study']['best_value']:.1f}", " / ".join(", ".join(f"{n:,}" for n in part) for part in steps)]
        rows[-1] += [*cells, verdict if r["tuned_better"] else "**no**"]
    lines += table(rows, "lrrrrrrrl")
    lines += ["", NOTE + (UNEVEN if uneven else ""), "", "The tuned entries (`best_hyperparameters.yml`):", ""]
    for r in result["studies"]:
        entry = yaml.safe_dump({c["env"]: r["study"]["tuned_entry"]}, sort_keys=False).strip()
        lines += [f"`{r['algo']}`, {r['trial_budget']:,} env steps per trial:", "", "```yaml", entry, "```", ""]
    lines.append(
        f"Written by `python benchmarks/zoo_optimize.py`: {result['compute_seconds']:.0f} s of trials and final "
        f"trainings in all (evaluations of the final runs not counted), on {result['machine']}."
    )
    return "\n".join(lines).strip() + "\n"


HEADER = ["algorithm", "env steps per trial", "trials: complete / pruned / failed", "study time (s)", "best trial's J̄"]
HEADER += ["env steps per run (default / tuned)", "default entry J̄ (per seed)", "tuned entry J̄ (per seed)", "tuned better?"]
NOTE = (
    'Mean ± standard deviation over the seeds; "beyond the seed spread": the gap exceeds the sum of the two standard '
    "deviations. Study time: the trials' own durations added up."
)
UNEVEN = (
    " Both entries train for the entry's `n_timesteps` in whole rounds, so a run stops at the first round past it: entries "
    "with different round sizes differ by less than one round in env steps."
)
STUDY = Study(
    "zoo_optimize",
    __doc__,
    dict(algos=["fedpg", "fedppo"], trials=20, trial_budgets=[100_000, 200_000], n_evaluations=5, eval_episodes=5)
    | dict(n_startup_trials=5, seeds=[100, 101, 102], final_episodes=10, n_timesteps=None),
    runs,
    report,
    quick=dict(trials=3, trial_budgets=[2048], n_evaluations=2, eval_episodes=1, n_startup_trials=1, seeds=[100, 101])
    | dict(final_episodes=1, n_timesteps=4096),
    then=lambda s, results: [run for a in s.algos for b in s.trial_budgets for run in tuned(s, results, a, b)],
)
main = STUDY.main

if __name__ == "__main__":
    main()
