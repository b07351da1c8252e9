"""
FedSVRPG-M (Wang et al., ICML 2024) against Fast-FedPG and FedAvg-PG on tabular MDPs with exact ground truth.

Three measurements, all on the agents of ``tabular_speedup`` (a 16-agent Garnet population, S=10, A=4, whose average
reward is the same for every N):

* ``bias``: exact gradients, N = 8 heterogeneous agents, H = 10, started at the soft optimum of the average-reward
  MDP: the gap after ``--bias-rounds`` rounds (the fixed point's) of FedSVRPG-M (β = 0.5, 0.2), FedAvg-PG and
  Fast-FedPG for local step sizes η. FedSVRPG-M's fixed point with constant steps solves
  ``mean_i Σ_k (I + η H_i)^k ∇J_i(θ*) = 0`` to first order in η, FedAvg-PG's equation (the momentum is 0 there and
  β cancels): its heterogeneity bias is FedAvg-PG's, vanishing like η (gap like η²), not Fast-FedPG's 0.
* ``equal_samples``: truncated GPOMDP gradients (K, M), the three methods at the same η, H and rounds — the same
  environment steps (every round costs H batches per agent); error = mean gap over the last 20% of rounds, per seed.
* ``speedup``: FedSVRPG-M's error against N (homogeneous N = 1 … 16, heterogeneous N = 2 … 16), fitted log-log slope
  (the paper: linear speed-up, slope −1), with Fast-FedPG at the same settings for reference; also the slope of the
  noise part (error minus the same run's with the exact expected truncated gradients, per seed).
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from harness import Context, Report, Run, Settings, Study, positive, table
from harness.keys import jsonable
from tabular_speedup import KINDS, agents_of, fitted_slope, speedup_mdp

from sb3_fedpg import tabular as tab

LABELS = {"fast_fedpg": "Fast-FedPG", "fedavg_pg": "FedAvg-PG"}


def name(method: str, beta: float | None) -> str:
    return method if beta is None else f"{method}_beta{beta:g}"


def bias_gap(method: str, beta: float | None, eta: float, local_steps: int, rounds: int, tau: float, gamma: float) -> float:
    """:return: the gap after ``rounds`` exact rounds from the soft optimum, N = 8 heterogeneous agents of seed 0"""
    mdp = speedup_mdp(8, 0, True, gamma)
    solution = tab.optimal_objective(mdp, tau)
    kwargs = dict(theta0=np.log(solution.policy), reference_objective=solution.objective)  # softmax(log π*) = π*
    if method == "fedsvrpg_m":
        return float(tab.exact_svrpgm_run(mdp, local_steps, rounds, eta, beta, tau, **kwargs).gaps[-1])
    return float(tab.exact_federated_run(mdp, local_steps, rounds, eta, tau, method == "fast_fedpg", **kwargs).gaps[-1])


def sampled(method: str, beta: float | None, n_agents: int, seed: int, heterogeneous: bool, exact: bool, s: dict) -> dict:
    """:return: a run's gaps, mean gap over the last 20 % of rounds, env steps (``exact``: expected truncated gradient)"""
    mdp = speedup_mdp(n_agents, seed, heterogeneous, s["gamma"])
    args, ref = (mdp, s["local_steps"], s["rounds"], s["learning_rate"]), tab.optimal_objective(mdp, s["tau"]).objective
    if exact and method == "fedsvrpg_m":
        result = tab.exact_svrpgm_run(*args, beta, s["tau"], truncation=s["horizon"], reference_objective=ref)
    elif exact:
        result = tab.exact_federated_run(*args, s["tau"], truncation=s["horizon"], reference_objective=ref)
    else:
        kwargs = dict(tau=s["tau"], seed=1000 + seed, reference_objective=ref)
        if method == "fedsvrpg_m":
            result = tab.sampled_svrpgm_run(*args, s["horizon"], s["trajectories"], momentum_coef=beta, **kwargs)
        else:
            result = tab.sampled_federated_run(
                *args, s["horizon"], s["trajectories"], correction=method == "fast_fedpg", **kwargs
            )
    return {"error": result.gaps[-max(1, s["rounds"] // 5) :].mean(), "n_samples": result.n_samples, "gaps": result.gaps}


SAMPLED = ("local_steps", "rounds", "learning_rate", "horizon", "trajectories", "tau", "gamma")


def bias_run(s: Settings, method: str, beta: float | None, eta: float) -> Run:
    config = dict(method=method, beta=beta, eta=eta, local_steps=s.local_steps, rounds=s.bias_rounds, tau=s.tau, gamma=s.gamma)
    return Run(bias_gap, config, f"bias_{name(method, beta)}_eta{eta:g}")


def run(s: Settings, method: str, beta: float | None, n: int, seed: int, heterogeneous: bool = True, exact=False) -> Run:
    config = dict(method=method, beta=beta, n_agents=n, seed=seed, heterogeneous=heterogeneous, exact=exact)
    label = f"{'exact' if exact else 'sampled'}_{name(method, beta)}_{KINDS[heterogeneous]}_N{n}_s{seed}"
    return Run(sampled, config | {"s": {k: s[k] for k in SAMPLED}}, label)


def methods(s: Settings) -> list[tuple[str, float | None]]:
    return [("fast_fedpg", None), ("fedavg_pg", None), *(("fedsvrpg_m", b) for b in s.momentum)]


def runs(s: Settings) -> list[Run]:
    out = [bias_run(s, m, b, eta) for m, b in methods(s) for eta in s.bias_learning_rates]
    out += [run(s, m, b, 8, i) for m, b in methods(s) for i in range(s.seeds)]
    for het, (method, beta) in itertools.product(KINDS, (("fast_fedpg", None), ("fedsvrpg_m", s.momentum[0]))):
        out += [run(s, method, beta, n, i, het, x) for n in agents_of(s, het) for i in range(s.seeds) for x in (False, True)]
    return out


def report(ctx: Context) -> Report:
    import matplotlib.pyplot as plt

    s, r, h, seeds = ctx.settings, ctx.results, ctx.settings.local_steps, range(ctx.settings.seeds)
    data: dict = {"settings": s, "error_metric": "mean gap over last 20% of rounds"}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    # -- bias: exact gradients, stationary gaps against η
    data["bias"] = {"learning_rates": s.bias_learning_rates}
    for method, beta in methods(s):
        data["bias"][name(method, beta)] = gaps = [r[bias_run(s, method, beta, eta)] for eta in s.bias_learning_rates]
        axes[0].plot(s.bias_learning_rates, positive(gaps), "o-", label=name(method, beta))
    axes[0].set(
        xscale="log", yscale="log", xlabel="local step size η", ylabel=f"gap after {s.bias_rounds} rounds (exact gradients)"
    )
    axes[0].set_title(f"heterogeneity bias, N=8, H={h}, τ={s.tau}", fontsize=9)
    axes[0].legend(fontsize=7)
    # -- equal samples: the three methods on the same budget
    data["equal_samples"] = {"n_agents": 8}
    for i, (method, beta) in enumerate(methods(s)):
        results = [r[run(s, method, beta, 8, seed)] for seed in seeds]
        errors = [float(x["error"]) for x in results]
        entry = {"error_per_seed": errors, "mean_error": float(np.mean(errors)), "env_steps": results[-1]["n_samples"]}
        data["equal_samples"][name(method, beta)] = entry
        curve = positive(np.mean([x["gaps"] for x in results], 0))
        axes[1].plot(curve, color=f"C{i}", label=f"{name(method, beta)}: {np.mean(errors):.2g}")
    axes[1].set(yscale="log", xlabel="round (equal env steps per round)", ylabel="gap, mean over seeds")
    axes[1].set_title(f"GPOMDP K={s.horizon} M={s.trajectories}, N=8 heterogeneous, η={s.learning_rate}, H={h}", fontsize=9)
    axes[1].legend(fontsize=7)
    # -- speed-up in N
    data["speedup"] = {}
    for i, (het, kind) in enumerate(KINDS.items()):
        agents = agents_of(s, het)
        data["speedup"][kind] = {"agents": agents}
        for j, (method, beta) in enumerate((("fast_fedpg", None), ("fedsvrpg_m", s.momentum[0]))):
            errors, deterministic = (
                np.array([[r[run(s, method, beta, n, seed, het, x)]["error"] for seed in seeds] for n in agents])
                for x in (False, True)
            )
            mean_error, slope = errors.mean(1), fitted_slope(np.array(agents), errors.mean(1))
            noise_slope = fitted_slope(np.array(agents), np.maximum(errors - deterministic, 1e-12).mean(1))
            entry = dict(error_per_seed=errors, mean_error=mean_error, deterministic_error=deterministic.mean(1), slope=slope)
            data["speedup"][kind][name(method, beta)] = entry | {"noise_slope": noise_slope}
            label = f"{kind} {name(method, beta)}: slope {slope:.2f}"
            axes[2].plot(agents, mean_error, "o-" if j else "s:", color=f"C{i}", label=label)
    axes[2].set_xscale("log", base=2)
    axes[2].set(yscale="log", xlabel="number of agents N", ylabel="gap, mean of last 20% rounds")
    axes[2].set_title(f"speed-up in N, {s.seeds} seeds, β={s.momentum[0]} (theory: slope −1)", fontsize=9)
    axes[2].legend(fontsize=7)
    return Report(data, fig, markdown(jsonable(data, finite=True)))


def _label(key: str) -> str:
    return LABELS.get(key, key.replace("fedsvrpg_m_beta", "FedSVRPG-M, β = "))


def _gap(value: float) -> str:
    return "< 1e-15" if abs(value) < 1e-15 else f"{value:.2g}"


def markdown(data: dict) -> str:
    """:return: the tables of the JSON ``data``: the exact gap vs the local step, the gap at equal samples, slopes vs N"""
    bias, s, equal, rates = data["bias"], data["settings"], data["equal_samples"], data["bias"]["learning_rates"]
    rows = [["local step η", *(f"{x:g}" for x in rates)]]
    rows += [[_label(k), *(_gap(v) for v in values)] for k, values in bias.items() if k != "learning_rates"]
    methods = [k for k, v in equal.items() if isinstance(v, dict)]
    first = equal[methods[0]]  # every method ran the same env steps
    lines = [
        f"Exact gradients, N = 8 heterogeneous agents, H = {s['local_steps']}, started at the soft optimum; gap after "
        f"{s['bias_rounds']:,} rounds:",
        "",
        *table(rows, "l" + "r" * len(rates)),
        "",
        f"Sampled gradients at equal samples (N = {equal['n_agents']}, {first['env_steps']:,} env steps per method, "
        f"{len(first['error_per_seed'])} seeds; {data['error_metric']}):",
        "",
    ]
    rows = [["method", "mean gap", "per seed"]]
    rows += [
        [_label(m), f"{equal[m]['mean_error']:.2g}", ", ".join(f"{e:.2g}" for e in equal[m]["error_per_seed"])]
        for m in methods
    ]
    lines += [*table(rows, "lrl"), "", "Fitted log-log slope of the gap against N (theory: −1):", ""]
    rows = [["agents", "method", "raw gap", "noise part"]]
    for kind, entry in data["speedup"].items():
        rows += [
            [kind, _label(m), f"{v['slope']:.2f}", f"{v['noise_slope']:.2f}"] for m, v in entry.items() if isinstance(v, dict)
        ]
    return "\n".join(lines + table(rows, "llrr")) + "\n"


STUDY = Study(
    "tabular_svrpgm",
    __doc__,
    dict(seeds=3, agents=[1, 2, 4, 8, 16], rounds=300, local_steps=10, learning_rate=0.2)
    | dict(bias_learning_rates=[0.02, 0.05, 0.1, 0.3, 1.0], bias_rounds=2000, momentum=[0.5, 0.2], horizon=40, trajectories=2)
    | dict(gamma=0.8, tau=0.1),
    runs,
    report,
    quick=dict(seeds=1, agents=[1, 2, 4], rounds=10, local_steps=2, horizon=10, bias_learning_rates=[0.1, 0.3], bias_rounds=20)
    | dict(momentum=[0.5]),
)
main = STUDY.main

if __name__ == "__main__":
    main()
