"""
Acceptance of the zoo's ``--optimize`` (issue 28): 20-trial Optuna studies per algorithm on one family, then each
tuned entry against the default entry of ``zoo_configs/<algo>.yml``.

For each algorithm (FederatedPG and FederatedPPO by default) on ``sb3_fedpg/HeteroCartPole-v0`` (8 agents × 8 envs,
heterogeneity 1, the configs' entry) and each per-trial budget (``--trial-budgets``: half the entry's 2e5 steps, and
all of it):

1. ``python -m sb3_fedpg.zoo.train --algo <algo> --optimize --n-trials 20 -n <trial budget> ...`` (TPE, median
   pruner, one job), run in this process, its study kept in a JournalStorage file so that a rerun resumes it
   (``--max-total-trials``);
2. the ``best_hyperparameters.yml`` it writes (the entry with the best trial's values, at the entry's full budget) and
   the default entry are each trained with 3 seeds the trials did not use, at the same budget (the entry's
   ``n_timesteps``, whole rounds), and evaluated with the same episodes: ``J̄``, the mean over agents of each agent's
   deterministic return under its own reward (``--final-episodes`` episodes per agent).

Every run is cached in ``benchmarks/cache/zoo_optimize/`` (keyed by its entry), so a rerun resumes. Writes
``benchmarks/results/zoo_optimize.{json,md}``.

    python benchmarks/zoo_optimize.py            # about 15 minutes on 2 shared cores
    python benchmarks/zoo_optimize.py --quick    # smoke run (a few trials, tiny budgets, a temporary cache)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pathlib
import statistics
import time
from typing import Any

import yaml

from sb3_fedpg.common.cli import ArgumentParser

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
CACHE = HERE / "cache" / "zoo_optimize"
ENV_ID = "sb3_fedpg/HeteroCartPole-v0"
ALGO_NAMES = {"fedpg": "FederatedPG", "fedppo": "FederatedPPO", "fedsvrpgm": "FederatedSVRPGM"}


def _key(entry: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(entry, sort_keys=True, default=str).encode()).hexdigest()[:10]


def run_study(algo: str, trial_budget: int, args: argparse.Namespace, cache: pathlib.Path) -> dict[str, Any]:
    """
    Run (or resume) the study through the trainer's command line, in this process.

    :return: the study's record: trial counts, wall time, best trial, and the tuned entry
    """
    study_name = f"{algo}-{ENV_ID}-{args.trials}x{trial_budget}"
    settings = [args.trials, trial_budget, args.n_evaluations, args.eval_episodes, args.n_startup_trials]
    record_file = cache / f"{algo}_study_{_key({'name': study_name, 'settings': settings})}.json"
    if record_file.is_file():  # the study's record (the JournalStorage file itself is not committed)
        return json.loads(record_file.read_text())
    import optuna

    from sb3_fedpg.zoo.optimize import trial_counts
    from sb3_fedpg.zoo.train import train

    storage = cache / f"{algo}_study.log"
    argv = ["--algo", algo, "--env", ENV_ID, "--conf-file", str(ROOT / "zoo_configs" / f"{algo}.yml"), "--optimize"]
    argv += ["--n-trials", str(args.trials), "--max-total-trials", str(args.trials), "-n", str(trial_budget)]
    argv += ["--n-evaluations", str(args.n_evaluations), "--eval-episodes", str(args.eval_episodes)]
    argv += ["--n-startup-trials", str(args.n_startup_trials), "--sampler", "tpe", "--pruner", "median", "--n-jobs", "1"]
    argv += [
        "--storage",
        str(storage),
        "--study-name",
        study_name,
        "--seed",
        "0",
        "-f",
        str(cache / "logs" / str(trial_budget)),
    ]
    argv += ["--num-threads", "1", "--device", "cpu"]
    best_file = train(argv)
    study = optuna.load_study(
        study_name=study_name, storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(storage)))
    )
    trials = [t for t in study.get_trials(deepcopy=False) if t.datetime_start is not None]
    # Wall time from the trials' own clock: the same whether the study ran in one go or was resumed.
    durations = [t.duration.total_seconds() for t in trials if t.duration is not None]
    tuned = yaml.safe_load(pathlib.Path(best_file).read_text())[ENV_ID]
    record = {
        "study_name": study_name,
        "command": "python -m sb3_fedpg.zoo.train " + " ".join(argv),
        "trials": trial_counts(study),
        "trial_seconds": sum(durations),
        "best_trial": study.best_trial.number,
        "best_value": study.best_value,
        "best_params": study.best_params,
        "tuned_entry": tuned,
        # each trial's state and reported J̄ by evaluation: where the pruner stopped it
        "trial_values": [
            {"number": t.number, "state": t.state.name, "value": t.value, "evaluations": list(t.intermediate_values.values())}
            for t in trials
        ],
    }
    if record["trials"]["complete"] + record["trials"]["pruned"] + record["trials"]["failed"] >= args.trials:
        record_file.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return record


def train_and_evaluate(algo: str, entry: dict[str, Any], seed: int, episodes: int, cache: pathlib.Path) -> dict[str, Any]:
    """
    Train one entry with one seed at its ``n_timesteps`` and evaluate ``J̄`` (cached by entry and seed).

    :return: ``{"seed", "J", "per_agent", "env_steps", "train_seconds"}``
    """
    path = cache / f"{algo}_{_key(entry)}_s{seed}_e{episodes}.json"
    if path.is_file():
        return json.loads(path.read_text())
    import torch as th

    from sb3_fedpg import make_federated_vec_env
    from sb3_fedpg.common.evaluation import evaluate_agents
    from sb3_fedpg.zoo import get_algo_class
    from sb3_fedpg.zoo.config import validate_hyperparams

    th.set_num_threads(1)
    algo_class = get_algo_class(algo)
    hyperparams = validate_hyperparams(dict(entry), algo_class, f"{algo} [{ENV_ID}]")

    def federation(per_agent: int, env_seed: int) -> Any:
        return make_federated_vec_env(
            ENV_ID, n_agents=hyperparams.n_agents, n_envs_per_agent=per_agent, env_kwargs=hyperparams.env_kwargs, seed=env_seed
        )

    env = federation(hyperparams.n_envs_per_agent, seed)
    model = algo_class(env=env, seed=seed, device="cpu", **hyperparams.model_kwargs)
    start = time.perf_counter()
    model.learn(hyperparams.n_timesteps)
    seconds = time.perf_counter() - start
    eval_env = federation(episodes, 10**6 + seed)
    per_agent = evaluate_agents(model, eval_env, n_episodes_per_env=1)
    env.close()
    eval_env.close()
    record = {
        "seed": seed,
        "J": float(per_agent.mean()),
        "per_agent": [float(r) for r in per_agent],
        "env_steps": int(model.num_timesteps),
        "train_seconds": seconds,
    }
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"{algo} seed {seed}: J = {record['J']:.1f} after {record['env_steps']:,} steps ({seconds:.0f} s)", flush=True)
    return record


def _summary(runs: list[dict[str, Any]]) -> dict[str, float]:
    values = [r["J"] for r in runs]
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def write_table(result: dict[str, Any], output: pathlib.Path) -> None:
    """
    Write ``zoo_optimize.md`` from the result (as saved in ``zoo_optimize.json``).

    :param result: the benchmark's result
    :param output: the results folder
    """
    config = result["config"]
    lines = [
        f"{config['trials']}-trial studies on `{config['env']}` (per-trial budget `-n` in the table, "
        f"{config['n_evaluations']} evaluations of {config['eval_episodes']} episodes per agent, TPE with "
        f"{config['n_startup_trials']} random startup trials, median pruner, one job, one torch thread), then the tuned "
        f"and the default entry trained at the entry's budget with {len(config['seeds'])} seeds the trials did not use "
        f"({', '.join(map(str, config['seeds']))}) and evaluated on {config['final_episodes']} episodes per agent. "
        "J̄: mean over agents of each agent's return under its own reward (deterministic policy).",
        "",
        "| algorithm | env steps per trial | trials: complete / pruned / failed | study time (s) | best trial's J̄ | "
        "env steps per run (default / tuned) | default entry J̄ (per seed) | tuned entry J̄ (per seed) | tuned better? |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    uneven = False
    for record in result["studies"]:
        algo = record["algo"]
        counts = record["study"]["trials"]
        cells = {}
        for name in ("default", "tuned"):
            summary, runs = record[name]["summary"], record[name]["runs"]
            per_seed = ", ".join(f"{r['J']:.0f}" for r in runs)
            cells[name] = f"{summary['mean']:.1f} ± {summary['std']:.1f} ({per_seed})"
        steps = [sorted({r["env_steps"] for r in record[name]["runs"]}) for name in ("default", "tuned")]
        uneven = uneven or steps[0] != steps[1]
        if not record["tuned_better"]:
            verdict = "**no**"
        elif record["beyond_spread"]:
            verdict = "yes, beyond the seed spread"
        else:
            verdict = "in the mean only: within the seed spread"
        lines.append(
            f"| {ALGO_NAMES.get(algo, algo)} | {record['trial_budget']:,} | "
            f"{counts['complete']} / {counts['pruned']} / {counts['failed']} | "
            f"{record['study']['trial_seconds']:.0f} | {record['study']['best_value']:.1f} | "
            f"{' / '.join(', '.join(f'{s:,}' for s in part) for part in steps)} | {cells['default']} | {cells['tuned']} | "
            f"{verdict} |"
        )
    lines += [
        "",
        'Mean ± standard deviation over the seeds; "beyond the seed spread": the gap exceeds the sum of the two standard '
        "deviations. Study time: the trials' own durations added up.",
    ]
    if uneven:
        lines[-1] += (
            " Both entries train for the entry's `n_timesteps` in whole rounds, so a run stops at the first round past "
            "it: entries with different round sizes differ by less than one round in env steps."
        )
    lines += ["", "The tuned entries (`best_hyperparameters.yml`):", ""]
    for record in result["studies"]:
        lines += [
            f"`{record['algo']}`, {record['trial_budget']:,} env steps per trial:",
            "",
            "```yaml",
            yaml.safe_dump({config["env"]: record["study"]["tuned_entry"]}, sort_keys=False).strip(),
            "```",
            "",
        ]
    lines.append(
        f"Written by `python benchmarks/zoo_optimize.py`: {result['compute_seconds']:.0f} s of trials and final "
        f"trainings in all (evaluations of the final runs not counted), on {result['machine']}."
    )
    (output / "zoo_optimize.md").write_text("\n".join(lines).strip() + "\n")
    print("\n".join(lines))


def main(argv: list[str] | None = None, output: pathlib.Path = RESULTS, cache: pathlib.Path = CACHE) -> dict[str, Any]:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algos", nargs="+", default=["fedpg", "fedppo"], choices=sorted(ALGO_NAMES))
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument(
        "--trial-budgets", type=int, nargs="+", default=[100_000, 200_000], help="env steps per trial (-n), one study each"
    )
    parser.add_argument("--n-evaluations", type=int, default=5)
    parser.add_argument("--eval-episodes", type=int, default=5, help="episodes per agent in a trial's evaluations")
    parser.add_argument("--n-startup-trials", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[100, 101, 102], help="seeds of the final runs")
    parser.add_argument("--final-episodes", type=int, default=10, help="episodes per agent in the final evaluation")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 trials, tiny budgets")
    parser.add_argument("--table-only", action="store_true", help="rewrite the table from the saved JSON")
    args = parser.parse_args(argv)
    if args.table_only:
        result = json.loads((output / "zoo_optimize.json").read_text())
        write_table(result, output)
        return result
    base_budget = None
    if args.quick:
        args.trials, args.trial_budgets, args.n_evaluations, args.eval_episodes = 3, [2048], 2, 1
        args.n_startup_trials, args.seeds, args.final_episodes, base_budget = 1, [100, 101], 1, 4096
        if cache == CACHE:  # never mixed with the real runs' cache
            import tempfile

            cache = pathlib.Path(tempfile.mkdtemp(prefix="zoo_optimize_quick_"))
        if output == RESULTS:  # nor written over the committed results
            output = cache / "results"
    import platform

    from sb3_fedpg.zoo.config import load_config_file, select_entry

    cache.mkdir(parents=True, exist_ok=True)
    studies: list[dict[str, Any]] = []
    run_seconds = 0.0
    for algo in args.algos:
        default = select_entry(load_config_file(ROOT / "zoo_configs" / f"{algo}.yml"), ENV_ID)
        default["n_timesteps"] = int(base_budget or default["n_timesteps"])
        default_runs = [train_and_evaluate(algo, default, seed, args.final_episodes, cache) for seed in args.seeds]
        run_seconds += sum(r["train_seconds"] for r in default_runs)
        for trial_budget in args.trial_budgets:
            study = run_study(algo, trial_budget, args, cache)
            tuned = dict(study["tuned_entry"])
            tuned["n_timesteps"] = default["n_timesteps"]
            tuned_runs = [train_and_evaluate(algo, tuned, seed, args.final_episodes, cache) for seed in args.seeds]
            run_seconds += study["trial_seconds"] + sum(r["train_seconds"] for r in tuned_runs)
            summary = {"default": _summary(default_runs), "tuned": _summary(tuned_runs)}
            gap = summary["tuned"]["mean"] - summary["default"]["mean"]
            studies.append(
                {
                    "algo": algo,
                    "trial_budget": trial_budget,
                    "study": study,
                    "default_entry": default,
                    "default": {"runs": default_runs, "summary": summary["default"]},
                    "tuned": {"runs": tuned_runs, "summary": summary["tuned"]},
                    "tuned_better": gap > 0,
                    "beyond_spread": gap > summary["tuned"]["std"] + summary["default"]["std"],
                }
            )
    result = {
        "config": {
            "env": ENV_ID,
            "trials": args.trials,
            "trial_budgets": args.trial_budgets,
            "n_evaluations": args.n_evaluations,
            "eval_episodes": args.eval_episodes,
            "n_startup_trials": args.n_startup_trials,
            "seeds": args.seeds,
            "final_episodes": args.final_episodes,
            "quick": args.quick,
        },
        "studies": studies,
        # from the studies' trial durations and the cached runs' training times: the same after a resumed run
        "compute_seconds": run_seconds,
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} CPUs (shared)",
    }
    output.mkdir(parents=True, exist_ok=True)
    (output / "zoo_optimize.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    write_table(result, output)
    return result


if __name__ == "__main__":
    main()
