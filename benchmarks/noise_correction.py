"""
The drift correction under sampling noise against FedAvg-PG at equal env steps (issue 12, items 4 and 5), version 2.

For each family (heterogeneity ``h = 1``), number of local steps ``H`` and seed, federated methods with the
hyperparameters of the heterogeneity benchmark's federated runs (``heterogeneity.COMMON``: a 32×32 MLP, 16 envs × 10
steps per gradient batch, γ = 0.95, GAE with a local critic, Adam 3e-3 as the local optimiser, unnormalised
advantages):

- ``fedavg``: FedAvg-PG (``correction=False``);
- ``paper``: Fast-FedPG as in the paper (``variance_control="none"``, one anchor batch);
- ``default``: the library's default, the paper's correction with ``anchor_batches="auto"`` = ``(H / 10)²`` batches
  per anchor (4 at ``H = 20``, 25 at ``H = 50``; at ``H = 5`` it is ``paper``, so it is not run again); the extra env
  steps count in ``num_timesteps``, so it gets fewer rounds for the same budget;
- ``h_div_5``: the previous default's ``H // 5`` anchor batches, run where it differs from today's (``H = 50``: 10);
- ``filtered``: the correction Kalman-filtered over rounds (``variance_control="filtered"``, one anchor batch);
- ``auto_filtered``: both: the filtered correction with ``"auto"`` anchor batches.

Version 1 (``benchmarks/results/noise_correction_v1.{json,md,png}``, committed output of this script's previous
version at 400k steps everywhere, the family default LQR) also measured the same-batch control variate, SNR damping
and fixed anchor batch counts; its findings (control variate harmful, SNR damping ≈ FedAvg-PG, ``H / 5`` anchor batches
best) chose the default measured here.

Every run trains for the same number of env steps (all agents, anchor batches included). ``J̄`` is the mean over
agents of the deterministic policy's return under each agent's own reward (``heterogeneity.evaluate``), on a curve
evaluated about every ``budget / 20`` env steps and at the end. The round-level noise metrics
``fed/correction_snr`` (median over agents of the running SNR), ``fed/correction_gain`` and ``fed/anchor_noise`` are
read each round from ``model.learner.stats`` and averaged over the run's rounds.

Scores: ``s(J) = (J − J_random) / (J_ref − J_random)`` with ``J_ref`` the central PG (``H = 1``) reference of the
heterogeneity benchmark (``benchmarks/results/heterogeneity.json``) when it exists for the family, else
``J / J_best`` with ``J_best`` the best seed-mean at that ``H`` (CartPole: positive returns). A variant *beats*
FedAvg-PG when its mean ``J̄`` exceeds FedAvg-PG's by more than the spread (the sum of the two 3-seed standard
deviations, ddof = 1), and *is worse* when it is below by more than it.

Budgets: 400k env steps (pointmass, arm), 200k (CartPole), 800k (LQR); 3× that at ``H = 50`` (1.2M, 600k), where 400k
steps are only 13 rounds.

Sampled LQR (``--families lqr``): FederatedPG on ``sb3_fedpg/HeteroLQR-v0`` (``input_scale_spread=2``: the agents'
input prices spread by ``e^(±2z)``, so that FedAvg-PG's bias exceeds the sampling floor) with a linear policy and an MLP critic
(``net_arch={"pi": [], "vf": [64, 64]}``, γ = 0.9, Adam 1e-2), exact evaluation of the deterministic gain
``K = −action_net.weight`` by ``sb3_fedpg.lqr.exact.global_cost``, reported as ``C̄(K) / C̄*``.

Each (family, H, method, seed) run is cached as JSON under ``benchmarks/cache/noise_correction/`` (committed; keyed by
a hash of its configuration), so an interrupted invocation resumes and ``--families``/``--hs`` fill in stages.
Writes ``benchmarks/results/noise_correction.json``, ``noise_correction.md``, ``noise_correction.png`` (J̄ vs env steps)
and ``noise_correction_rounds.png`` (vs communication rounds).
Run: ``python benchmarks/noise_correction.py`` (``--quick`` for a smoke run into ``runs/noise_correction_quick/``).
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import platform
import sys
import time
from typing import Any

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import harness.federated as fed  # the evaluation and helpers the federated-policy studies share
import heterogeneity as het  # the shared config

from sb3_fedpg.common.cli import ArgumentParser

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
# tracked (not under the ignored runs/): a sweep longer than one sitting resumes from a fresh clone
CACHE = ROOT / "benchmarks" / "cache" / "noise_correction"
VERSION = 2

SEEDS = het.SEEDS
HS = (50, 20, 5)
HETEROGENEITY = 1.0
N_CURVE_POINTS = 20

#: method → FederatedPG keyword arguments on top of the common hyperparameters (the single-batch variants pin
#: ``anchor_batches=1`` so that they are the variant alone; ``default`` is the library's default at that ``H``)
METHODS: dict[str, dict[str, Any]] = {
    "fedavg": {"correction": False},
    "paper": {"correction": True, "variance_control": "none", "anchor_batches": 1},
    "default": {"correction": True, "variance_control": "none", "anchor_batches": "auto"},
    "h_div_5": {"correction": True, "variance_control": "none", "anchor_batches": "H // 5"},
    "filtered": {"correction": True, "variance_control": "filtered", "anchor_batches": 1},
    "auto_filtered": {"correction": True, "variance_control": "filtered", "anchor_batches": "auto"},
}
#: methods run only at some H (the default is the paper's update below H = 10: the same runs)
ONLY_AT: dict[str, tuple[int, ...]] = {"default": (10, 20, 50), "auto_filtered": (10, 20, 50), "h_div_5": (50,)}
LABELS = {
    "fedavg": "FedAvg-PG",
    "paper": "Fast-FedPG (paper, 1 anchor batch)",
    "default": "Fast-FedPG (default: (H/10)² anchor batches)",
    "h_div_5": "Fast-FedPG, H // 5 anchor batches (previous default)",
    "filtered": "Kalman-filtered correction (1 anchor batch)",
    "auto_filtered": "Kalman-filtered correction, (H/10)² anchor batches",
}
COLORS = {"fedavg": "C3", "paper": "C0", "default": "C2", "h_div_5": "C5", "filtered": "C1", "auto_filtered": "C4"}


def resolved(method: str, local_steps: int) -> dict[str, Any]:
    """:return: the method's keyword arguments with ``anchor_batches`` resolved (what the run's cache key says)"""
    from sb3_fedpg.common.hyperparams import resolve_anchor_batches

    kwargs = dict(METHODS[method])
    if kwargs.get("anchor_batches") == "H // 5":
        kwargs["anchor_batches"] = max(1, local_steps // 5)
    kwargs["anchor_batches"] = resolve_anchor_batches(kwargs.get("anchor_batches", "auto"), local_steps, kwargs["correction"])
    return kwargs


def budget_at(family: dict[str, Any], local_steps: int) -> int:
    """:return: the family's env-step budget at ``H = local_steps``"""
    return int(family.get("budget_at", {}).get(local_steps, family["budget"]))


