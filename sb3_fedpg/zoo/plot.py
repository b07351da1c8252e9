"""
Plot learning curves of zoo runs: mean and spread over seeds, one line per algorithm (and log folder).

.. code-block:: bash

    python -m sb3_fedpg.zoo.plot -f logs --algo fedpg fedppo --env sb3_fedpg/HeteroCartPole-v0 -o curves.png

Every run folder ``<log folder>/<algo>/<env name>_<run id>/`` of the env counts as one seed (rl-zoo's
``all_plots``). A run's curve is its ``evaluations.npz`` (``zoo.train --eval-freq``: ``J̄``, the mean over agents of
each agent's return under its own reward, at every evaluation) or its ``progress.csv`` (the training episodes'
``rollout/ep_rew_mean``, and each agent's ``fed/agent_<i>/ep_rew_mean``); ``--source auto`` takes the evaluations
when every run has them. The runs of a line are put on one step grid (linear interpolation where their steps
differ), and the line is their mean with a band: mean ± std, or min to max, over seeds. ``--per-agent`` adds a
panel per agent. The aggregation is :mod:`sb3_fedpg.common.plotting`, the demo's own.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
from typing import Any

from sb3_fedpg.common.cli import ArgumentParser
from sb3_fedpg.zoo import ZOO_ALGOS


def build_parser() -> argparse.ArgumentParser:
    """:return: the command-line parser (rl-zoo's plot_train / all_plots argument names)"""
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "-f", "--log-folders", "--exp-folders", nargs="+", default=["logs"], help="log folders (the trainer's -f)"
    )
    parser.add_argument("-a", "--algo", "--algos", nargs="+", required=True, choices=ZOO_ALGOS, help="algorithm(s)")
    parser.add_argument("-e", "--env", required=True, help="env id")
    parser.add_argument(
        "-l", "--labels", nargs="+", default=None, help="one label per line: log folders in order, algorithms within each"
    )
    parser.add_argument(
        "--source", default="auto", choices=("auto", "eval", "progress"), help="evaluations.npz, progress.csv, or auto"
    )
    parser.add_argument("-x", "--x-axis", default="steps", choices=("steps", "time"), help="x axis (time: progress only)")
    parser.add_argument("-w", "--window", type=int, default=1, help="smoothing: trailing mean over this many points")
    parser.add_argument("--band", default="std", choices=("std", "minmax", "none"), help="spread over seeds")
    parser.add_argument("--per-agent", action="store_true", help="a panel per agent besides the mean over agents")
    parser.add_argument("-max", "--max-timesteps", type=float, default=None, help="drop points beyond this x")
    parser.add_argument("-o", "--output", default="learning_curve.png", help="output image (PNG)")
    parser.add_argument("--title", default=None, help="title (default: the env id and the band)")
    parser.add_argument("--ylabel", default=None, help="y label (default: by source)")
    parser.add_argument("--colors", nargs="+", default=None, help="one matplotlib colour per line")
    parser.add_argument(
        "--linestyles", nargs="+", default=None, help="one matplotlib line style per line (solid, dashed, dotted, dashdot)"
    )
    parser.add_argument("--figsize", nargs=2, type=float, default=None, help="figure width and height, inches")
    parser.add_argument("--dpi", type=int, default=120, help="image resolution")
    return parser


def plot(argv: list[str] | None = None) -> dict[str, Any]:
    """
    Draw the learning curves from command-line arguments.

    :param argv: arguments (``None``: ``sys.argv[1:]``)
    :return: ``{"output": the image, "source": "eval" or "progress", "lines": [{"label", "runs", "curve",
        "per_agent"}]}`` with each line's :class:`~sb3_fedpg.common.plotting.AggregatedCurve` (and per agent)
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.window < 1:
        parser.error(f"--window must be >= 1, got {args.window}")

    from sb3_fedpg.common.plotting import J_BAR_LABEL, Series, aggregate_runs, draw_panel, find_runs, pick_source

    groups = [(folder, algo) for folder in args.log_folders for algo in args.algo]
    n_lines = len(groups)
    for option in ("labels", "colors", "linestyles"):
        given = getattr(args, option)
        if given is not None and len(given) != n_lines:
            parser.error(f"--{option}: {len(given)} given for {n_lines} line(s) (log folders x algorithms)")
    runs = {group: find_runs(group[0], group[1], args.env) for group in groups}
    empty = [f"{folder}/{algo}" for (folder, algo), found in runs.items() if not found]
    if empty:
        raise FileNotFoundError(f"no run of {args.env} in {', '.join(empty)}.")
    source = pick_source([run for found in runs.values() for run in found], args.source)

    lines = []
    for k, (folder, algo) in enumerate(groups):
        if args.labels is not None:
            label = args.labels[k]
        else:
            label = algo if len(args.log_folders) == 1 else f"{folder}: {algo}"
        curve, per_agent = aggregate_runs(
            runs[(folder, algo)], source, args.x_axis, args.window, args.band, args.max_timesteps, args.per_agent
        )
        lines.append(
            {"label": label, "runs": [os.fspath(r) for r in runs[(folder, algo)]], "curve": curve, "per_agent": per_agent}
        )

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(pick: Any) -> list[Series]:
        return [
            Series(
                line["label"],
                pick(line),
                None if args.colors is None else args.colors[k],
                "-" if args.linestyles is None else args.linestyles[k],
            )
            for k, line in enumerate(lines)
        ]

    ylabel = args.ylabel or (J_BAR_LABEL if source == "eval" else "training return (rollout/ep_rew_mean)")
    band = {"std": "mean ± std", "minmax": "mean and range", "none": "mean"}[args.band]
    title = args.title if args.title is not None else f"{args.env} ({band} over seeds)"
    title = title.replace("\\n", "\n")
    steps = args.x_axis == "steps"
    xlabel = "environment steps, all agents together" if steps else "wall-clock time (s)"
    n_agents = len(lines[0]["per_agent"]) if args.per_agent else 0
    if args.per_agent and any(len(line["per_agent"]) != n_agents for line in lines):
        raise ValueError("the lines have different numbers of agents: --per-agent needs the same federation.")
    n_panels = 1 + n_agents
    cols = min(n_panels, 3)
    rows = -(-n_panels // cols)
    figsize = args.figsize or ((7.5, 4.4) if n_panels == 1 else (5.0 * cols, 3.6 * rows))
    fig, axes = plt.subplots(rows, cols, figsize=figsize, squeeze=False)
    draw_panel(axes[0][0], series(lambda line: line["curve"]), title, ylabel, xlabel, steps)
    agent_ylabel = "return under its own reward" if source == "eval" else "training return (fed/agent_<i>/ep_rew_mean)"
    for i in range(n_agents):
        ax = axes[(i + 1) // cols][(i + 1) % cols]
        draw_panel(ax, series(lambda line, i=i: line["per_agent"][i]), f"agent {i}", agent_ylabel, xlabel, steps)
    for j in range(n_panels, rows * cols):
        axes[j // cols][j % cols].set_visible(False)
    fig.tight_layout()
    output = pathlib.Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=args.dpi)
    plt.close(fig)
    print(f"{source} curves of {sum(line['curve'].n_runs for line in lines)} run(s), {n_lines} line(s): {output}")
    return {"output": os.fspath(output), "source": source, "lines": lines}


def main() -> None:
    """Command-line entry point."""
    try:
        plot()
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
