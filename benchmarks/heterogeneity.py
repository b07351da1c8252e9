"""
The heterogeneity table: do a family's agents really disagree?

Per family and heterogeneity ``h``, 3 seeds: ``local``, ``N`` local-only policies (agent ``i``'s alone on its own
reward, ``budget / N`` env steps), each evaluated on every agent's task; ``oneshot``, the mean of their actors;
``fedavg`` and ``fast``, FedAvg-PG and Fast-FedPG with a large ``H``; ``central``, ``H = 1`` with the correction; the
same at a small ``H`` and with plain SGD; ``random``, uniformly random actions. ``J̄``: the mean over agents of the
deterministic policy's return under each agent's reward. A family *counts as heterogeneous* at ``h`` when the
local-only policies score ≤ 70 % (``(J − J_random) / (J_best − J_random)``, ``J_best`` the best 3-seed mean) and
FedAvg-PG ends below ``J_best`` by more than the two 3-seed standard deviations. Writes
``benchmarks/results/heterogeneity.{json,md}`` and ``heterogeneity_<family>.png``; runs cached in
``benchmarks/cache/heterogeneity/``. Run: ``python benchmarks/heterogeneity.py`` (``--quick``: a smoke run).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from harness import Context, Report, Run, Settings, Study, table
from neural_runs import RandomPolicy, env_kwargs, eval_env, evaluate, mean_std
from sb3_fedpg.envs import get_family

from sb3_fedpg import FederatedPG, make_federated_vec_env

SEEDS, LARGE_H, SMALL_H, THRESHOLD = (0, 1, 2), 50, 5, 0.7
SGD = {"local_optimizer": "sgd", "learning_rate": 3e-2}  # no per-agent preconditioning: the ``*_sgd`` variants
#: federated methods: (local steps H, drift correction, overrides of ``COMMON``)
FEDERATED: dict[str, tuple[int, bool, dict]] = {"central": (1, True, {}), "fast": (LARGE_H, True, {})}
FEDERATED |= {"fedavg": (LARGE_H, False, {}), "fast_small": (SMALL_H, True, {}), "fedavg_small": (SMALL_H, False, {})}
FEDERATED |= {"central_sgd": (1, True, SGD), "fedavg_sgd": (LARGE_H, False, SGD)}
#: every method's hyperparameters (the paper's unnormalised gradient, GAE with a local critic, Adam); also
#: ``noise_correction``'s and ``ppo_comparison``'s
COMMON: dict[str, Any] = {"n_envs_per_agent": 16, "n_steps": 10, "gamma": 0.95, "gae_lambda": 0.95}
COMMON |= {"normalize_advantage": False, "critic_learning_rate": 1e-2, "learning_rate": 3e-3, "local_optimizer": "adam"}
COMMON |= {"policy_kwargs": {"net_arch": [32, 32]}}
QUICK_COMMON = {**COMMON, "n_envs_per_agent": 4}
ENV_IDS = {"pointmass": "sb3_fedpg/HeteroPointMass-v0", "arm": "sb3_fedpg/HeteroArm-v0"}
FAMILIES = {name: {"env_id": env_id, "n_agents": 4, "budget": 400_000} for name, env_id in ENV_IDS.items()}


def hold_point(model: Any, env: Any, steps: int = 49) -> list[float]:
    """:return: where the policy holds the controlled point: its mean position after ``steps`` steps from reset"""
    obs = env.reset()
    for _ in range(steps):
        obs, *_ = env.step(model.predict(obs, deterministic=True)[0])
    return [float(x) for x in obs[:, env.reward_fn.position_slice].mean(0)]


def federated(family: dict, heterogeneity: float, seed: int, common: dict, local_steps: int, correction: bool) -> dict:
    """One federated training, evaluated (a run that blew up, NaN/inf, is recorded with its error)."""
    env, start, out = eval_env(family, heterogeneity, seed), time.perf_counter(), {}
    kwargs = dict(env_kwargs=env_kwargs(heterogeneity), local_steps=local_steps, correction=correction, seed=seed)
    try:
        model = FederatedPG("MlpPolicy", family["env_id"], n_agents=family["n_agents"], **kwargs, **common)
        model.learn(family["budget"])
        out["per_agent"], out["hold"] = evaluate(model, env), hold_point(model, env)
    except (ValueError, FloatingPointError) as error:
        out["per_agent"], out["hold"], out["error"] = None, None, str(error).splitlines()[0]
    return out | {"seconds": time.perf_counter() - start}


def local(family: dict, heterogeneity: float, seed: int, common: dict) -> dict:
    """``N`` local-only policies, each evaluated on every agent's task, and the one-shot average of their actors."""
    import torch

    env, start, n = eval_env(family, heterogeneity, seed), time.perf_counter(), family["n_agents"]
    kwargs, models = {k: v for k, v in common.items() if k != "n_envs_per_agent"}, []
    for agent in range(n):  # agent ``agent``'s reward, on a single-agent env
        reward_fn, base_id, base_kwargs = get_family(family["env_id"]).build(n, **env_kwargs(heterogeneity))
        reward = lambda obs, a, next_obs, r, ids, fn=reward_fn, i=agent: fn(obs, a, next_obs, r, np.full_like(ids, i))
        kw = dict(reward_fns=reward, env_kwargs=base_kwargs, seed=seed * 100 + agent)
        agent_env = make_federated_vec_env(base_id, 1, common["n_envs_per_agent"], **kw)
        model = FederatedPG("MlpPolicy", agent_env, local_steps=1, seed=seed * 100 + agent, **kwargs)
        models.append(model.learn(family["budget"] // n))
    out = {"cross": [evaluate(m, env) for m in models], "holds": [hold_point(m, env) for m in models]}
    average = FederatedPG("MlpPolicy", env, seed=seed, **kwargs)
    average.set_global_parameters(torch.stack([m.get_global_parameters() for m in models]).mean(0))
    out |= {"oneshot": evaluate(average, env), "oneshot_hold": hold_point(average, env)}
    return out | {"seconds": time.perf_counter() - start}


def random_return(family: dict, heterogeneity: float, seed: int) -> float:
    """:return: ``J̄`` of uniformly random actions on the seed's evaluation federation"""
    env = eval_env(family, heterogeneity, seed)
    return float(np.mean(evaluate(RandomPolicy(env.action_space, seed), env)))


def families(s: Settings) -> dict[str, dict]:
    return {name: {"env_id": ENV_IDS[name], "n_agents": s.n_agents, "budget": s.budget} for name in s.families}


def cell_runs(s: Settings, name: str, h: float) -> dict[str, list[Run]]:
    """:return: one (family, h)'s runs by method (``random``: the reference), one per seed"""
    base, label = dict(family=families(s)[name], heterogeneity=h), f"{name}_h{h}"
    configs = {m: dict(common=s.common | extra, local_steps=H, correction=c) for m, (H, c, extra) in FEDERATED.items()}
    fns = {m: federated for m in FEDERATED} | {"local": local, "random": random_return}
    configs |= {"local": dict(common=s.common), "random": {}}
    return {m: [Run(fns[m], base | configs[m] | {"seed": i}, f"{label}_{m}_s{i}") for i in s.seeds] for m in fns}


def runs(s: Settings) -> list[Run]:
    return [run for name in s.families for h in s.heterogeneity for sel in cell_runs(s, name, h).values() for run in sel]


def summarise(family: dict, h: float, runs: dict[str, list]) -> dict[str, Any]:
    """Best J, normalised scores and the criterion for one (family, h) from its runs (one per seed)."""
    methods: dict[str, Any] = {}
    for method in FEDERATED:
        finals = [float(np.mean(r["per_agent"])) if r["per_agent"] is not None else float("-inf") for r in runs[method]]
        holds, diverged = [r["hold"] for r in runs[method] if r["hold"] is not None], sum(not np.isfinite(v) for v in finals)
        mean, std = mean_std(finals) if not diverged else (float("-inf"), float("nan"))
        methods[method] = dict(finals=finals, mean=mean, std=std, diverged=diverged, hold=None)
        methods[method]["hold"] = np.mean(holds, 0).tolist() if holds else None
    local_runs, cross = runs["local"], np.mean([r["cross"] for r in runs["local"]], 0)  # (policy, task), mean over seeds
    for method, key in (("local", "cross"), ("oneshot", "oneshot")):
        finals = [float(np.mean(r[key])) for r in local_runs]
        methods[method] = {"finals": finals, **dict(zip(("mean", "std"), mean_std(finals), strict=True))}
    methods["local"] |= {"per_policy": cross.mean(1).tolist(), "own_task": float(np.mean(np.diag(cross)))}
    methods["oneshot"]["hold"] = np.mean([r["oneshot_hold"] for r in local_runs], 0).tolist()
    best, j_random = max(methods, key=lambda m: methods[m]["mean"]), float(np.mean(runs["random"]))
    score = lambda j: float((j - j_random) / (methods[best]["mean"] - j_random))
    for entry in methods.values():
        entry["score"] = score(entry["mean"]) if np.isfinite(entry["mean"]) else float("-inf")
    methods["local"]["per_policy_score"] = [score(j) for j in methods["local"]["per_policy"]]
    gap, spread = methods[best]["mean"] - methods["fedavg"]["mean"], methods["fedavg"]["std"] + methods[best]["std"]
    local_ok, fedavg_ok = methods["local"]["score"] <= THRESHOLD, bool(gap > spread) if np.isfinite(gap) else True
    spec, n = get_family(family["env_id"]), family["n_agents"]
    per_task = lambda method: np.mean([r["per_agent"] for r in runs[method]], 0)
    reward, oneshot = spec.make_reward(n, **spec.params(heterogeneity=h)), np.mean([r["oneshot"] for r in local_runs], 0)
    cell = dict(n_agents=n, j_random=j_random, j_best=methods[best]["mean"], best_method=best, methods=methods)
    criterion = dict(local_below_70=bool(local_ok), fedavg_below_best=fedavg_ok, heterogeneous=bool(local_ok and fedavg_ok))
    cell |= dict(cross=cross, fedavg_gap=gap, fedavg_spread=spread, criterion=criterion)
    cell |= dict(optimal_hold=reward.optimal_hold_point(), mean_goal=reward.goals.mean(0), oneshot_per_task=oneshot)
    cell["fedavg_per_task"] = [np.nan] * n if methods["fedavg"]["diverged"] else per_task("fedavg")
    return cell | {"best_per_task": per_task(best) if best not in ("local", "oneshot") else oneshot}


def report(ctx: Context) -> Report:
    s, summary, run_seconds, figures = ctx.settings, {}, {}, {}
    for name, family in families(s).items():
        for h in s.heterogeneity:
            by_method = {m: [ctx.results[run] for run in sel] for m, sel in cell_runs(s, name, h).items()}
            for r in (r for m in (*FEDERATED, "local") for r in by_method[m]):
                run_seconds[name] = run_seconds.get(name, 0.0) + r["seconds"]
            summary.setdefault(name, {})[str(h)] = summarise(family, h, by_method)
        figures[f"heterogeneity_{name}.png"] = heatmap(name, summary[name])
    data = dict(families=families(s), common=s.common, seeds=s.seeds, large_h=LARGE_H, threshold=THRESHOLD, summary=summary)
    data |= dict(machine={k: ctx.sweep.machine.get(k) for k in ("platform", "python", "cpus")}, run_seconds=run_seconds)
    text = markdown(summary, data["families"], run_seconds, ctx.sweep.machine)
    return Report(data | {"quick": s.quick}, markdown=text, extra_figures=figures, dpi=110)


def markdown(summary: dict, families: dict, run_seconds: dict[str, float], machine: dict) -> str:
    """:return: the three tables and their notes, generated from the summary"""
    hold = lambda p: "—" if p is None else f"({p[0]:+.2f}, {p[1]:+.2f})"
    fmt = lambda x: f"{x['mean']:.1f} ± {x['std']:.1f} ({x['score']:.0%})" if np.isfinite(x["mean"]) else DIVERGED.format(**x)
    scores, variants, holds = ([header.split(" | ")] for header in HEADERS)
    for name, per_h in summary.items():
        for h, cell in per_h.items():
            m, crit = cell["methods"], cell["criterion"]
            failed = [why for why, k in (("local > 70 %", "local_below_70"), (SPREAD, "fedavg_below_best")) if not crit[k]]
            policies = zip(m["local"]["per_policy"], m["local"]["per_policy_score"], strict=True)
            scores.append([name, h, f"{cell['j_best']:.1f} ({cell['best_method']})", f"{cell['j_random']:.1f}"])
            scores[-1] += [", ".join(f"{j:.0f} ({x:.0%})" for j, x in policies), *(fmt(m[k]) for k in SCORED)]
            scores[-1] += [f"{cell['fedavg_gap']:.1f} ({cell['fedavg_spread']:.1f})"]
            scores[-1] += ["**yes**" if crit["heterogeneous"] else f"no ({'; '.join(failed)})"]
            variants.append([name, h, *(fmt(m[k]) for k in VARIANTS)])
            holds.append([name, h, hold(cell["optimal_hold"]), hold(cell["mean_goal"]), *(hold(m[k]["hold"]) for k in HOLDS)])
    budgets = ", ".join(f"{name} {fam['budget']:,} env steps (N = {fam['n_agents']})" for name, fam in families.items())
    cost = ", ".join(f"{name} {seconds / 60:.1f} min" for name, seconds in run_seconds.items())
    where = f"{machine.get('machine')}, {machine.get('cpus')} cores, shared with other jobs while measured"
    lines = [*table(scores, "lrrrlrrrrrrl"), "", NOTES[0], "", NOTES[1], "", *table(variants, "lrrrrrrrr"), "", NOTES[2], ""]
    lines += [*table(holds, "lrlllllll"), "", NOTES[3].format(budgets=budgets), NOTES[4].format(cost=cost, where=where)]
    return "\n".join(lines) + "\n"


#: the methods of each table's columns
SCORED, HOLDS = ("local", "oneshot", "fedavg", "fast", "central"), ("central", "fast", "fedavg_small", "fedavg", "oneshot")
VARIANTS = ("central", "fedavg_small", "fedavg", "fast_small", "fast", "central_sgd", "fedavg_sgd")
DIVERGED, SPREAD = "diverged ({diverged}/3)", "FedAvg within spread"
HEADERS = (
    "family | h | best J̄ (method) | random J̄ | local-only J̄ per policy (score) | local-only mean (score) | one-shot average "
    "of local models | FedAvg-PG, large H | Fast-FedPG, same H | central PG (H = 1) | best − FedAvg (spread) | heterogeneous?",
    f"family | h | central PG (H = 1) | FedAvg-PG H = {SMALL_H} | FedAvg-PG H = {LARGE_H} | Fast-FedPG H = {SMALL_H} "
    f"| Fast-FedPG H = {LARGE_H} | central PG, SGD | FedAvg-PG H = {LARGE_H}, SGD",
    f"family | h | c* (optimal) | unweighted centroid | central PG | Fast-FedPG H = {LARGE_H} | FedAvg-PG H = {SMALL_H} "
    f"| FedAvg-PG H = {LARGE_H} | one-shot average",
)
NOTES = (
    "J̄ = mean over agents of each agent's return under its own reward (deterministic policy, 32 episodes per agent), "
    "mean ± std over the seeds; (score) = (J̄ − J̄_random) / (J̄_best − J̄_random), J̄_best the highest seed-mean of any "
    f"method. Heterogeneous = local-only mean score ≤ {THRESHOLD:.0%} **and** best − FedAvg-PG > spread (sum of the "
    f"3-seed stds of FedAvg-PG and of the best method). Large H = {LARGE_H}.",
    "Does the bias grow with H, and is it the local optimiser? The same budget at a small and a large number of "
    f"local steps with Adam, and with plain SGD (learning rate {SGD['learning_rate']}) instead (J̄, score):",
    "Where the final policies hold the point mass / the hand (mean position after 49 steps, seeds averaged), against "
    "the optimum of the average cost c* (weighted centroid of the goals) and the unweighted centroid:",
    "Budgets (all agents together, every method; local-only: budget / N per agent): {budgets}.",
    "Compute (sum of the cached runs' training and evaluation time, one torch thread, one run at a time): {cost} ({where}).",
)


def heatmap(name: str, per_h: dict[str, Any]):
    """:return: each local-only policy's return on each task, the one-shot average, FedAvg-PG and the best below"""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(per_h), figsize=(5.2 * len(per_h), 4.4), squeeze=False)
    for ax, (h, cell) in zip(axes[0], per_h.items(), strict=True):
        n = len(cell["cross"])
        rows = np.vstack([cell["cross"], cell["oneshot_per_task"], cell["fedavg_per_task"], cell["best_per_task"]])
        labels = [f"local {i}" for i in range(n)] + ["one-shot avg", f"FedAvg H={LARGE_H}", f"best ({cell['best_method']})"]
        image = ax.imshow(rows, cmap="viridis", aspect="auto")
        for (r, c), value in np.ndenumerate(rows):
            ax.text(c, r, f"{value:.0f}", ha="center", va="center", color="w" if value < rows.mean() else "k", fontsize=8)
        ax.axhline(n - 0.5, color="w", lw=2)
        ax.set_xticks(range(n), [f"task {j}" for j in range(n)])
        ax.set_yticks(range(len(labels)), labels)
        ax.set_title(f"{name}, h = {h}: return on each agent's task")
        fig.colorbar(image, ax=ax, shrink=0.8)
    return fig


STUDY = Study(
    "heterogeneity",
    __doc__,
    dict(families=list(FAMILIES), n_agents=4, budget=400_000, common=COMMON, seeds=list(SEEDS), heterogeneity=[0.5, 1.0]),
    runs,
    report,
    quick=dict(families=["pointmass"], n_agents=2, budget=4_000, common=QUICK_COMMON, seeds=[0, 1], heterogeneity=[1.0]),
)
main = STUDY.main

if __name__ == "__main__":
    main()