def methods_at(local_steps: int) -> list[str]:
    """:return: the methods of the plan at ``H = local_steps``"""
    return [m for m in METHODS if local_steps in ONLY_AT.get(m, (local_steps,))]


FAMILIES: dict[str, dict[str, Any]] = {
    # H = 50 gets 3× the budget: 400k steps are 13 rounds there, not a plateau
    "pointmass": {**het.FAMILIES["pointmass"], "budget_at": {50: 1_200_000}},
    "arm": {**het.FAMILIES["arm"], "budget_at": {50: 1_200_000}},
    # long episodes make evaluation the larger cost here: half the budget (FedAvg-PG plateaus by ~100k), 10 curve points
    "cartpole": {
        "env_id": "sb3_fedpg/HeteroCartPole-v0",
        "n_agents": 8,
        "budget": 200_000,
        "budget_at": {50: 600_000},
        "curve_points": 10,
    },
}
COMMON = het.COMMON
QUICK_FAMILIES = {"pointmass": {"env_id": "sb3_fedpg/HeteroPointMass-v0", "n_agents": 2, "budget": 4_000}}
QUICK_COMMON = het.QUICK_COMMON
QUICK_HS = (20,)
QUICK_CURVE_POINTS = 3

#: sampled LQR (FederatedPG on the Gymnasium env, linear policy, exact evaluation). The agents' input prices are
#: spread by a factor e^(±2 z) (``input_scale_spread=2``): with the family's default spread (0.5) FedAvg-PG's bias
#: (0.6 % at H = 10 in exact mode) is below what sampling leaves (~2 %); with 2 it is several per cent at H = 50.
LQR: dict[str, Any] = {
    "env_id": "sb3_fedpg/HeteroLQR-v0",
    "n_agents": 8,
    "heterogeneity": 1.0,
    "input_scale_spread": 2.0,
    "gamma": 0.9,
    # with the decaying step, 800k steps were not a plateau at H = 50 (the default, 9 rounds, still descending); at
    # 2.4M every curve is flat over its last third
    "budget": 2_400_000,
}
LQR_COMMON: dict[str, Any] = {
    "n_envs_per_agent": 16,
    "n_steps": 10,
    "gamma": 0.9,
    "gae_lambda": 0.95,
    "normalize_advantage": False,
    "critic_learning_rate": 1e-2,
    # Adam 3e-3 with a linear critic reached only C̄/C̄* = 1.08 at H = 1 in the budget; 1e-2 with a 64×64 critic 1.02.
    # Decayed linearly to 0 over the budget (SB3's LinearSchedule): with a constant step every method reached the
    # optimum's neighbourhood within ~200k steps and then wandered (FedAvg-PG from ~1.0 back to ~1.1; at 1.6M steps
    # every method ended worse than at 800k: cached runs with "learning_rate": 0.01), so the final cost measured the
    # step's noise floor, not the methods' fixed points. Decay removes the noise floor and leaves each method's bias.
    "learning_rate": {"linear": [1e-2, 0.0]},
    "local_optimizer": "adam",
    "policy_kwargs": {"net_arch": {"pi": [], "vf": [64, 64]}},
}


