"""
The heterogeneity table: do a family's agents really disagree?

For each family and heterogeneity ``h``, with 3 seeds:

- ``local``: ``N`` local-only policies, agent ``i``'s trained alone on agent ``i``'s reward
  (a single-agent ``FederatedPG``, ``budget / N`` env steps each: the same per-agent budget as
  the federated runs). Each is evaluated on **every** agent's task: the cross-task matrix
  (row = policy, column = task) and its row means, the policy's ``J̄`` on the average objective.
- ``one-shot average``: the mean of the ``N`` local-only models' actor parameters, evaluated.
- ``fedavg``: FedAvg-PG (``correction=False``) with a large ``H``.
- ``fast``: Fast-FedPG (drift correction on) with the same ``H``.
- ``central``: ``H = 1`` with the correction, i.e. plain policy gradient on the pooled average
  gradient every step (the privacy-violating centralised reference).
- ``random``: uniformly random actions (the reference of the normalised score).

Every method uses the same hyperparameters (``COMMON``): the paper's **unnormalised** gradient
(``normalize_advantage=False``: per-agent advantage normalisation would rescale each agent's
reward and change the objective), GAE with a local critic, Adam as the local optimiser.
``J̄ = (1/N) Σ_i J_i`` of the deterministic (mean-action) policy, 32 episodes per agent.

Criterion (from the issue; a family *counts as heterogeneous* at ``h`` when both hold):

1. the local-only policies score ≤ 70 % of the best on the average objective, in the normalised
   score ``s(J) = (J − J_random) / (J_best − J_random)`` (returns are negative costs here, so a
   plain ratio of returns means nothing); ``J_best`` is the highest 3-seed mean ``J̄`` of any method;
2. FedAvg-PG with a large ``H`` ends below ``J_best`` by more than the spread, the sum of the
   3-seed standard deviations of FedAvg-PG and of the best method.

Each (family, h, method, seed) run is cached as JSON under ``runs/heterogeneity/`` (keyed by a hash
of its configuration), so an interrupted invocation resumes and ``--families`` fills in stages.
Writes ``benchmarks/results/heterogeneity.json``, ``heterogeneity.md`` and ``heterogeneity_<family>.png``.
Run: ``python benchmarks/heterogeneity.py`` (``--quick`` for a smoke run into ``runs/heterogeneity_quick/``).
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import platform
import time
from typing import Any

import numpy as np

from sb3_fedpg.common.cli import ArgumentParser

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
CACHE = ROOT / "runs" / "heterogeneity"
VERSION = 1

SEEDS = (0, 1, 2)
HETEROGENEITY = (0.5, 1.0)
LARGE_H = 50
SMALL_H = 5
THRESHOLD = 0.7
#: plain SGD instead of Adam (no per-agent preconditioning), for the ``*_sgd`` variants
SGD = {"local_optimizer": "sgd", "learning_rate": 3e-2}
#: federated methods: (local steps H, drift correction, overrides of ``COMMON``)
FEDERATED: dict[str, tuple[int, bool, dict[str, Any]]] = {
    "central": (1, True, {}),
    "fast": (LARGE_H, True, {}),
    "fedavg": (LARGE_H, False, {}),
    "fast_small": (SMALL_H, True, {}),
    "fedavg_small": (SMALL_H, False, {}),
    "central_sgd": (1, True, SGD),
    "fedavg_sgd": (LARGE_H, False, SGD),
}
METHODS = (*FEDERATED, "local")
LABELS = {
    "central": "central PG (H = 1)",
    "fast": f"Fast-FedPG (H = {LARGE_H})",
    "fedavg": f"FedAvg-PG (H = {LARGE_H})",
    "fast_small": f"Fast-FedPG (H = {SMALL_H})",
    "fedavg_small": f"FedAvg-PG (H = {SMALL_H})",
    "local": "local-only",
    "oneshot": "one-shot average of local models",
}

#: Hyperparameters shared by every method and family.
COMMON: dict[str, Any] = {
    "n_envs_per_agent": 16,
    "n_steps": 10,
    "gamma": 0.95,
    "gae_lambda": 0.95,
    "normalize_advantage": False,
    "critic_learning_rate": 1e-2,
    "learning_rate": 3e-3,
    "local_optimizer": "adam",
    "policy_kwargs": {"net_arch": [32, 32]},
}

FAMILIES: dict[str, dict[str, Any]] = {
    "pointmass": {"env_id": "sb3_fedpg/HeteroPointMass-v0", "n_agents": 4, "budget": 400_000},
    "arm": {"env_id": "sb3_fedpg/HeteroArm-v0", "n_agents": 4, "budget": 400_000},
}
QUICK_FAMILIES: dict[str, dict[str, Any]] = {
    "pointmass": {"env_id": "sb3_fedpg/HeteroPointMass-v0", "n_agents": 2, "budget": 4_000},
}
QUICK_COMMON = {**COMMON, "n_envs_per_agent": 4}
EVAL_ENVS_PER_AGENT, EVAL_EPISODES = 16, 2


class RandomPolicy:
    """Uniformly random actions, with an SB3 ``predict`` (the reference of the normalised score)."""

    def __init__(self, action_space: Any, seed: int) -> None:
        self.n = getattr(action_space, "n", None)  # Discrete: uniform over the n actions
        if self.n is None:
            self.low, self.high = action_space.low, action_space.high
        self.rng = np.random.default_rng(seed)

    def predict(self, obs: np.ndarray, deterministic: bool = True) -> tuple[np.ndarray, None]:
        if self.n is not None:
            return self.rng.integers(int(self.n), size=len(obs)), None
        return self.rng.uniform(self.low, self.high, size=(len(obs), *self.low.shape)).astype(np.float32), None


def _env_kwargs(heterogeneity: float) -> dict[str, Any]:
    return {"heterogeneity": heterogeneity}


def eval_env(family: dict[str, Any], heterogeneity: float, seed: int, n_envs: int = EVAL_ENVS_PER_AGENT) -> Any:
    from sb3_fedpg import make_federated_vec_env

    return make_federated_vec_env(
        family["env_id"], family["n_agents"], n_envs, env_kwargs=_env_kwargs(heterogeneity), seed=10_000 + seed
    )


def evaluate(model: Any, env: Any) -> list[float]:
    """:return: per-agent return of the deterministic policy (each agent's own reward)"""
    from sb3_fedpg.common.evaluation import evaluate_agents

    return [float(x) for x in evaluate_agents(model, env, EVAL_EPISODES, deterministic=True)]


def hold_point(model: Any, env: Any, steps: int = 49) -> list[float]:
    """:return: where the policy holds the controlled point: its mean position after ``steps`` steps from reset"""
    obs = env.reset()
    for _ in range(steps):
        obs, *_ = env.step(model.predict(obs, deterministic=True)[0])
    return [float(x) for x in obs[:, env.reward_fn.position_slice].mean(0)]


class _OneAgentReward:
    """Agent ``agent``'s reward of a family, for a single-agent env (local-only training)."""

    def __init__(self, reward_fn: Any, agent: int) -> None:
        self.reward_fn, self.agent = reward_fn, agent

    def __call__(self, obs, action, next_obs, reward, agent_ids):  # type: ignore[no-untyped-def]
        return self.reward_fn(obs, action, next_obs, reward, np.full_like(agent_ids, self.agent))


def train(
    family: dict[str, Any], heterogeneity: float, seed: int, common: dict[str, Any], local_steps: int, correction: bool
) -> Any:
    from sb3_fedpg import FederatedPG

    model = FederatedPG(
        "MlpPolicy",
        family["env_id"],
        n_agents=family["n_agents"],
        env_kwargs=_env_kwargs(heterogeneity),
        local_steps=local_steps,
        correction=correction,
        seed=seed,
        **common,
    )
    return model.learn(family["budget"])


def train_local(family: dict[str, Any], heterogeneity: float, seed: int, common: dict[str, Any], agent: int) -> Any:
    from sb3_fedpg.envs import get_family

    from sb3_fedpg import FederatedPG, make_federated_vec_env

    spec = get_family(family["env_id"])
    reward_fn, base_id, base_kwargs = spec.build(family["n_agents"], **_env_kwargs(heterogeneity))
    env = make_federated_vec_env(
        base_id,
        n_agents=1,
        n_envs_per_agent=common["n_envs_per_agent"],
        reward_fns=_OneAgentReward(reward_fn, agent),
        env_kwargs=base_kwargs,
        seed=seed * 100 + agent,
    )
    kwargs = {k: v for k, v in common.items() if k != "n_envs_per_agent"}
    model = FederatedPG("MlpPolicy", env, local_steps=1, seed=seed * 100 + agent, **kwargs)
    return model.learn(family["budget"] // family["n_agents"])


def run_one(family: dict[str, Any], heterogeneity: float, method: str, seed: int, common: dict[str, Any]) -> dict[str, Any]:
    """Train and evaluate one (family, h, method, seed); returns what is cached."""
    import torch

    from sb3_fedpg import FederatedPG

    torch.set_num_threads(1)
    env = eval_env(family, heterogeneity, seed)
    start = time.perf_counter()
    out: dict[str, Any] = {}
    if method == "local":
        models = [train_local(family, heterogeneity, seed, common, agent) for agent in range(family["n_agents"])]
        out["cross"] = [evaluate(model, env) for model in models]
        out["holds"] = [hold_point(model, env) for model in models]
        # One-shot average of the local models' actor parameters, in a federated model's global policy.
        average = FederatedPG("MlpPolicy", env, seed=seed, **{k: v for k, v in common.items() if k != "n_envs_per_agent"})
        average.set_global_parameters(torch.stack([m.get_global_parameters() for m in models]).mean(0))
        out["oneshot"] = evaluate(average, env)
        out["oneshot_hold"] = hold_point(average, env)
    else:
        local_steps, correction, overrides = FEDERATED[method]
        try:
            model = train(family, heterogeneity, seed, {**common, **overrides}, local_steps, correction)
            out["per_agent"] = evaluate(model, env)
            out["hold"] = hold_point(model, env)
        except (ValueError, FloatingPointError) as error:  # a run that blew up (NaN/inf): recorded, not hidden
            out["per_agent"], out["hold"], out["error"] = None, None, str(error).splitlines()[0]
    out["seconds"] = time.perf_counter() - start
    return out


def random_reference(family: dict[str, Any], heterogeneity: float) -> list[float]:
    """:return: per-seed ``J̄`` of uniformly random actions on the seeds' evaluation envs"""
    values = []
    for seed in SEEDS:
        env = eval_env(family, heterogeneity, seed)
        values.append(float(np.mean(evaluate(RandomPolicy(env.action_space, seed), env))))
    return values


def run_key(name: str, family: dict[str, Any], heterogeneity: float, method: str, seed: int, common: dict[str, Any]) -> str:
    config = {"family": family, "h": heterogeneity, "method": method, "seed": seed, "common": common}
    config.update({"large_h": LARGE_H, "eval": [EVAL_ENVS_PER_AGENT, EVAL_EPISODES], "version": VERSION})
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]
    return f"{name}_h{heterogeneity}_{method}_s{seed}_{digest}"


def _mean_std(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def summarise(family: dict[str, Any], runs: dict[str, list[dict[str, Any]]], j_random: float) -> dict[str, Any]:
    """Best J, normalised scores and the criterion for one (family, h) from its runs (one per seed)."""
    n = family["n_agents"]
    methods: dict[str, Any] = {}
    for method in FEDERATED:
        finals = [float(np.mean(r["per_agent"])) if r["per_agent"] is not None else float("-inf") for r in runs[method]]
        diverged = sum(not np.isfinite(v) for v in finals)
        mean, std = _mean_std(finals) if not diverged else (float("-inf"), float("nan"))
        holds = [r["hold"] for r in runs[method] if r["hold"] is not None]
        methods[method] = {
            "finals": finals,
            "mean": mean,
            "std": std,
            "diverged": diverged,
            "hold": np.mean(holds, 0).tolist() if holds else None,
        }
    cross = np.mean([r["cross"] for r in runs["local"]], axis=0)  # (policy, task), mean over seeds
    local_per_seed = [float(np.mean(r["cross"])) for r in runs["local"]]
    oneshot = [float(np.mean(r["oneshot"])) for r in runs["local"]]
    methods["local"] = {"finals": local_per_seed, **dict(zip(("mean", "std"), _mean_std(local_per_seed), strict=True))}
    methods["local"]["per_policy"] = cross.mean(1).tolist()
    methods["local"]["own_task"] = float(np.mean(np.diag(cross)))
    methods["oneshot"] = {"finals": oneshot, **dict(zip(("mean", "std"), _mean_std(oneshot), strict=True))}
    methods["oneshot"]["hold"] = np.mean([r["oneshot_hold"] for r in runs["local"]], 0).tolist()
    best_method = max(methods, key=lambda m: methods[m]["mean"])
    j_best = methods[best_method]["mean"]

    def score(j: float) -> float:
        return float((j - j_random) / (j_best - j_random))

    for entry in methods.values():
        entry["score"] = score(entry["mean"]) if np.isfinite(entry["mean"]) else float("-inf")
    methods["local"]["per_policy_score"] = [score(j) for j in methods["local"]["per_policy"]]
    fedavg = methods["fedavg"]
    spread = fedavg["std"] + methods[best_method]["std"]
    gap = j_best - fedavg["mean"]
    local_ok = methods["local"]["score"] <= THRESHOLD
    fedavg_ok = bool(gap > spread) if np.isfinite(gap) else True
    reward = _reward_fn(family)
    return {
        "n_agents": n,
        "j_random": j_random,
        "j_best": j_best,
        "best_method": best_method,
        "methods": methods,
        "cross": cross.tolist(),
        "fedavg_gap": gap,
        "fedavg_spread": spread,
        "criterion": {
            "local_below_70": bool(local_ok),
            "fedavg_below_best": fedavg_ok,
            "heterogeneous": bool(local_ok and fedavg_ok),
        },
        "optimal_hold": reward.optimal_hold_point().tolist(),
        "mean_goal": reward.goals.mean(0).tolist(),
    }


def _reward_fn(family: dict[str, Any]) -> Any:
    from sb3_fedpg.envs import get_family

    spec = get_family(family["env_id"])
    return spec.make_reward(family["n_agents"], **spec.params(heterogeneity=family["_h"]))


def _fmt(entry: dict[str, Any], pm: bool = True) -> str:
    if not np.isfinite(entry["mean"]):
        return f"diverged ({entry.get('diverged', '?')}/3)"
    text = f"{entry['mean']:.1f}"
    if pm:
        text += f" ± {entry['std']:.1f}"
    return f"{text} ({entry['score']:.0%})"


def markdown(summary: dict[str, Any], families: dict[str, Any], run_seconds: dict[str, float] | None = None) -> str:
    lines = [
        "| family | h | best J̄ (method) | random J̄ | local-only J̄ per policy (score) | local-only mean (score) "
        "| one-shot average of local models | FedAvg-PG, large H | Fast-FedPG, same H | central PG (H = 1) "
        "| best − FedAvg (spread) | heterogeneous? |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, per_h in summary.items():
        for h, cell in per_h.items():
            m = cell["methods"]
            per_policy = ", ".join(
                f"{j:.0f} ({s:.0%})" for j, s in zip(m["local"]["per_policy"], m["local"]["per_policy_score"], strict=True)
            )
            crit = cell["criterion"]
            verdict = "**yes**" if crit["heterogeneous"] else "no"
            if not crit["heterogeneous"]:
                why = [
                    w
                    for w, ok in (
                        ("local > 70 %", crit["local_below_70"]),
                        ("FedAvg within spread", crit["fedavg_below_best"]),
                    )
                    if not ok
                ]
                verdict += f" ({'; '.join(why)})"
            lines.append(
                f"| {name} | {h} | {cell['j_best']:.1f} ({cell['best_method']}) | {cell['j_random']:.1f} | {per_policy} "
                f"| {_fmt(m['local'])} | {_fmt(m['oneshot'])} | {_fmt(m['fedavg'])} | {_fmt(m['fast'])} "
                f"| {_fmt(m['central'])} "
                f"| {cell['fedavg_gap']:.1f} ({cell['fedavg_spread']:.1f}) | {verdict} |"
            )
    lines.append("")
    lines.append(
        "J̄ = mean over agents of each agent's return under its own reward (deterministic policy, 32 episodes per agent), "
        "mean ± std over the seeds; (score) = (J̄ − J̄_random) / (J̄_best − J̄_random), J̄_best the highest seed-mean of any "
        f"method. Heterogeneous = local-only mean score ≤ {THRESHOLD:.0%} **and** best − FedAvg-PG > spread (sum of the "
        f"3-seed stds of FedAvg-PG and of the best method). Large H = {LARGE_H}."
    )
    lines += [
        "",
        "Does the bias grow with H, and is it the local optimiser? The same budget at a small and a large number of "
        f"local steps with Adam, and with plain SGD (learning rate {SGD['learning_rate']}) instead (J̄, score):",
        "",
        f"| family | h | central PG (H = 1) | FedAvg-PG H = {SMALL_H} | FedAvg-PG H = {LARGE_H} "
        f"| Fast-FedPG H = {SMALL_H} | Fast-FedPG H = {LARGE_H} | central PG, SGD | FedAvg-PG H = {LARGE_H}, SGD |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, per_h in summary.items():
        for h, cell in per_h.items():
            m = cell["methods"]
            row = " | ".join(
                _fmt(m[k]) for k in ("central", "fedavg_small", "fedavg", "fast_small", "fast", "central_sgd", "fedavg_sgd")
            )
            lines.append(f"| {name} | {h} | {row} |")
    holds = []
    for name, per_h in summary.items():
        for h, cell in per_h.items():
            m = cell["methods"]
            fmt = lambda p: "—" if p is None else f"({p[0]:+.2f}, {p[1]:+.2f})"
            holds.append(
                f"| {name} | {h} | {fmt(cell['optimal_hold'])} | {fmt(cell['mean_goal'])} | {fmt(m['central']['hold'])} "
                f"| {fmt(m['fast']['hold'])} | {fmt(m['fedavg_small']['hold'])} | {fmt(m['fedavg']['hold'])} "
                f"| {fmt(m['oneshot']['hold'])} |"
            )
    lines += [
        "",
        "Where the final policies hold the point mass / the hand (mean position after 49 steps, seeds averaged), against "
        "the optimum of the average cost c* (weighted centroid of the goals) and the unweighted centroid:",
        "",
        f"| family | h | c* (optimal) | unweighted centroid | central PG | Fast-FedPG H = {LARGE_H} | FedAvg-PG H = {SMALL_H} "
        f"| FedAvg-PG H = {LARGE_H} | one-shot average |",
        "|---|---:|---|---|---|---|---|---|---|",
        *holds,
        "",
    ]
    budgets = ", ".join(f"{name} {fam['budget']:,} env steps (N = {fam['n_agents']})" for name, fam in families.items())
    lines.append(f"Budgets (all agents together, every method; local-only: budget / N per agent): {budgets}.")
    if run_seconds:
        cost = ", ".join(f"{name} {seconds / 60:.1f} min" for name, seconds in run_seconds.items())
        lines.append(
            f"Compute (sum of the cached runs' training and evaluation time, one torch thread, one run at a time): {cost} "
            f"({platform.machine()}, {os.cpu_count()} cores, shared with other jobs while measured)."
        )
    return "\n".join(lines)


def heatmap(name: str, per_h: dict[str, Any], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(per_h), figsize=(5.2 * len(per_h), 4.4), squeeze=False)
    for ax, (h, cell) in zip(axes[0], per_h.items(), strict=True):
        cross = np.asarray(cell["cross"])
        n = len(cross)
        rows = np.vstack([cross, cell["oneshot_per_task"], cell["fedavg_per_task"], cell["best_per_task"]])
        labels = [f"local {i}" for i in range(n)] + ["one-shot avg", f"FedAvg H={LARGE_H}", f"best ({cell['best_method']})"]
        image = ax.imshow(rows, cmap="viridis", aspect="auto")
        for (r, c), value in np.ndenumerate(rows):
            ax.text(c, r, f"{value:.0f}", ha="center", va="center", color="w" if value < rows.mean() else "k", fontsize=8)
        ax.axhline(n - 0.5, color="w", lw=2)
        ax.set_xticks(range(n), [f"task {j}" for j in range(n)])
        ax.set_yticks(range(len(labels)), labels)
        ax.set_title(f"{name}, h = {h}: return on each agent's task")
        fig.colorbar(image, ax=ax, shrink=0.8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None, output: pathlib.Path | None = None) -> dict[str, Any]:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", nargs="*", default=None, help="subset of families to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="tiny budgets, one family, two seeds (smoke run)")
    parser.add_argument("--cache", type=pathlib.Path, default=None)
    parser.add_argument("--output", type=pathlib.Path, default=None)
    args = parser.parse_args(argv)
    output = output or args.output or (ROOT / "runs" / "heterogeneity_quick" if args.quick else RESULTS)
    families = QUICK_FAMILIES if args.quick else FAMILIES
    common = QUICK_COMMON if args.quick else COMMON
    seeds = SEEDS[:2] if args.quick else SEEDS
    hs = HETEROGENEITY[-1:] if args.quick else HETEROGENEITY
    cache = args.cache or (output / "heterogeneity_runs" if args.quick else CACHE)
    cache.mkdir(parents=True, exist_ok=True)
    output.mkdir(parents=True, exist_ok=True)
    selected = args.families or list(families)

    import sb3_fedpg.envs  # noqa: F401  (registers the families)

    started = time.perf_counter()
    summary: dict[str, Any] = {}
    run_seconds: dict[str, float] = {}
    for name in families:
        family = families[name]
        for h in hs:
            runs: dict[str, list[dict[str, Any]]] = {m: [] for m in METHODS}
            complete = True
            for method in METHODS:
                for seed in seeds:
                    path = cache / f"{run_key(name, family, h, method, seed, common)}.json"
                    if not path.exists():
                        if name not in selected:
                            complete = False
                            continue
                        result = run_one(family, h, method, seed, common)
                        path.write_text(json.dumps(result))
                        print(f"{name} h={h} {method} seed {seed}: {result['seconds']:.1f} s", flush=True)
                    runs[method].append(json.loads(path.read_text()))
                    run_seconds[name] = run_seconds.get(name, 0.0) + runs[method][-1]["seconds"]
            if not complete:
                continue
            j_random = float(np.mean(random_reference(family, h)))
            cell = summarise({**family, "_h": h}, runs, j_random)
            m = cell["methods"]
            best = cell["best_method"]
            cell["oneshot_per_task"] = np.mean([r["oneshot"] for r in runs["local"]], 0).tolist()
            cell["fedavg_per_task"] = (
                np.mean([r["per_agent"] for r in runs["fedavg"]], 0).tolist()
                if not m["fedavg"]["diverged"]
                else [np.nan] * family["n_agents"]
            )
            cell["best_per_task"] = (
                np.mean([r["per_agent"] for r in runs[best]], 0).tolist()
                if best not in ("local", "oneshot")
                else cell["oneshot_per_task"]
            )
            summary.setdefault(name, {})[str(h)] = cell
    for name, per_h in summary.items():
        heatmap(name, per_h, output / f"heterogeneity_{name}.png")
    payload = {
        "families": families,
        "common": common,
        "seeds": list(seeds),
        "large_h": LARGE_H,
        "threshold": THRESHOLD,
        "summary": summary,
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "seconds_this_invocation": time.perf_counter() - started,
        "run_seconds": run_seconds,
        "quick": args.quick,
    }
    (output / "heterogeneity.json").write_text(json.dumps(payload, indent=1, default=float))
    (output / "heterogeneity.md").write_text(markdown(summary, families, run_seconds) + "\n")
    return payload


if __name__ == "__main__":
    main()
