"""
The benefit of FederatedPPO's correction as a function of the local epochs (issue 30, item 5).

More epochs per round mean more local drift towards each agent's own optimum, which is what the correction cancels;
so its benefit should grow with ``n_epochs``. Two families where the agents disagree (the point mass and the arm, as
in ``ppo_comparison.py``: same federations, budgets, evaluation and hyperparameters), ``n_epochs`` in 1, 5, 10, 20,
FederatedPPO without correction, with the surrogate correction, and with the SNR-damped surrogate correction, 3 seeds.
Every run is one of ``ppo_comparison.py``'s (its run, cache key and evaluation), with ``n_epochs`` fixed by the method.

    python benchmarks/ppo_epochs.py --sweep   # run the missing runs (cached one by one in benchmarks/cache/ppo_epochs/)
    python benchmarks/ppo_epochs.py           # report: benchmarks/results/ppo_epochs.{json,md,png}

The benefit of a correction is its final ``J`` minus the uncorrected final ``J`` at the same epochs (mean over seeds);
"beyond the spread" compares mean − std with mean + std, as the acceptance of the comparison does.
"""

from __future__ import annotations

import json
import pathlib
import sys
from typing import Any

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import ppo_comparison as pc

from sb3_fedpg.common.cli import ArgumentParser

ROOT = pathlib.Path(__file__).resolve().parents[1]
EPOCHS = (1, 5, 10, 20)
CORRECTIONS = {
    "none": {"correction": False, "variance_control": "none"},
    "surrogate": {"correction": "surrogate", "variance_control": "none"},
    "snr": {"correction": "surrogate", "variance_control": "snr_damping"},
}
LABELS = {"none": "no correction", "surrogate": "surrogate correction", "snr": "surrogate correction, SNR-damped"}
FAMILY_NAMES = ("pointmass", "arm")
SEEDS = [0, 1, 2]

for _epochs in EPOCHS:  # one comparison method per (correction, epochs): its n_epochs is part of its cache key
    for _name, _fixed in CORRECTIONS.items():
        _method = f"fedppo_{_name}_e{_epochs}"
        pc.METHODS[_method] = pc.MethodSpec("fedppo", {**_fixed, "n_epochs": _epochs})
        pc.LABELS[_method] = f"FederatedPPO, {LABELS[_name]}, {_epochs} epochs"
METHODS = [f"fedppo_{name}_e{epochs}" for epochs in EPOCHS for name in CORRECTIONS]
# The study's methods run on its families only (methods_of lists a family's methods; these are not the comparison's).
pc.OPTIONAL_METHODS = (*pc.OPTIONAL_METHODS, *METHODS)
FAMILIES = {name: {**pc.FAMILIES[name], "extra_methods": METHODS} for name in FAMILY_NAMES}


def summarize(cache: pathlib.Path) -> dict[str, Any]:
    """:return: per family and epochs, each correction's final J (mean, std, seeds) and its benefit over none"""
    runs, _ = pc.load_runs(cache, FAMILIES, SEEDS)
    out: dict[str, Any] = {}
    for family in FAMILY_NAMES:
        out[family] = {}
        for epochs in EPOCHS:
            cells = {}
            for name in CORRECTIONS:
                finals = [
                    r["final_global"] for r in runs if r["family"] == family and r["method"] == f"fedppo_{name}_e{epochs}"
                ]
                cells[name] = {
                    "seeds": len(finals),
                    "mean": float(np.mean(finals)) if finals else None,
                    "std": float(np.std(finals)) if finals else None,
                }
            base = cells["none"]
            for name in ("surrogate", "snr"):
                cell = cells[name]
                if cell["seeds"] == len(SEEDS) and base["seeds"] == len(SEEDS):
                    cell["benefit"] = cell["mean"] - base["mean"]
                    cell["better"] = cell["mean"] - cell["std"] > base["mean"] + base["std"]
                    cell["worse"] = cell["mean"] + cell["std"] < base["mean"] - base["std"]
            out[family][epochs] = cells
    return out


def markdown(summary: dict[str, Any]) -> str:
    lines = [
        "| family | epochs | no correction | surrogate (benefit) | SNR-damped surrogate (benefit) |",
        "|---|---:|---:|---:|---:|",
    ]

    def cell(c: dict[str, Any]) -> str:
        if c["seeds"] < len(SEEDS):
            return f"pending ({c['seeds']}/{len(SEEDS)})"
        text = f"{c['mean']:.1f} ± {c['std']:.1f}"
        if "benefit" in c:
            mark = " **better**" if c["better"] else (" **worse**" if c["worse"] else "")
            text += f" ({c['benefit']:+.1f}{mark})"
        return text

    for family, rows in summary.items():
        for epochs, cells in rows.items():
            lines.append(
                f"| {family} | {epochs} | {cell(cells['none'])} | {cell(cells['surrogate'])} | {cell(cells['snr'])} |"
            )
    lines += [
        "",
        f"Final J (mean over agents of each agent's return, mean ± std over {len(SEEDS)} seeds) at the comparison's budget; "
        "benefit: the correction's mean minus no correction's at the same epochs; **better** / **worse**: beyond the "
        "seed spread (mean − std vs mean + std). Generated by `python benchmarks/ppo_epochs.py`.",
    ]
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, Any], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(summary), figsize=(5 * len(summary), 3.6), squeeze=False)
    for ax, (family, rows) in zip(axes[0], summary.items(), strict=True):
        for name, color in (("surrogate", "tab:pink"), ("snr", "deeppink")):
            xs = [e for e in EPOCHS if "benefit" in rows[e][name]]
            ys = [rows[e][name]["benefit"] for e in xs]
            spread = [rows[e][name]["std"] + rows[e]["none"]["std"] for e in xs]
            ax.errorbar(xs, ys, yerr=spread, marker="o", capsize=3, color=color, label=LABELS[name])
        ax.axhline(0.0, color="gray", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlim(0.8, 25)  # also with no finished row yet
        ax.set_xticks(list(EPOCHS), [str(e) for e in EPOCHS])
        ax.set_xlabel("local epochs per round")
        ax.set_ylabel("final J − final J without correction")
        ax.set_title(family)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", action="store_true", help="run the missing runs first (cached one by one)")
    parser.add_argument("--cache", default=str(ROOT / "benchmarks" / "cache" / "ppo_epochs"), help="folder of the cached runs")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results"), help="folder for the JSON, PNG and table")
    args = parser.parse_args(argv)
    cache, output = pathlib.Path(args.cache), pathlib.Path(args.output)
    if args.sweep:
        cache.mkdir(parents=True, exist_ok=True)
        pc.sweep(FAMILIES, cache, SEEDS, pc.Progress(cache / "progress.log"), only_methods=METHODS)
    summary = summarize(cache)
    output.mkdir(parents=True, exist_ok=True)
    (output / "ppo_epochs.json").write_text(json.dumps({str(k): v for k, v in summary.items()}, indent=1, default=str) + "\n")
    (output / "ppo_epochs.md").write_text(markdown(summary))
    plot(summary, output / "ppo_epochs.png")
    return summary


if __name__ == "__main__":
    main()