class CurveCallback:
    """Round-end hook: the round's noise metrics every round, ``J̄`` about every ``every`` env steps."""

    def __init__(self, evaluate: Any, every: int) -> None:
        from sb3_fedpg.common.callbacks import RoundCallback

        outer = self

        class _Callback(RoundCallback):
            def _on_training_start(self) -> None:
                outer.curve.append((0, outer.evaluate(self.model)))

            def _on_round_end(self) -> bool:
                outer.on_round_end(self.model)
                return True

        self.callback = _Callback()
        self.evaluate, self.every = evaluate, every
        self.curve: list[tuple[int, float]] = []
        self.rounds: list[dict[str, float]] = []
        self._next = every

    def on_round_end(self, model: Any) -> None:
        from sb3_fedpg.common import fedmath

        stats = dict(model.learner.stats.means())
        if model.last_round is not None:
            stats.update(fedmath.round_metrics(model.last_round, model.correction))
        keep = {k: float(v) for k, v in stats.items() if k.startswith("fed/")}
        keep["steps"] = int(model.num_timesteps)
        self.rounds.append(keep)
        if model.num_timesteps >= self._next:
            self.curve.append((int(model.num_timesteps), self.evaluate(model)))
            while self._next <= model.num_timesteps:
                self._next += self.every


