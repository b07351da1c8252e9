"""
The drift correction under sampling noise against FedAvg-PG at equal env steps (issue 12, items 4 and 5), version 2.

Per family (h = 1), local steps ``H`` and seed: FederatedPG with ``heterogeneity.COMMON`` (sampled LQR:
``neural_runs.LQR_COMMON``, exact ``C̄(K) / C̄*``) as FedAvg-PG, Fast-FedPG with one anchor batch (the paper), the
default ``(H/10)²`` batches, the previous default ``H // 5``, and the Kalman-filtered correction (one batch, or
``(H/10)²``). Anchor batches count in the env steps. ``J̄``: the deterministic policy's return under each agent's
reward, averaged over agents, on a curve and at the end; the ``fed/`` noise metrics averaged over each run's rounds.
A variant beats FedAvg-PG when its mean is better by more than the sum of the two seed stds.

Version 1 (``benchmarks/results/noise_correction_v1.{json,md,png}``) is a frozen historical result: the committed
output of this script's previous version (400k steps, the family default LQR, also the same-batch control variate and
SNR damping), which no script produces now; its findings chose the default measured here.

Cached in ``benchmarks/cache/noise_correction/`` (committed; ``--families``/``--hs``/``--methods`` fill it in
stages). Writes ``benchmarks/results/noise_correction.{json,md,png}`` and ``noise_correction_rounds.png``.
Run: ``python benchmarks/noise_correction.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import heterogeneity as het  # the hyperparameters and families
import neural_runs as nr  # the evaluation env, the sampled-LQR family and its exact evaluation
import numpy as np
from harness import Context, Report, Run, Settings, Study, table

from sb3_fedpg.common.callbacks import RoundCallback


def fed(control: str, batches: int | str) -> dict[str, Any]:
    return {"correction": True, "variance_control": control, "anchor_batches": batches}


#: method → label, colour, the H it runs at (None: every H; the default is the paper's update below H = 10), kwargs
METHODS: dict[str, tuple[str, str, tuple[int, ...] | None, dict[str, Any]]] = {
    "fedavg": ("FedAvg-PG", "C3", None, {"correction": False}),
    "paper": ("Fast-FedPG (paper, 1 anchor batch)", "C0", None, fed("none", 1)),
    "default": ("Fast-FedPG (default: (H/10)² anchor batches)", "C2", (10, 20, 50), fed("none", "auto")),
    "h_div_5": ("Fast-FedPG, H // 5 anchor batches (previous default)", "C5", (50,), fed("none", "H // 5")),
    "filtered": ("Kalman-filtered correction (1 anchor batch)", "C1", None, fed("filtered", 1)),
    "auto_filtered": ("Kalman-filtered correction, (H/10)² anchor batches", "C4", (10, 20, 50), fed("filtered", "auto")),
}
FAMILIES: dict[str, dict[str, Any]] = {  # H = 50 gets 3× the budget: 400k steps are 13 rounds there
    "full": {
        "pointmass": {**het.FAMILIES["pointmass"], "budget_at": {50: 1_200_000}},
        "arm": {**het.FAMILIES["arm"], "budget_at": {50: 1_200_000}},
        # long episodes make evaluation the larger cost: half the budget (FedAvg-PG plateaus by ~100k), 10 curve points
        "cartpole": dict(env_id="sb3_fedpg/HeteroCartPole-v0", n_agents=8, budget=200_000, budget_at={50: 600_000})
        | {"curve_points": 10},
        "lqr": nr.LQR,
    },
    "quick": {"pointmass": {"env_id": het.ENV_IDS["pointmass"], "n_agents": 2, "budget": 4_000}},
}


def resolved(method: str, local_steps: int) -> dict[str, Any]:
    """:return: the method's keyword arguments with ``anchor_batches`` resolved (what the run's key holds)"""
    from sb3_fedpg.common.hyperparams import resolve_anchor_batches

    kwargs = METHODS[method][3]
    batches = max(1, local_steps // 5) if kwargs.get("anchor_batches") == "H // 5" else kwargs.get("anchor_batches", "auto")
    return {**kwargs, "anchor_batches": resolve_anchor_batches(batches, local_steps, kwargs["correction"])}


class Curve(RoundCallback):
    """Each round's ``fed/`` metrics, and ``evaluate(model)`` at the start and about every ``every`` env steps."""

    def __init__(self, evaluate: Any, every: int) -> None:
        super().__init__()
        self.evaluate, self.every, self.next, self.curve, self.metrics = evaluate, every, every, [], []

    def _on_training_start(self) -> None:
        self.curve.append((0, self.evaluate(self.model)))

    def _on_round_end(self) -> bool:
        from sb3_fedpg.common.fedmath import round_metrics

        model, stats = self.model, dict(self.model.learner.stats.means())
        stats |= round_metrics(model.last_round, model.correction) if model.last_round is not None else {}
        self.metrics.append(
            {**{k: float(v) for k, v in stats.items() if k.startswith("fed/")}, "steps": int(model.num_timesteps)}
        )
        if model.num_timesteps >= self.next:
            self.curve.append((int(model.num_timesteps), self.evaluate(model)))
            while self.next <= model.num_timesteps:
                self.next += self.every
        return True


