"""
Byzantine robustness: 2 of 10 agents send corrupted messages.

Fast-FedPG on ``sb3_fedpg/HeteroCartPole-v0`` (N = 10, heterogeneity 0.5). Agents 3 and 7
are adversarial: they send ``−10 ×`` their honest anchor gradient and parameter change
(sign flip). For each server aggregator (mean, coordinate-wise median, trimmed mean with
20 % trimmed at each end, geometric median, mean of norm-clipped vectors) we train with and without the attack at the
same budget and seeds, and evaluate the final global policy's return under each *honest*
agent's reward (the stochastic policy, 8 episodes per honest agent).

Writes ``benchmarks/results/byzantine.json``, ``byzantine.png`` and ``byzantine.md``.
Run: ``python benchmarks/byzantine.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from harness import Context, Report, Run, Settings, Study, seed_spread, table

AGGREGATORS = {
    "mean": {},
    "median": {},
    "trimmed_mean": {"trim": 0.2},
    "geometric_median": {},
    "norm_clipped_mean": {},  # each agent's vector scaled to at most the round's median norm
}
MODEL = dict(n_envs_per_agent=4, n_steps=16, local_steps=5, learning_rate=0.1)


def honest_return(
    env_id: str,
    n_agents: int,
    env_kwargs: dict,
    model: dict,
    aggregator: str,
    aggregator_kwargs: dict,
    adversaries: list,
    attacked: bool,
    seed: int,
    timesteps: int,
    eval_envs_per_agent: int,
) -> float:
    """Train one configuration; return the mean return over the honest agents' tasks (attacked or not)."""
    from sb3_fedpg import FederatedPG, make_federated_vec_env
    from sb3_fedpg.common.adversarial import ByzantineAttack
    from sb3_fedpg.common.evaluation import evaluate_agents

    attack = ByzantineAttack(adversaries, kind="sign_flip", scale=10.0, seed=seed) if attacked else None
    kwargs = dict(env_kwargs=env_kwargs, aggregator=aggregator, aggregator_kwargs=aggregator_kwargs, attack=attack)
    trained = FederatedPG("MlpPolicy", env_id, n_agents=n_agents, **model, **kwargs, seed=seed).learn(timesteps)
    eval_env = make_federated_vec_env(env_id, n_agents, eval_envs_per_agent, env_kwargs=env_kwargs, seed=1000 + seed)
    per_agent = evaluate_agents(trained, eval_env, deterministic=False)
    return float(per_agent[[i for i in range(n_agents) if i not in adversaries]].mean())


def run(s: Settings, aggregator: str, attacked: bool, seed: int) -> Run:
    config = dict(env_id=s.env, n_agents=s.n_agents, env_kwargs={"heterogeneity": 0.5}, model=MODEL, aggregator=aggregator)
    config |= dict(aggregator_kwargs=AGGREGATORS[aggregator], adversaries=s.adversaries, attacked=attacked)
    config |= dict(seed=seed, timesteps=s.timesteps, eval_envs_per_agent=8)
    return Run(honest_return, config, f"{aggregator}_{'attacked' if attacked else 'clean'}_s{seed}")


def runs(s: Settings) -> list[Run]:
    return [run(s, agg, attacked, seed) for agg in AGGREGATORS for attacked in (False, True) for seed in range(s.seeds)]


def report(ctx: Context) -> Report:
    import matplotlib.pyplot as plt

    s, kinds = ctx.settings, {False: "clean", True: "attacked"}
    results = {a: {k: [ctx.results[run(s, a, b, i)] for i in range(s.seeds)] for b, k in kinds.items()} for a in AGGREGATORS}
    clean_mean = float(seed_spread(results["mean"]["clean"])[0])
    summary = {}
    for agg, r in results.items():
        (clean, _), (attacked, attacked_std) = seed_spread(r["clean"]), seed_spread(r["attacked"])
        summary[agg] = dict(clean=float(clean), attacked=float(attacked), attacked_std=float(attacked_std))
        summary[agg]["kept_of_clean_mean"] = float(attacked / clean_mean)
    payload = dict(
        env=s.env, n_agents=s.n_agents, adversaries=s.adversaries, attack="sign_flip x10 on anchors and parameter changes"
    )
    payload |= dict(timesteps=s.timesteps, seeds=list(range(s.seeds)), quick=s.quick, results=results, summary=summary)
    payload["seconds"] = ctx.sweep.seconds
    rows = [
        ["aggregator", "clean J", "attacked J (2/10 sign-flip x10)", "attacked / clean, same rule", "attacked / clean mean"]
    ]
    for agg, v in summary.items():
        rows.append(
            [agg, f"{v['clean']:.1f}", f"{v['attacked']:.1f} ± {v['attacked_std']:.1f}", f"{v['attacked'] / v['clean']:.0%}"]
        )
        rows[-1].append(f"{v['kept_of_clean_mean']:.0%}")
    fig, ax = plt.subplots(figsize=(7, 4))
    x = np.arange(len(summary))
    ax.bar(x - 0.2, [v["clean"] for v in summary.values()], 0.4, label="clean")
    attacked = [v["attacked"] for v in summary.values()]
    yerr = [v["attacked_std"] for v in summary.values()]
    ax.bar(x + 0.2, attacked, 0.4, yerr=yerr, label=f"{len(s.adversaries)} of {s.n_agents} agents adversarial")
    ax.set_xticks(x, list(summary))
    ax.set_ylabel("J: mean return over honest agents' tasks")
    ax.set_title(f"Fast-FedPG, {s.env}, N={s.n_agents}, {s.seeds} seeds, {s.timesteps:,} steps")
    ax.legend()
    return Report(payload, fig, "\n".join(table(rows, "lrrrr")) + "\n", indent=2)


STUDY = Study(
    "byzantine",
    __doc__,
    dict(env="sb3_fedpg/HeteroCartPole-v0", n_agents=10, adversaries=[3, 7], seeds=3, timesteps=1_000_000),
    runs,
    report,
    quick=dict(seeds=1, timesteps=2_000),
)
main = STUDY.main

if __name__ == "__main__":
    main()
