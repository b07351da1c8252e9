"""
Breakdown points of the server aggregators, measured.

``n = 11`` agents; ``f = 0 … 10`` of them are attackers and the other ``n − f`` send honest vectors
(``N(1, 0.1²)`` in 16 dimensions). Three attacks, each at magnitudes ``1e3`` and ``1e6``:

- ``collude``: every attacker sends the same vector ``magnitude · 1`` (one point, the hardest for medians);
- ``sign_flip``: every attacker sends ``−magnitude · μ / ‖μ‖`` (``μ`` the honest mean);
- ``scatter``: every attacker sends an independent random direction of norm ``magnitude``.

The error is ``‖aggregate − μ‖`` divided by the honest spread ``σ·√dim = 0.4`` (the typical
distance of an honest vector to the honest mean), the worst over the attacks and 5 seeds. An
aggregator *tolerates* ``f`` attackers when its error at ``1e6`` stays below 10 spreads and does not
grow with the magnitude (it is within 1 % + 1 spread of the error at ``1e3``) for every ``f' ≤ f``;
the largest such ``f`` is its measured breakdown point, printed next to the documented one
(:func:`sb3_fedpg.common.aggregators.tolerated_attackers`).

Writes ``benchmarks/results/aggregator_breakdown.{json,md,png}``. Run:
``python benchmarks/aggregator_breakdown.py`` (a few seconds).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from harness import Context, Report, Run, Settings, Study, table

from sb3_fedpg.common.aggregators import AGGREGATORS, make_aggregator, tolerated_attackers


def attacked(
    n_agents: int, dim: int, sigma: float, f: int, magnitude: float, attack: str, seed: int
) -> tuple[np.ndarray, ...]:
    """:return: the honest vectors and all ``n_agents`` vectors (attackers last)"""
    rng = np.random.default_rng(seed)
    honest = rng.normal(1.0, sigma, size=(n_agents - f, dim))
    mu = honest.mean(0)
    if attack == "collude":
        bad = np.full((f, dim), magnitude)
    elif attack == "sign_flip":
        bad = np.repeat((-magnitude * mu / np.linalg.norm(mu))[None], f, axis=0)
    else:
        directions = rng.normal(size=(f, dim))
        bad = magnitude * directions / np.linalg.norm(directions, axis=1, keepdims=True)
    return honest, np.concatenate([honest, bad])


def error(name: str, f: int, magnitude: float, n_agents: int, dim: int, sigma: float, attacks: list, seeds: int) -> float:
    """:return: the worst normalised error over attacks and seeds"""
    worst = 0.0
    for attack in attacks:
        for seed in range(seeds):
            honest, stacked = attacked(n_agents, dim, sigma, f, magnitude, attack, seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                out = make_aggregator(name)(stacked)
            worst = max(worst, float(np.linalg.norm(out - honest.mean(0)) / (sigma * np.sqrt(dim))))
    return worst


def run(s: Settings, name: str, f: int, magnitude: float) -> Run:
    config = dict(name=name, f=f, magnitude=magnitude, n_agents=s.n_agents, dim=s.dim, sigma=s.sigma, attacks=s.attacks)
    return Run(error, config | {"seeds": s.seeds}, f"{name}_{magnitude:.0e}_f{f}")


def runs(s: Settings) -> list[Run]:
    return [run(s, name, f, m) for name in AGGREGATORS for m in s.magnitudes for f in range(s.n_agents)]


def report(ctx: Context) -> Report:
    """Errors per aggregator, magnitude and number of attackers, the breakdown points, the table and the figure."""
    import matplotlib.pyplot as plt

    s, n = ctx.settings, ctx.settings.n_agents
    payload: dict = dict(n_agents=n, dim=s.dim, attacks=s.attacks, seeds=s.seeds, bounded_below=s.bounded, aggregators={})
    for name in AGGREGATORS:
        errors = {f"{m:.0e}": [ctx.results[run(s, name, f, m)] for f in range(n)] for m in s.magnitudes}
        low, high = errors[f"{s.magnitudes[0]:.0e}"], errors[f"{s.magnitudes[-1]:.0e}"]
        measured = -1
        for f in range(n):
            if high[f] < s.bounded and high[f] <= low[f] * 1.01 + 1.0:
                measured = f
            else:
                break
        documented = tolerated_attackers(make_aggregator(name), n)
        payload["aggregators"][name] = dict(errors=errors, measured_breakdown=measured, documented_breakdown=documented)
    rows = [["aggregator", "tolerated f (measured)", "documented", *(f"f={f}" for f in range(n))]]
    for name, entry in payload["aggregators"].items():
        errors = (f"{e:.2g}" for e in entry["errors"]["1e+06"])
        rows.append([name, entry["measured_breakdown"], entry["documented_breakdown"], *errors])
    head = (
        f"Error ‖aggregate − honest mean‖ / honest spread (σ√d), worst of {len(s.attacks)} attacks x {s.seeds} seeds, "
        f"attackers at magnitude 1e6, n = {n}:"
    )
    fig, axes = plt.subplots(1, len(s.magnitudes), figsize=(11, 4), sharey=True)
    for ax, magnitude in zip(axes, s.magnitudes, strict=True):
        for name, entry in payload["aggregators"].items():
            ax.semilogy(range(n), entry["errors"][f"{magnitude:.0e}"], marker="o", label=name)
        ax.axhline(s.bounded, color="grey", linestyle=":", linewidth=1)
        ax.set_title(f"attackers at magnitude {magnitude:.0e} (n = {n})")
        ax.set_xlabel("number of attackers f")
    axes[0].set_ylabel("error / honest spread (worst case)")
    axes[0].legend()
    markdown = "\n".join([head, "", *table(rows, "lrr" + "r" * n)]) + "\n"
    return Report(payload, fig, markdown, indent=2, final_newline=True)


STUDY = Study(
    "aggregator_breakdown",
    __doc__,
    dict(n_agents=11, dim=16, sigma=0.1, magnitudes=[1e3, 1e6], attacks=["collude", "sign_flip", "scatter"], seeds=5)
    | dict(bounded=10.0),
    runs,
    report,
    quick=dict(seeds=2),
)
main = STUDY.main

if __name__ == "__main__":
    main()
