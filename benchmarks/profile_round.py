"""
Where the time of a communication round goes.

Profiles ``FederatedPG.learn`` on ``sb3_fedpg/HeteroCartPole-v0`` (N = 8 agents x 8 envs,
default hyperparameters, one torch thread) twice: with cProfile (the full text listing,
top functions by own time) and with plain timers around the round's phases (collecting
batches vs computing gradients, no profiler overhead).

Writes ``benchmarks/results/profile_round.txt`` and ``profile_round.md``.
Run: ``python benchmarks/profile_round.py`` (``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pathlib
import pstats
import time
from typing import Any

from sb3_fedpg.common.cli import ArgumentParser

RESULTS = pathlib.Path(__file__).parent / "results"


def main(argv: list[str] | None = None, output: pathlib.Path = RESULTS) -> dict[str, Any]:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    import torch as th

    th.set_num_threads(1)
    from sb3_fedpg import FederatedPG
    from sb3_fedpg.common.federated_algorithm import FederatedAlgorithm
    from sb3_fedpg.fedpg.learner import PolicyGradientLearner

    timesteps = 20_000 if args.quick else 400_000
    model = FederatedPG("MlpPolicy", "sb3_fedpg/HeteroCartPole-v0", n_agents=8, n_envs_per_agent=8, seed=0)
    model.learn(1)  # warm-up

    # Phase timers: wrap the two halves of every gradient batch.
    spent = {"collect": 0.0, "gradients": 0.0}
    originals = {"collect": FederatedAlgorithm.collect_batch, "gradients": PolicyGradientLearner.gradients}

    def timed(name: str):
        def wrapper(self, *a: Any, **kw: Any) -> Any:
            start = time.perf_counter()
            out = originals[name](self, *a, **kw)
            spent[name] += time.perf_counter() - start
            return out

        return wrapper

    FederatedAlgorithm.collect_batch = timed("collect")  # type: ignore[method-assign]
    PolicyGradientLearner.gradients = timed("gradients")  # type: ignore[method-assign]
    try:
        start = time.perf_counter()
        model.learn(timesteps, reset_num_timesteps=False)
        total = time.perf_counter() - start
    finally:
        FederatedAlgorithm.collect_batch = originals["collect"]  # type: ignore[method-assign]
        PolicyGradientLearner.gradients = originals["gradients"]  # type: ignore[method-assign]
    rounds = model._n_rounds - 1

    profiler = cProfile.Profile()
    profiler.enable()
    model.learn(timesteps // 4, reset_num_timesteps=False)
    profiler.disable()
    listing = io.StringIO()
    pstats.Stats(profiler, stream=listing).sort_stats("tottime").print_stats(30)

    other = total - spent["collect"] - spent["gradients"]
    phases = {
        "collecting batches (policy forward + sampling in NumPy, env stepping, rewards, bookkeeping)": spent["collect"],
        "gradients (batched actor forward/backward, local critics, GAE, normalisation)": spent["gradients"],
        "round logic (fedmath correction and averaging, logging)": other,
    }
    lines = [
        f"N = 8 agents x 8 envs, {timesteps:,} env steps in {total:.2f} s ({timesteps / total:,.0f} steps/s), {rounds} rounds",
        "",
        "| phase | seconds | share |",
        "|---|---:|---:|",
        *[f"| {name} | {sec:.2f} | {sec / total:.0%} |" for name, sec in phases.items()],
    ]
    output.mkdir(parents=True, exist_ok=True)
    (output / "profile_round.md").write_text("\n".join(lines) + "\n")
    (output / "profile_round.txt").write_text(
        "cProfile of FederatedPG.learn (HeteroCartPole, N=8 x 8 envs), top 30 by own time\n\n" + listing.getvalue()
    )
    print("\n".join(lines))
    return {"phases": phases, "total": total, "rounds": rounds}


if __name__ == "__main__":
    main()