def run_one(
    family: dict[str, Any],
    local_steps: int,
    method: str,
    seed: int,
    common: dict[str, Any],
    curve_points: int = N_CURVE_POINTS,
) -> dict[str, Any]:
    """Train and evaluate one (family, H, method, seed); returns what is cached."""
    import torch

    from sb3_fedpg import FederatedPG

    torch.set_num_threads(1)
    common = _with_schedules(common)
    start = time.perf_counter()
    lqr = family["env_id"] == LQR["env_id"]
    budget = budget_at(family, local_steps)
    if lqr:
        env_kwargs = {"heterogeneity": family["heterogeneity"], "input_scale_spread": family["input_scale_spread"]}
        evaluate = lqr_evaluator(family)
    else:
        env_kwargs = fed.env_kwargs(HETEROGENEITY)
        env = fed.eval_env(family, HETEROGENEITY, seed)

        def evaluate(model: Any) -> float:
            return float(np.mean(fed.evaluate(model, env)))

    hook = CurveCallback(evaluate, max(1, budget // family.get("curve_points", curve_points)))
    out: dict[str, Any] = {"final": None, "error": None}
    try:
        model = FederatedPG(
            "MlpPolicy",
            family["env_id"],
            n_agents=family["n_agents"],
            env_kwargs=env_kwargs,
            local_steps=local_steps,
            seed=seed,
            **resolved(method, local_steps),
            **common,
        )
        model.learn(budget, callback=hook.callback)
        out["final"] = evaluate(model) if lqr else fed.evaluate(model, env)
        out["steps"] = int(model.num_timesteps)
    except (ValueError, FloatingPointError) as error:  # a run that blew up (NaN/inf, unstable gain): recorded
        out["error"] = str(error).splitlines()[0]
    out["curve"] = hook.curve
    out["rounds"] = hook.rounds
    out["seconds"] = time.perf_counter() - start
    return out


def _with_schedules(common: dict[str, Any]) -> dict[str, Any]:
    """:return: ``common`` with a JSON-able ``{"linear": [start, end]}`` step size made SB3's (picklable) LinearSchedule"""
    from stable_baselines3.common.utils import LinearSchedule

    rate = common.get("learning_rate")
    if isinstance(rate, dict):
        (start, end) = rate["linear"]
        return {**common, "learning_rate": LinearSchedule(start, end, 1.0)}
    return common


def lqr_evaluator(family: dict[str, Any]) -> Any:
    """:return: ``model → C̄(K) / C̄*`` of the deterministic gain (``inf`` for a destabilising gain)"""
    from sb3_fedpg.envs.lqr import lqr_problem

    from sb3_fedpg.lqr.exact import global_cost, optimal_gain

    problem = lqr_problem(
        family["n_agents"],
        gamma=family["gamma"],
        heterogeneity=family["heterogeneity"],
        input_scale_spread=family["input_scale_spread"],
    )
    optimal = float(global_cost(problem, optimal_gain(problem).gain))

    def evaluate(model: Any) -> float:
        gain = -model.policy.action_net.weight.detach().cpu().numpy().astype(np.float64)
        return float(global_cost(problem, gain)) / optimal

    return evaluate


def run_key(
    name: str, family: dict[str, Any], local_steps: int, method: str, seed: int, common: dict[str, Any], curve_points: int
) -> str:
    config = {
        "family": family,
        "h": HETEROGENEITY,
        "H": local_steps,
        "method": resolved(method, local_steps),
        "seed": seed,
        "common": common,
        "eval": [fed.EVAL_ENVS_PER_AGENT, fed.EVAL_EPISODES, curve_points],
        "version": VERSION,
    }
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]
    return f"{name}_H{local_steps}_{method}_s{seed}_{digest}"


def _final(run: dict[str, Any]) -> float:
    if run["final"] is None:
        return float("nan")
    return float(np.mean(run["final"]))


def reference(name: str) -> dict[str, float] | None:
    """:return: the heterogeneity benchmark's central PG and random ``J̄`` at ``h = 1`` for the family, if committed"""
    path = RESULTS / "heterogeneity.json"
    if not path.exists():
        return None
    cell = json.loads(path.read_text())["summary"].get(name, {}).get(str(HETEROGENEITY))
    if cell is None or cell["best_method"] != "central":
        return None
    return {"j_ref": float(cell["j_best"]), "j_random": float(cell["j_random"]), "label": "central PG (H = 1)"}


def summarise_cell(runs: dict[str, list[dict[str, Any]]], lower_is_better: bool = False) -> dict[str, Any]:
    """Per-method mean ± std of the final value, the noise metrics, and the comparison with FedAvg-PG."""
    sign = -1.0 if lower_is_better else 1.0
    methods: dict[str, Any] = {}
    for method, method_runs in runs.items():
        finals = [_final(r) for r in method_runs]
        diverged = sum(not np.isfinite(v) for v in finals)
        mean, std = fed.mean_std(finals) if not diverged else (float("nan"), float("nan"))

        def run_mean(key: str, method_runs: list[dict[str, Any]] = method_runs) -> float | None:
            values = [np.mean([r[key] for r in run["rounds"] if key in r]) for run in method_runs]
            values = [v for v in values if np.isfinite(v)]
            return float(np.mean(values)) if values else None

        methods[method] = {
            "finals": finals,
            "mean": mean,
            "std": std,
            "diverged": diverged,
            "snr": run_mean("fed/correction_snr"),
            "beta": run_mean("fed/correction_beta"),
            "gain": run_mean("fed/correction_gain"),
            "anchor_noise": run_mean("fed/anchor_noise"),
            "drift": run_mean("fed/drift"),
            "rounds": float(np.mean([len(r["rounds"]) for r in method_runs])),
            "steps": float(np.mean([r["rounds"][-1]["steps"] for r in method_runs if r["rounds"]] or [np.nan])),
        }
    base = methods["fedavg"]
    for entry in methods.values():
        diff = sign * (entry["mean"] - base["mean"])
        spread = entry["std"] + base["std"]
        entry["minus_fedavg"], entry["spread"] = float(diff), float(spread)
        if not (np.isfinite(diff) and np.isfinite(spread)):
            entry["verdict"] = "diverged" if entry["diverged"] or base["diverged"] else "—"
        else:
            entry["verdict"] = "yes" if diff > spread else ("worse" if -diff > spread else "no")
    return {"methods": methods}


def _fmt_num(value: float | None, digits: int = 2) -> str:
    if value is None or not np.isfinite(value):
        return "—"
    return f"{value:.{digits}f}"


def markdown(summary: dict[str, Any], families: dict[str, Any], partial: bool, run_seconds: dict[str, float]) -> str:
    lines = [
        "| family | H | method | final J̄ (mean ± std) | score | rounds | env steps | mean SNR | mean gain K "
        "| mean anchor noise | − FedAvg (spread) | beats FedAvg by > spread? |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, per_h in summary.items():
        lqr = name == "lqr"
        for local_steps, cell in per_h.items():
            for method, m in cell["methods"].items():
                if m["diverged"]:
                    value = f"diverged ({m['diverged']}/{len(m['finals'])})"
                    score = "—"
                else:
                    digits = 3 if lqr else 1
                    value = f"{m['mean']:.{digits}f} ± {m['std']:.{digits}f}"
                    score = "—" if cell.get("score") is None else f"{cell['score'][method]:.0%}"
                compare = (
                    "—"
                    if method == "fedavg"
                    else f"{_fmt_num(m['minus_fedavg'], 3 if lqr else 1)} ({_fmt_num(m['spread'], 3 if lqr else 1)})"
                )
                verdict = {"yes": "**yes**", "worse": "**worse**"}.get(m["verdict"], m["verdict"])
                if method == "fedavg":
                    verdict = "—"
                lines.append(
                    f"| {name} | {local_steps} | {LABELS[method]} | {value} | {score} | {m['rounds']:.0f} "
                    f"| {m['steps'] / 1000:.0f}k "
                    f"| {_fmt_num(m['snr'])} | {_fmt_num(m['gain'])} | {_fmt_num(m['anchor_noise'], 1)} | {compare} "
                    f"| {verdict} |"
                )
    refs = []
    for name in summary:
        ref = summary[name][next(iter(summary[name]))].get("reference")
        if ref and ref["label"] == "best method at this H":
            refs.append(f"{name}: J̄ / best seed-mean at the same H")
        elif ref:
            refs.append(f"{name}: J_ref = {ref['j_ref']:.1f} ({ref['label']}), J_random = {ref['j_random']:.1f}")
    lines += [
        "",
        "J̄ = mean over agents of each agent's return under its own reward (deterministic policy, "
        f"{fed.EVAL_ENVS_PER_AGENT * fed.EVAL_EPISODES} episodes per agent), mean ± std (ddof = 1) over the seeds; "
        "LQR: C̄(K)/C̄* of the deterministic gain (lower is better). score = (J̄ − J_random) / (J_ref − J_random) "
        f"({'; '.join(refs) if refs else 'no reference'}). − FedAvg = difference of the means in the better "
        "direction; spread = sum of the two 3-seed stds; **worse** = below FedAvg-PG by more than the spread. "
        "SNR = `fed/correction_snr` (median over agents of the running signal-to-noise ratio of g − a_i), gain K = "
        "`fed/correction_gain` (mean Kalman gain of the filtered correction: 1 = this round's g − a_i alone), anchor "
        "noise = `fed/anchor_noise` (mean √tr Var a_i), each averaged over the run's rounds and the seeds (measured "
        "for every corrected method).",
    ]
    budgets = ", ".join(
        f"{name} {fam['budget']:,} env steps"
        + "".join(f" ({b:,} at H = {h})" for h, b in fam.get("budget_at", {}).items())
        + f" (N = {fam['n_agents']})"
        for name, fam in families.items()
    )
    lines.append(
        f"Budgets (all agents together, anchor batches included): {budgets}; h = {HETEROGENEITY}. A run stops after the "
        "first whole round that reaches the budget, so the env steps actually used (column) can exceed it by up to one "
        "round. The extra anchor batches (default: (H/10)², previous default: H // 5) are counted in the env steps "
        "(fewer rounds for the same budget)."
    )
    if run_seconds:
        cost = ", ".join(f"{name} {s / 60:.1f} min" for name, s in run_seconds.items())
        lines.append(
            f"Compute (sum of the cached runs' training and evaluation time, one torch thread): {cost} "
            f"({platform.machine()}, {os.cpu_count()} cores, shared with other jobs while measured)."
        )
    if partial:
        lines.append("**Partial results**: not every (family, H, method, seed) run of the plan has finished.")
    return "\n".join(lines)


def _curve_x(run: dict[str, Any], length: int, axis: str) -> list[float]:
    steps = [p[0] for p in run["curve"][:length]]
    if axis == "steps":
        return steps
    ends = np.array([r["steps"] for r in run["rounds"]])  # env steps after each round
    return [float(np.searchsorted(ends, step, side="left") + (step > 0)) if step else 0.0 for step in steps]


def figure(curves: dict[str, Any], path: pathlib.Path, references: dict[str, Any], axis: str = "steps") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sb3_fedpg.common.plotting import Series, aggregate_values, draw_panel

    panels = [(name, h) for name, per_h in curves.items() for h in per_h]
    if not panels:
        return
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.4 * cols, 3.9 * rows), squeeze=False)
    for ax, (name, local_steps) in zip(axes.flat, panels, strict=False):
        series = []
        for method, runs in curves[name][local_steps].items():
            good = [r for r in runs if r["final"] is not None and r["curve"]]
            if not good:
                continue
            # the seeds' curves cut to the shortest, at the seeds' mean x; std over seeds with ddof = 1, as in the table
            length = min(len(r["curve"]) for r in good)
            steps = np.array([_curve_x(r, length, axis) for r in good]).mean(0)
            values = np.array([[p[1] for p in r["curve"][:length]] for r in good])
            curve = aggregate_values(steps, values, ddof=1)
            series.append(Series(f"{LABELS[method]} ({len(good)} seeds)", curve, COLORS[method]))
        ref = references.get(name)
        if name == "lqr":
            ax.axhline(1.0, color="k", ls="--", lw=1, label="C̄* (optimal)")
            ylabel = "C̄(K) / C̄*  (lower is better)"
        else:
            if ref:
                ax.axhline(ref["j_ref"], color="k", ls="--", lw=1, label=ref["label"])
            ylabel = "J̄ (mean return over agents)"
        xlabel = "env steps (all agents)" if axis == "steps" else "communication rounds"
        title = f"{name}, h = {HETEROGENEITY}, H = {local_steps}"
        draw_panel(ax, series, title, ylabel, xlabel, steps=axis == "steps", legend=None)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None, output: pathlib.Path | None = None) -> dict[str, Any]:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", nargs="*", default=None, help="families to run now (others: cached runs only)")
    parser.add_argument("--hs", nargs="*", type=int, default=None, help="local steps H to run now (default: all)")
    parser.add_argument("--methods", nargs="*", default=None, help="methods to run now (others: cached runs only)")
    parser.add_argument("--report", action="store_true", help="no training: report the cached runs")
    parser.add_argument("--quick", action="store_true", help="tiny budgets, one family, two seeds (smoke run)")
    parser.add_argument("--cache", type=pathlib.Path, default=None)
    parser.add_argument("--output", type=pathlib.Path, default=None)
    args = parser.parse_args(argv)
    output = output or args.output or (ROOT / "runs" / "noise_correction_quick" if args.quick else RESULTS)
    families = dict(QUICK_FAMILIES) if args.quick else {**FAMILIES, "lqr": LQR}
    common_of = {name: (LQR_COMMON if name == "lqr" else COMMON) for name in families}
    if args.quick:
        common_of = {name: QUICK_COMMON for name in families}
    seeds = SEEDS[:2] if args.quick else SEEDS
    hs = QUICK_HS if args.quick else HS
    curve_points = QUICK_CURVE_POINTS if args.quick else N_CURVE_POINTS
    cache = args.cache or (output / "noise_correction_runs" if args.quick else CACHE)
    cache.mkdir(parents=True, exist_ok=True)
    output.mkdir(parents=True, exist_ok=True)
    selected = [] if args.report else (args.families if args.families is not None else list(families))
    run_hs = args.hs or list(hs)
    run_methods = args.methods or list(METHODS)

    import sb3_fedpg.envs  # noqa: F401  (registers the families)

    started = time.perf_counter()
    summary: dict[str, Any] = {}
    curves: dict[str, Any] = {}
    references: dict[str, Any] = {}
    run_seconds: dict[str, float] = {}
    partial = False
    for name, family in families.items():
        common = common_of[name]
        ref = None if args.quick or name == "lqr" else reference(name)
        if ref:
            references[name] = ref
        for local_steps in hs:
            runs: dict[str, list[dict[str, Any]]] = {m: [] for m in methods_at(local_steps)}
            for seed in seeds:
                for method in runs:
                    path = cache / f"{run_key(name, family, local_steps, method, seed, common, curve_points)}.json"
                    if not path.exists():
                        if name not in selected or local_steps not in run_hs or method not in run_methods:
                            partial = True
                            continue
                        result = run_one(family, local_steps, method, seed, common, curve_points)
                        path.write_text(json.dumps(result))
                        print(
                            f"{name} H={local_steps} {method} seed {seed}: final {_final(result):.3f} "
                            f"({result['seconds']:.1f} s){' ' + result['error'] if result['error'] else ''}",
                            flush=True,
                        )
                    runs[method].append(json.loads(path.read_text()))
                    run_seconds[name] = run_seconds.get(name, 0.0) + runs[method][-1]["seconds"]
            if any(len(r) < len(seeds) for r in runs.values()):
                partial = True
            # a method with fewer than two seeds has no spread yet: left out of the cell until it has
            runs = {m: r for m, r in runs.items() if len(r) >= 2}
            if "fedavg" not in runs or len(runs) < 2:
                continue
            cell = summarise_cell(runs, lower_is_better=name == "lqr")
            if name != "lqr":
                # without the heterogeneity benchmark's reference (CartPole: positive returns): J / best seed-mean here
                j_random = ref["j_random"] if ref else 0.0
                j_ref = ref["j_ref"] if ref else max(m["mean"] for m in cell["methods"].values() if np.isfinite(m["mean"]))
                cell["reference"] = ref or {"j_ref": j_ref, "j_random": j_random, "label": "best method at this H"}
                cell["score"] = {
                    m: float((e["mean"] - j_random) / (j_ref - j_random)) if np.isfinite(e["mean"]) else None
                    for m, e in cell["methods"].items()
                }
            summary.setdefault(name, {})[str(local_steps)] = cell
            curves.setdefault(name, {})[str(local_steps)] = runs
    figure(curves, output / "noise_correction.png", references)
    figure(curves, output / "noise_correction_rounds.png", references, axis="rounds")
    payload = {
        "families": {name: families[name] for name in summary},
        "common": {name: common_of[name] for name in summary},
        "methods": METHODS,
        "seeds": list(seeds),
        "h": HETEROGENEITY,
        "summary": summary,
        "partial": partial,
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "seconds_this_invocation": time.perf_counter() - started,
        "run_seconds": run_seconds,
        "quick": args.quick,
    }
    (output / "noise_correction.json").write_text(json.dumps(payload, indent=1, default=float))
    (output / "noise_correction.md").write_text(
        markdown(summary, {n: families[n] for n in summary}, partial, run_seconds) + "\n"
    )
    return payload


if __name__ == "__main__":
    main()