def train(
    family: dict, heterogeneity: float, local_steps: int, method: dict, seed: int, common: dict, evaluation: list
) -> dict:
    """One run: the curve, the round metrics, the final value; ``evaluation``: envs, episodes, curve points."""
    import torch
    from stable_baselines3.common.utils import LinearSchedule

    from sb3_fedpg import FederatedPG
    from sb3_fedpg.common.evaluation import evaluate_agents

    torch.set_num_threads(1)
    start, budget = time.perf_counter(), int(family.get("budget_at", {}).get(local_steps, family["budget"]))
    if isinstance(common.get("learning_rate"), dict):  # {"linear": [start, end]}: SB3's LinearSchedule
        common = {**common, "learning_rate": LinearSchedule(*common["learning_rate"]["linear"], 1.0)}
    if family["env_id"] == nr.LQR["env_id"]:
        env_kwargs = {key: family[key] for key in ("heterogeneity", "input_scale_spread")}
        evaluate = final = nr.lqr_evaluator(family)
    else:
        env_kwargs, env = {"heterogeneity": heterogeneity}, nr.eval_env(family, heterogeneity, seed, evaluation[0])
        final = lambda model: [float(x) for x in evaluate_agents(model, env, evaluation[1], deterministic=True)]
        evaluate = lambda model: float(np.mean(final(model)))
    hook, out = Curve(evaluate, max(1, budget // family.get("curve_points", evaluation[2]))), {"final": None, "error": None}
    try:
        kwargs = dict(n_agents=family["n_agents"], env_kwargs=env_kwargs, local_steps=local_steps, seed=seed)
        model = FederatedPG("MlpPolicy", family["env_id"], **kwargs, **method, **common).learn(budget, callback=hook)
        out |= {"final": final(model), "steps": int(model.num_timesteps)}
    except (ValueError, FloatingPointError) as error:  # a run that blew up (NaN/inf, unstable gain): recorded
        out["error"] = str(error).splitlines()[0]
    return {**out, "curve": hook.curve, "rounds": hook.metrics, "seconds": time.perf_counter() - start}


def common(s: Settings, name: str) -> dict[str, Any]:
    """:return: the family's hyperparameters (every method's): the heterogeneity benchmark's, or sampled LQR's"""
    return het.QUICK_COMMON if s.scale == "quick" else nr.LQR_COMMON if name == "lqr" else het.COMMON


def run(s: Settings, name: str, local_steps: int, method: str, seed: int) -> Run:
    config = dict(family=FAMILIES[s.scale][name], heterogeneity=1.0, local_steps=local_steps)
    config |= dict(method=resolved(method, local_steps), seed=seed, common=common(s, name))
    config["evaluation"] = [nr.EVAL_ENVS_PER_AGENT, nr.EVAL_EPISODES, s.curve_points]
    return Run(train, config, f"{name}_H{local_steps}_{method}_s{seed}")


def methods_at(s: Settings, local_steps: int) -> list[str]:
    return [m for m in s.methods if local_steps in (METHODS[m][2] or (local_steps,))]


def runs(s: Settings) -> list[Run]:
    if "fedavg" not in s.methods:
        raise SystemExit("noise_correction: every method is measured against fedavg: keep it in --methods")
    return [run(s, f, h, m, i) for f in s.families for h in s.hs for i in s.seeds for m in methods_at(s, h)]


def reference(name: str) -> dict[str, Any] | None:
    """:return: the heterogeneity benchmark's central PG and random ``J̄`` at ``h = 1``, if it has them (central PG's
    seed mean, whether or not another method is level with it or above)"""
    path = nr.RESULTS / "heterogeneity.json"
    cell = json.loads(path.read_text())["summary"].get(name, {}).get("1.0") if path.exists() else None
    if cell is None or "central" not in cell["methods"]:
        return None
    return {
        "j_ref": float(cell["methods"]["central"]["mean"]),
        "j_random": float(cell["j_random"]),
        "label": "central PG (H = 1)",
    }


def round_mean(rs: list[dict[str, Any]], key: str) -> float | None:
    """:return: a round metric averaged over each run's rounds, then over the runs (``None``: never measured)"""
    values = [v for r in rs if (v := [x[key] for x in r["rounds"] if key in x]) and np.isfinite(np.mean(v))]
    return float(np.mean([np.mean(v) for v in values])) if values else None


def summarise(cell: dict[str, list[dict[str, Any]]], lqr: bool, ref: dict[str, Any] | None) -> dict[str, Any]:
    """Per method: the final value's mean ± std, the noise metrics, the verdict against FedAvg-PG; the scores."""
    methods: dict[str, dict[str, Any]] = {}
    for method, rs in cell.items():
        finals = [float("nan") if r["final"] is None else float(np.mean(r["final"])) for r in rs]
        diverged = sum(not np.isfinite(v) for v in finals)
        mean, std = (float("nan"), float("nan")) if diverged else nr.mean_std(finals)
        m = methods[method] = dict(finals=finals, mean=mean, std=std, diverged=diverged)
        for key in ("snr", "beta", "gain"):
            m[key] = round_mean(rs, f"fed/correction_{key}")
        m |= {key: round_mean(rs, f"fed/{key}") for key in ("anchor_noise", "drift")}
        m["rounds"] = float(np.mean([len(r["rounds"]) for r in rs]))
        m["steps"] = float(np.mean([r["rounds"][-1]["steps"] for r in rs if r["rounds"]] or [np.nan]))
    base = methods["fedavg"]
    for m in methods.values():
        diff, spread = (-1.0 if lqr else 1.0) * (m["mean"] - base["mean"]), m["std"] + base["std"]
        m["minus_fedavg"], m["spread"] = float(diff), float(spread)
        if not (np.isfinite(diff) and np.isfinite(spread)):
            m["verdict"] = "diverged" if m["diverged"] or base["diverged"] else "—"
        else:
            m["verdict"] = "yes" if diff > spread else ("worse" if -diff > spread else "no")
    if lqr:
        return {"methods": methods}
    # without the heterogeneity benchmark's reference (CartPole: positive returns): J / the best seed-mean at this H
    best = max(m["mean"] for m in methods.values() if np.isfinite(m["mean"]))
    ref = ref or {"j_ref": best, "j_random": 0.0, "label": "best method at this H"}
    scores = {k: (m["mean"] - ref["j_random"]) / (ref["j_ref"] - ref["j_random"]) for k, m in methods.items()}
    return {"methods": methods, "reference": ref, "score": {k: v if np.isfinite(v) else None for k, v in scores.items()}}


NOTES = (
    "J̄ = mean over agents of each agent's return under its own reward (deterministic policy, {episodes} episodes per "
    "agent), mean ± std (ddof = 1) over the seeds; LQR: C̄(K)/C̄* of the deterministic gain (lower is better). score = "
    "(J̄ − J_random) / (J_ref − J_random) ({refs}). − FedAvg = difference of the means in the better direction; spread "
    "= sum of the two 3-seed stds; **worse** = below FedAvg-PG by more than the spread. SNR = `fed/correction_snr` "
    "(median over agents of the running signal-to-noise ratio of g − a_i), gain K = `fed/correction_gain` (mean Kalman "
    "gain of the filtered correction: 1 = this round's g − a_i alone), anchor noise = `fed/anchor_noise` (mean √tr Var "
    "a_i), each averaged over the run's rounds and the seeds (measured for every corrected method).\n"
    "Budgets (all agents together, anchor batches included): {budgets}; h = 1.0. A run stops after the first whole "
    "round that reaches the budget, so the env steps actually used (column) can exceed it by up to one round. The extra "
    "anchor batches (default: (H/10)², previous default: H // 5) are counted in the env steps (fewer rounds for the "
    "same budget).\nCompute (sum of the cached runs' training and evaluation time, one torch thread): {cost} ({machine}, "
    "{cpus} cores, shared with other jobs while measured).\n"
)


def markdown(summary: dict[str, Any], families: dict[str, Any], run_seconds: dict[str, float], machine: dict) -> str:
    rows = [["family", "H", "method", "final J̄ (mean ± std)", "score", "rounds", "env steps", "mean SNR", "mean gain K"]]
    rows[0] += ["mean anchor noise", "− FedAvg (spread)", "beats FedAvg by > spread?"]
    fmt = lambda v, d=2: "—" if v is None or not np.isfinite(v) else f"{v:.{d}f}"
    for name, per_h in summary.items():
        for local_steps, cell in per_h.items():
            for method, m in cell["methods"].items():
                d, value, score = 3 if name == "lqr" else 1, f"diverged ({m['diverged']}/{len(m['finals'])})", "—"
                if not m["diverged"]:
                    value = f"{m['mean']:.{d}f} ± {m['std']:.{d}f}"
                    score = "—" if cell.get("score") is None else f"{cell['score'][method]:.0%}"
                rows.append([name, local_steps, METHODS[method][0], value, score])
                rows[-1] += [f"{m['rounds']:.0f}", f"{m['steps'] / 1000:.0f}k", fmt(m["snr"]), fmt(m["gain"])]
                verdict = {"yes": "**yes**", "worse": "**worse**"}.get(m["verdict"], m["verdict"])
                compare = [f"{fmt(m['minus_fedavg'], d)} ({fmt(m['spread'], d)})", verdict]
                rows[-1] += [fmt(m["anchor_noise"], 1), *(["—", "—"] if method == "fedavg" else compare)]
    refs = []
    for name, ref in ((name, next(iter(per_h.values())).get("reference")) for name, per_h in summary.items()):
        if ref and ref["label"] == "best method at this H":
            refs.append(f"{name}: J̄ / best seed-mean at the same H")
        elif ref:
            refs.append(f"{name}: J_ref = {ref['j_ref']:.1f} ({ref['label']}), J_random = {ref['j_random']:.1f}")
    budgets = [
        f"{name} {f['budget']:,} env steps"
        + "".join(f" ({v:,} at H = {h})" for h, v in f.get("budget_at", {}).items())
        + f" (N = {f['n_agents']})"
        for name, f in families.items()
    ]
    cost = ", ".join(f"{name} {s / 60:.1f} min" for name, s in run_seconds.items())
    episodes, refs_text = nr.EVAL_ENVS_PER_AGENT * nr.EVAL_EPISODES, "; ".join(refs) or "no reference"
    notes = NOTES.format(episodes=episodes, refs=refs_text, budgets=", ".join(budgets), cost=cost, **machine)
    return "\n".join([*table(rows, "lrlrrrrrrrrl"), "", notes])


def curve_x(run: dict[str, Any], length: int, axis: str) -> list[float]:
    steps = [p[0] for p in run["curve"][:length]]
    ends = np.array([r["steps"] for r in run["rounds"]])  # env steps after each round
    rounds = [float(np.searchsorted(ends, step, side="left") + (step > 0)) if step else 0.0 for step in steps]
    return steps if axis == "steps" else rounds


def figure(curves: dict[str, Any], references: dict[str, Any], axis: str) -> Any:
    import matplotlib.pyplot as plt

    from sb3_fedpg.common.plotting import Series, aggregate_values, draw_panel

    panels = [(name, h) for name, per_h in curves.items() for h in per_h]
    cols, rows = min(3, len(panels)), -(-len(panels) // 3)
    fig, axes = plt.subplots(rows, cols, figsize=(5.4 * cols, 3.9 * rows), squeeze=False)
    for ax, (name, local_steps) in zip(axes.flat, panels, strict=False):
        series = []
        for method, runs in curves[name][local_steps].items():
            if good := [r for r in runs if r["final"] is not None and r["curve"]]:  # cut to the shortest, at the mean x
                length = min(len(r["curve"]) for r in good)
                steps = np.array([curve_x(r, length, axis) for r in good]).mean(0)
                values = np.array([[p[1] for p in r["curve"][:length]] for r in good])
                label, color = f"{METHODS[method][0]} ({len(good)} seeds)", METHODS[method][1]
                series.append(Series(label, aggregate_values(steps, values, ddof=1), color))  # std over seeds: ddof = 1
        if name == "lqr":
            ax.axhline(1.0, color="k", ls="--", lw=1, label="C̄* (optimal)")
        elif name in references:
            ax.axhline(references[name]["j_ref"], color="k", ls="--", lw=1, label=references[name]["label"])
        ylabel = "C̄(K) / C̄*  (lower is better)" if name == "lqr" else "J̄ (mean return over agents)"
        xlabel = "env steps (all agents)" if axis == "steps" else "communication rounds"
        draw_panel(ax, series, f"{name}, h = 1.0, H = {local_steps}", ylabel, xlabel, steps=axis == "steps", legend=None)
    for ax in axes.flat[len(panels) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="lower right")
    return fig


def report(ctx: Context) -> Report:
    s, summary, curves, references, run_seconds = ctx.settings, {}, {}, {}, {}
    for name in s.families:
        ref = references[name] = None if s.quick or name == "lqr" else reference(name)
        for h in s.hs:
            cell: dict[str, list[Any]] = {m: [] for m in methods_at(s, h)}
            for seed in s.seeds:
                for method, rs in cell.items():
                    rs.append(ctx.results[run(s, name, h, method, seed)])
                    run_seconds[name] = run_seconds.get(name, 0.0) + rs[-1]["seconds"]
            summary.setdefault(name, {})[str(h)] = summarise(cell, name == "lqr", ref)
            curves.setdefault(name, {})[str(h)] = cell
    references = {name: ref for name, ref in references.items() if ref}
    families, machine = {name: FAMILIES[s.scale][name] for name in summary}, ctx.sweep.machine
    payload = dict(families=families, common={name: common(s, name) for name in summary})
    payload |= dict(methods={m: METHODS[m][3] for m in s.methods}, seeds=s.seeds, h=1.0, summary=summary, partial=False)
    payload |= dict(machine={k: machine[k] for k in ("platform", "python", "cpus")}, run_seconds=run_seconds, quick=s.quick)
    rounds = {"noise_correction_rounds.png": figure(curves, references, "rounds")}
    md = markdown(summary, families, run_seconds, machine)
    return Report(payload, figure(curves, references, "steps"), md, extra_figures=rounds, dpi=100)


STUDY = Study(
    "noise_correction",
    __doc__,
    dict(
        families=list(FAMILIES["full"]), hs=[50, 20, 5], methods=list(METHODS), seeds=[0, 1, 2], curve_points=20, scale="full"
    ),
    runs,
    report,
    quick=dict(families=["pointmass"], hs=[20], seeds=[0, 1], curve_points=3, scale="quick"),
)
main = STUDY.main

if __name__ == "__main__":
    main()
