"""
Summary tables of the five tabular benchmarks, generated from their committed JSON.

Writes ``benchmarks/results/tabular_acceptance.md`` and ``tabular_claims.md``; the docs and
README pull them in with ``python benchmarks/update_readme.py`` (no number typed by hand).
Run after the tabular benchmarks: ``python benchmarks/tabular_report.py``.
"""

from __future__ import annotations

import json
import math
import pathlib

RESULTS = pathlib.Path(__file__).parent / "results"


def _load(name: str, results: pathlib.Path) -> dict:
    return json.loads((results / f"{name}.json").read_text())


def _fmt(value: float | str) -> str:
    value = float(value)
    if math.isinf(value):
        return "never"
    return f"{value:.2g}" if value < 1e-2 or value >= 1e3 else f"{value:.3g}"


def acceptance_table(results: pathlib.Path = RESULTS) -> str:
    bias = _load("tabular_bias", results)
    acc = bias["acceptance"]
    seeds = bias["seeds"]
    lines = ["| criterion | " + " | ".join(f"seed {s}" for s in seeds) + " |", "|---|" + "---|" * len(seeds)]
    for (name, values), met in zip(acc["per_seed"].items(), acc["met_per_seed"].values(), strict=True):
        cells = [f"{_fmt(v)}" + ("" if ok else " **(missed)**") for v, ok in zip(values, met, strict=True)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    timing = bias["timing"]
    lines += [
        "",
        f"Exact-gradient speed: {timing['rounds']:,} rounds, N = {timing['n_agents']}, H = {timing['local_steps']}, "
        f"S = {timing['n_states']}: {timing['seconds']:.1f} s.",
    ]
    return "\n".join(lines) + "\n"


def claims_table(results: pathlib.Path = RESULTS) -> str:
    bias = _load("tabular_bias", results)
    het = _load("tabular_heterogeneity", results)
    speed = _load("tabular_speedup", results)
    comm = _load("tabular_communication", results)
    trunc = _load("tabular_truncation", results)
    lines = [
        "**Bias** (median final gap over seeds, 300 rounds):",
        "",
        "| τ | H | Fast-FedPG | FedAvg-PG |",
        "|---|---:|---:|---:|",
    ]
    for key, gaps in bias["final_gap_per_seed"].items():
        tau, h, algo = key.split("/")
        if algo != "fast_fedpg":
            continue
        fed = bias["final_gap_per_seed"][f"{tau}/{h}/fedavg_pg"]
        med = lambda xs: sorted(xs)[len(xs) // 2]
        lines.append(f"| {tau[4:]} | {h[2:]} | {_fmt(med(gaps))} | {_fmt(med(fed))} |")
    lines += ["", "**Heterogeneity** (median final gap, H = 10):", ""]
    lines += ["| heterogeneity | " + " | ".join(str(x) for x in het["levels"]) + " |", "|---|" + "---:|" * len(het["levels"])]
    for key, values in het["median_final_gap"].items():
        lines.append(f"| {key} | " + " | ".join(_fmt(v) for v in values) + " |")
    lines += ["", "**Linear speed-up** (error vs N, log-log slope; theory −1):", ""]
    lines += ["| agents | fitted slope | slope per seed |", "|---|---:|---|"]
    for kind in ("homogeneous", "heterogeneous"):
        block = speed[kind]
        per_seed = ", ".join(f"{s:.2f}" for s in block["slope_per_seed"])
        lines.append(f"| {kind}, N = {block['agents'][0]}…{block['agents'][-1]} | **{block['slope']:.2f}** | {per_seed} |")
    lines += [
        "",
        f"**Communication** (median rounds to reach a gap, τ = {comm['tau']}; 'never' = not within {comm['max_rounds']}):",
    ]
    lines += ["", "| target / algorithm | " + " | ".join(f"H = {h}" for h in comm["local_steps"]) + " |"]
    lines += ["|---|" + "---:|" * len(comm["local_steps"])]
    for key, values in comm["median_rounds_to_target"].items():
        lines.append(f"| {key} | " + " | ".join(_fmt(v) for v in values) + " |")
    horizons = trunc["settings"]["horizons"]
    lines += ["", "**Truncation** (median final gap with the expected K-truncated gradient, H = 10, τ = 0.1):", ""]
    lines += ["| K | " + " | ".join(str(k) for k in horizons) + " | exact |", "|---|" + "---:|" * (len(horizons) + 1)]
    for algo, per_k in trunc["expected_truncated_gradient_final_gap"].items():
        exact = trunc["exact_gradient_final_gap"][algo]
        med = lambda xs: sorted(xs)[len(xs) // 2]
        lines.append(f"| {algo} | " + " | ".join(_fmt(med(g)) for g in per_k) + f" | {_fmt(med(exact))} |")
    return "\n".join(lines) + "\n"


def main(results: pathlib.Path = RESULTS) -> None:
    (results / "tabular_acceptance.md").write_text(acceptance_table(results))
    (results / "tabular_claims.md").write_text(claims_table(results))


if __name__ == "__main__":
    from sb3_fedpg.common.cli import ArgumentParser

    ArgumentParser(description=__doc__).parse_args()  # --help, --version; no options
    main()
