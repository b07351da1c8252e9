"""
Why central SB3 PPO does not learn the HalfCheetah family (issue 13's comparison): the same runs at heterogeneity 0.

At ``h = 1`` the four agents want to run at 0.5, 1.5, 2.5 and 3.5 (``envs/mujoco.py``). Central PPO pools their
envs with one critic that cannot tell them apart (the observations carry no agent id), so its advantages mix each
agent's reward offset (up to ±1.5 per step, summed by GAE) into the signal of the actions; FederatedPPO's local
critics and per-agent advantage normalisation do not. At ``h = 0`` every agent wants 2: if central PPO, with the same
settings, learns there, the heterogeneity of the rewards — not the settings, the network or the budget — is what
stops it at ``h = 1``.

Same family, settings, budget (1M env steps), evaluation and seeds as ``ppo_comparison.py``; only ``h`` differs. The
``h = 1`` runs are read from that benchmark's cache. Each ``h = 0`` run is the comparison's run at ``h = 0``
(:func:`ppo_comparison.run`), cached by the harness under ``benchmarks/cache/ppo_heterogeneity_probe/``.

    python benchmarks/ppo_heterogeneity_probe.py --sweep --methods ppo --seeds 0 1     # ~20 min CPU per PPO run
    python benchmarks/ppo_heterogeneity_probe.py                                       # report from the cache
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from typing import Any

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import ppo_comparison as pc  # noqa: E402
from harness import Cache, Run  # noqa: E402
from harness.runner import run_missing  # noqa: E402

from sb3_fedpg.common.cli import ArgumentParser  # noqa: E402

FAMILY = "halfcheetah"
CACHE = HERE / "cache" / "ppo_heterogeneity_probe"
OUTPUT = HERE / "results" / "ppo_heterogeneity_probe"
LABELS = {"ppo": "SB3 PPO (central, pooled)", "fedppo": "FederatedPPO"}


def standing_still(heterogeneity: float) -> float:
    """:return: ``J`` of the zero action: each agent loses its target speed every step (control cost 0)"""
    import gymnasium as gym
    from sb3_fedpg.envs import HalfCheetahVelocityReward

    targets = HalfCheetahVelocityReward(pc.FAMILIES[FAMILY]["n_agents"], heterogeneity).targets.astype(float)
    return -gym.spec("HalfCheetah-v5").max_episode_steps * float(np.abs(targets).mean())


def bound(heterogeneity: float) -> float:
    """:return: the best ``J`` of a policy shared by all agents (:func:`ppo_comparison.shared_policy_bound`)"""
    return pc.shared_policy_bound(pc.FAMILIES[FAMILY], heterogeneity)


def run(method: str, heterogeneity: float, seed: int) -> Run:
    """:return: the comparison's run of ``method`` on the family at ``heterogeneity``"""
    return pc.run(FAMILY, pc.FAMILIES[FAMILY], method, seed, heterogeneity)


def cache(heterogeneity: float) -> Cache:
    """:return: where the runs at ``heterogeneity`` are cached (``h = 1``: ``ppo_comparison``'s own)"""
    return Cache(HERE / "cache" / "ppo_comparison") if heterogeneity == pc.HETEROGENEITY else Cache(CACHE)


def load(method: str, heterogeneity: float, seed: int) -> dict[str, Any] | None:
    """:return: the cached run, or ``None``"""
    found = cache(heterogeneity)
    return found.load(run(method, heterogeneity, seed)) if found.has(run(method, heterogeneity, seed)) else None


def sweep(methods: list[str], seeds: list[int]) -> None:
    run_missing([run(method, 0.0, seed) for method in methods for seed in seeds], Cache(CACHE), desc="h = 0")


def report(methods: list[str], seeds: list[int]) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, curves = [], {}
    for heterogeneity in (0.0, pc.HETEROGENEITY):
        still, best = standing_still(heterogeneity), bound(heterogeneity)
        for method in methods:
            runs = {s: r for s in seeds if (r := load(method, heterogeneity, s)) is not None}
            if not runs:
                continue
            finals = {s: float(r["final_global"]) for s, r in runs.items()}
            rows.append(
                {
                    "heterogeneity": heterogeneity,
                    "method": method,
                    "seeds": sorted(runs),
                    "final_J": finals,
                    "standing_still": still,
                    "shared_policy_bound": best,
                    "fraction_of_gap": {s: (j - still) / (best - still) for s, j in finals.items()},
                }
            )
            curves[(heterogeneity, method)] = runs
    result = {"family": FAMILY, "rows": rows}
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")

    lines = [
        "| h | method | seeds | final J per seed | standing still | shared-policy bound | share of the gap closed, per seed |",
        "|---:|---|---|---|---:|---:|---|",
    ]
    for row in rows:
        finals = ", ".join(f"{row['final_J'][s]:.0f}" for s in row["seeds"])
        fractions = ", ".join(f"{100 * row['fraction_of_gap'][s]:.0f} %" for s in row["seeds"])
        lines.append(
            f"| {row['heterogeneity']:g} | {LABELS[row['method']]} | {', '.join(map(str, row['seeds']))} | {finals} "
            f"| {row['standing_still']:.0f} | {row['shared_policy_bound']:.0f} | {fractions} |"
        )
    lines += [
        "",
        "Final J: mean return per 1000-step episode over the agents after 1M env steps (the comparison's evaluation). "
        "Share of the gap: (J − standing still) / (bound − standing still), 0 % for a cheetah that stands, 100 % for "
        "the best policy all agents can share (at h = 0 every agent wants 2, so the bound is 0 minus control costs).",
    ]
    OUTPUT.with_suffix(".md").write_text("\n".join(lines) + "\n")

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=False)
    for ax, heterogeneity in zip(axes, (0.0, pc.HETEROGENEITY), strict=True):
        for method in methods:
            for seed, run in curves.get((heterogeneity, method), {}).items():
                ax.plot(
                    run["timesteps"],
                    run["global_return"],
                    color="C0" if method == "ppo" else "C1",
                    alpha=0.8,
                    label=LABELS[method] if seed == min(curves[(heterogeneity, method)]) else None,
                )
        ax.axhline(standing_still(heterogeneity), color="grey", ls=":", label="standing still")
        ax.axhline(bound(heterogeneity), color="black", ls="--", label="shared-policy bound")
        ax.set(title=f"HeteroHalfCheetah, h = {heterogeneity:g}", xlabel="env steps", ylabel="J (mean over agents)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUTPUT.with_suffix(".png"), dpi=110)
    print("\n".join(lines))
    return result


def main() -> None:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", action="store_true", help="run the missing h = 0 runs first")
    parser.add_argument("--methods", nargs="+", default=["ppo", "fedppo"], choices=sorted(LABELS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = parser.parse_args()
    if args.sweep:
        sweep(args.methods, args.seeds)
    report(["ppo", "fedppo"], [0, 1, 2])


if __name__ == "__main__":
    main()
