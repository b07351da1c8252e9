"""
FedSVRPG-M's step size per family for the FederatedPPO comparison (issue 30, item 4: "tuned equally").

FedSVRPG-M (Wang et al., ICML 2024) takes plain SGD steps along its momentum-variance-reduced direction, so its
step size has no counterpart among the other methods' (Adam) settings; the authors' experiments used 0.05 with
momentum 0.5 and importance weights truncated at 1.8, which the comparison keeps. Every other setting is Fast-FedPG's
on the family (the same batches per round, see ``ppo_comparison._with_svrpgm``). The step size is chosen the way the
other methods' settings were (a small sweep on the family): each value of ``GRID`` (half-decades around the authors'
0.05) trains once at the family's full budget on a **tuning seed** that no reported run uses, and the value with the
highest mean ``J`` over the last three evaluations wins (a run that diverges loses). Where the winner is at an edge
of the values tried (or every run diverged), the next half-decade beyond that edge is tried too, until the winner is
inside the grid: unnormalised advantages (point mass, arm, LQR) need far smaller steps than normalised ones. The
comparison's
``SVRPGM_LEARNING_RATES`` must equal the winners (``tests/benchmarks/test_reports.py`` checks it).

Run: ``python benchmarks/svrpgm_tuning.py --sweep`` (cached run by run by the harness under
``benchmarks/cache/svrpgm_tuning``, resumable; long: ``nohup nice -n 10 ...``), then without flags to rebuild
``benchmarks/results/svrpgm_tuning.{json,md}``.
"""

from __future__ import annotations

import json
import pathlib
import sys
from typing import Any

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import ppo_comparison as pc
from harness import Cache, Run
from harness.runner import run_missing

from sb3_fedpg.common.cli import ArgumentParser

#: half-decades around the authors' 0.05: every family starts here
GRID = (0.003, 0.01, 0.03, 0.1, 0.3)
#: the half-decade ladder the grid extends along
LADDER = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0)
TUNING_SEED = 100
#: the selection score: mean global return over the last this many evaluations (less noisy than the final one)
LAST_EVALS = 3
CACHE = Cache(pc.ROOT / "benchmarks" / "cache" / "svrpgm_tuning")


def family_at(name: str, learning_rate: float) -> dict[str, Any]:
    """:return: the comparison's family with FedSVRPG-M at ``learning_rate``"""
    family = pc.FAMILIES[name]
    return {**family, "fedsvrpgm": {**family["fedsvrpgm"], "learning_rate": learning_rate}}


def tune(**config: Any) -> dict[str, Any]:
    """:return: the comparison's run (:func:`ppo_comparison.train`), or ``{"failed": message}`` for one that blew up"""
    try:
        return pc.train(**config)
    except (ValueError, FloatingPointError, RuntimeError) as error:
        return {"failed": str(error).splitlines()[0] if str(error) else type(error).__name__}


def tuning_run(name: str, learning_rate: float) -> Run:
    """:return: the family's FedSVRPG-M run at ``learning_rate`` on the tuning seed"""
    config = pc.run(name, family_at(name, learning_rate), "fedsvrpgm", TUNING_SEED).config
    return Run(tune, config, f"{name}_fedsvrpgm_lr{learning_rate:g}")


def load(name: str, learning_rate: float) -> dict[str, Any] | None:
    """:return: the cached tuning run (``{"failed": message}`` for one that blew up; ``None``: not run yet)"""
    run = tuning_run(name, learning_rate)
    return CACHE.load(run) if CACHE.has(run) else None


def tried(name: str) -> dict[float, dict[str, Any]]:
    """:return: every step size of the ladder run so far on the family (the grid's first)"""
    return {lr: run for lr in LADDER if (run := load(name, lr)) is not None}


