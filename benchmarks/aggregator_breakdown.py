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

import json
import pathlib
import warnings
from typing import Any

import numpy as np

from sb3_fedpg.common.aggregators import AGGREGATORS, make_aggregator, tolerated_attackers

RESULTS = pathlib.Path(__file__).parent / "results"
N_AGENTS = 11
DIM = 16
SIGMA = 0.1
SPREAD = SIGMA * np.sqrt(DIM)
MAGNITUDES = (1e3, 1e6)
ATTACKS = ("collude", "sign_flip", "scatter")
SEEDS = range(5)
BOUNDED = 10.0  # honest spreads


def attacked(f: int, magnitude: float, attack: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """:return: the honest vectors and all ``N_AGENTS`` vectors (attackers last)"""
    rng = np.random.default_rng(seed)
    honest = rng.normal(1.0, SIGMA, size=(N_AGENTS - f, DIM))
    mu = honest.mean(0)
    if attack == "collude":
        bad = np.full((f, DIM), magnitude)
    elif attack == "sign_flip":
        bad = np.repeat((-magnitude * mu / np.linalg.norm(mu))[None], f, axis=0)
    else:
        directions = rng.normal(size=(f, DIM))
        bad = magnitude * directions / np.linalg.norm(directions, axis=1, keepdims=True)
    return honest, np.concatenate([honest, bad])


def error(name: str, f: int, magnitude: float) -> float:
    """:return: the worst normalised error over attacks and seeds"""
    worst = 0.0
    for attack in ATTACKS:
        for seed in SEEDS:
            honest, stacked = attacked(f, magnitude, attack, seed)
            mu = honest.mean(0)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                out = make_aggregator(name)(stacked)
            worst = max(worst, float(np.linalg.norm(out - mu) / SPREAD))
    return worst


def measure() -> dict[str, Any]:
    """:return: errors per aggregator, magnitude and number of attackers, and the breakdown points"""
    payload: dict[str, Any] = {
        "n_agents": N_AGENTS,
        "dim": DIM,
        "attacks": list(ATTACKS),
        "seeds": len(SEEDS),
        "bounded_below": BOUNDED,
        "aggregators": {},
    }
    for name in AGGREGATORS:
        errors = {f"{m:.0e}": [error(name, f, m) for f in range(N_AGENTS)] for m in MAGNITUDES}
        low, high = errors[f"{MAGNITUDES[0]:.0e}"], errors[f"{MAGNITUDES[-1]:.0e}"]
        measured = -1
        for f in range(N_AGENTS):
            if high[f] < BOUNDED and high[f] <= low[f] * 1.01 + 1.0:
                measured = f
            else:
                break
        payload["aggregators"][name] = {
            "errors": errors,
            "measured_breakdown": measured,
            "documented_breakdown": tolerated_attackers(make_aggregator(name), N_AGENTS),
        }
    return payload


def markdown_table(payload: dict[str, Any]) -> str:
    """:return: the results as a Markdown table (error at 1e6 per number of attackers)"""
    n = payload["n_agents"]
    head = "| aggregator | tolerated f (measured) | documented | " + " | ".join(f"f={f}" for f in range(n)) + " |"
    lines = [
        f"Error ‖aggregate − honest mean‖ / honest spread (σ√d), worst of {len(payload['attacks'])} attacks x "
        f"{payload['seeds']} seeds, attackers at magnitude 1e6, n = {n}:",
        "",
        head,
        "|---|---:|---:|" + "---:|" * n,
    ]
    for name, entry in payload["aggregators"].items():
        cells = " | ".join(f"{e:.2g}" for e in entry["errors"]["1e+06"])
        lines.append(f"| {name} | {entry['measured_breakdown']} | {entry['documented_breakdown']} | {cells} |")
    return "\n".join(lines) + "\n"


def main(output: pathlib.Path = RESULTS) -> dict[str, Any]:
    """Measure, write the JSON, Markdown and PNG results, print the table."""
    payload = measure()
    output.mkdir(parents=True, exist_ok=True)
    (output / "aggregator_breakdown.json").write_text(json.dumps(payload, indent=2) + "\n")
    (output / "aggregator_breakdown.md").write_text(markdown_table(payload))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(MAGNITUDES), figsize=(11, 4), sharey=True)
    for ax, magnitude in zip(axes, MAGNITUDES, strict=True):
        for name, entry in payload["aggregators"].items():
            ax.semilogy(range(N_AGENTS), entry["errors"][f"{magnitude:.0e}"], marker="o", label=name)
        ax.axhline(BOUNDED, color="grey", linestyle=":", linewidth=1)
        ax.set_title(f"attackers at magnitude {magnitude:.0e} (n = {N_AGENTS})")
        ax.set_xlabel("number of attackers f")
    axes[0].set_ylabel("error / honest spread (worst case)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(output / "aggregator_breakdown.png", dpi=120)
    print((output / "aggregator_breakdown.md").read_text())
    return payload


if __name__ == "__main__":
    from sb3_fedpg.common.cli import ArgumentParser

    ArgumentParser(description=__doc__).parse_args()  # --help, --version; no options
    main()