def next_rates(name: str) -> list[float]:
    """:return: the step sizes still to run on the family: the grid's, then one half-decade beyond an edge winner"""
    runs = tried(name)
    missing = [lr for lr in GRID if lr not in runs]
    if missing:
        return missing
    rates = sorted(runs)
    scores = [score(runs[lr]) for lr in rates]
    at = LADDER.index
    if not np.isfinite(max(scores)) or int(np.argmax(scores)) == 0:
        return [LADDER[at(rates[0]) - 1]] if at(rates[0]) > 0 else []
    if int(np.argmax(scores)) == len(rates) - 1:
        return [LADDER[at(rates[-1]) + 1]] if at(rates[-1]) + 1 < len(LADDER) else []
    return []


def sweep(families: list[str]) -> None:
    """Run the missing (family, step size) runs, cheap families first; a run that blows up is recorded as failed."""
    for name in families:
        while todo := next_rates(name):
            run_missing([tuning_run(name, todo[0])], CACHE, desc=f"{name} lr {todo[0]:g}")


def score(result: dict[str, Any] | None) -> float:
    """:return: the selection score of a run (``-inf`` for a failed or non-finite one)"""
    if result is None or "failed" in result:
        return -np.inf
    value = float(np.mean(result["global_return"][-LAST_EVALS:]))
    return value if np.isfinite(value) else -np.inf


def report(output: pathlib.Path) -> dict[str, Any]:
    """Rebuild ``svrpgm_tuning.{json,md}`` from the cached runs (a family is chosen once its whole grid has run)."""
    families: dict[str, Any] = {}
    for name in pc.FAMILIES:
        cells = {}
        for lr, run in tried(name).items():
            if "failed" in run:
                cells[str(lr)] = {"status": "failed", "score": -np.inf, "error": run["failed"]}
            else:
                final, cpu = run["final_global"], run["cpu_seconds"]
                cells[str(lr)] = {"status": "done", "score": score(run), "final": final, "cpu": cpu}
        complete = bool(cells) and not next_rates(name)
        best = max(cells, key=lambda k: cells[k]["score"]) if complete else None
        families[name] = {"runs": cells, "complete": complete, "best": None if best is None else float(best)}
    payload = {"grid": list(GRID), "ladder": list(LADDER), "tuning_seed": TUNING_SEED, "last_evals": LAST_EVALS}
    payload["families"] = families
    output.mkdir(parents=True, exist_ok=True)
    (output / "svrpgm_tuning.json").write_text(json.dumps(payload, indent=1, default=str))
    shown = [lr for lr in LADDER if any(str(lr) in f["runs"] for f in families.values())]
    lines = [
        f"FedSVRPG-M's SGD step size per family (`benchmarks/svrpgm_tuning.py`): J = mean global return over the last "
        f"{LAST_EVALS} evaluations of one run at the family's full budget, tuning seed {TUNING_SEED} (not a reported "
        "seed); diverged: the run blew up; blank: not tried (the grid extends only beyond an edge winner); **bold**: the "
        "chosen step size.",
        "",
        "| family | " + " | ".join(f"lr {lr:g}" for lr in shown) + " | chosen |",
        "|---|" + "---:|" * len(shown) + "---:|",
    ]
    for name, fam in families.items():
        row = []
        for lr in shown:
            cell = fam["runs"].get(str(lr))
            text = "" if cell is None else "diverged" if cell["status"] == "failed" else f"{cell['score']:.1f}"
            row.append(f"**{text}**" if fam["best"] == lr else text)
        chosen = "pending" if fam["best"] is None else format(fam["best"], "g")
        lines.append(f"| {name} | " + " | ".join(row) + f" | {chosen} |")
    (output / "svrpgm_tuning.md").write_text("\n".join(lines) + "\n")
    return payload


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", action="store_true", help="run the missing tuning runs (cached), then report")
    parser.add_argument("--families", nargs="*", default=None, help="families to tune now (default: all)")
    parser.add_argument("--output", type=pathlib.Path, default=pc.RESULTS, help="folder for the JSON and table")
    args = parser.parse_args(argv)
    unknown = set(args.families or ()) - set(pc.FAMILIES)
    if unknown:
        parser.error(f"unknown families {sorted(unknown)}; choose from {sorted(pc.FAMILIES)}")
    if args.sweep:
        sweep(args.families or list(pc.FAMILIES))
    return report(args.output)


if __name__ == "__main__":
    main()
