"""
Evaluate a model trained by :mod:`sb3_fedpg.zoo.train`: each agent's return under its own reward; watch or record it.

.. code-block:: bash

    python -m sb3_fedpg.zoo.enjoy --algo fedpg --env sb3_fedpg/HeteroCartPole-v0 -f logs --n-episodes 10
    python -m sb3_fedpg.zoo.enjoy --algo fedpg --env sb3_fedpg/HeteroCartPole-v0 -f logs --record-video -n 500

The run folder (``--exp-id``, default the latest) is found as the trainer made it; its
``config.yml`` rebuilds the same federation (agents, family parameters), and the global policy
is run on every agent's task. The mean over agents is the paper's global objective ``J(θ)``.

``--render`` shows, and ``--record-video`` records (Gymnasium's ``RecordVideo``, one MP4 per agent:
``<video folder>/agent_<i>-episode-0.mp4``), the policy for ``-n`` steps in each agent's own env, one agent
after the other: the shared dynamics under that agent's reward and parameters (for a family whose agents' dynamics
differ, the agent's own). A family whose dynamics draw no frames is refused before anything runs.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
from typing import Any

from sb3_fedpg.common.cli import ArgumentParser
from sb3_fedpg.zoo import ZOO_ALGOS
from sb3_fedpg.zoo.train import VEC_NORMALIZE_FILE, env_name, latest_run_id


def build_parser() -> argparse.ArgumentParser:
    """:return: the command-line parser"""
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", default="fedpg", choices=ZOO_ALGOS, help="algorithm")
    parser.add_argument("--env", required=True, help="env id the model was trained on")
    parser.add_argument("-f", "--log-folder", default="logs", help="log folder given to the trainer")
    parser.add_argument("--exp-id", type=int, default=0, help="run id (0: the latest)")
    parser.add_argument("--n-episodes", type=int, default=4, help="episodes per agent")
    parser.add_argument("--stochastic", action="store_true", help="sample actions instead of the deterministic ones")
    parser.add_argument("--seed", type=int, default=0, help="seed of the evaluation envs")
    parser.add_argument("--num-threads", type=int, default=1, help="torch threads (default 1; < 0 keeps torch's default)")
    parser.add_argument("--device", default="cpu", help="torch device")
    parser.add_argument("--output", default=None, help="also write the returns to this JSON file")
    parser.add_argument("--render", action="store_true", help="show each agent's env in a window (render_mode='human')")
    parser.add_argument(
        "--record-video", action="store_true", help="record one MP4 per agent (gymnasium.wrappers.RecordVideo, moviepy)"
    )
    parser.add_argument("--video-folder", default=None, help="folder for the videos (default: <run>/videos)")
    parser.add_argument(
        "-n",
        "--n-timesteps",
        "--video-length",
        type=int,
        default=1000,
        help="env steps shown / recorded per agent (rl-zoo's -n; episodes restart within them)",
    )
    return parser


def find_run(log_folder: str | os.PathLike, algo: str, env_id: str, exp_id: int = 0) -> pathlib.Path:
    """
    :param log_folder: the trainer's ``-f``
    :param algo: the algorithm name
    :param env_id: the env id
    :param exp_id: run id, 0 for the latest
    :return: the run folder
    """
    log_path = pathlib.Path(log_folder) / algo
    name = env_name(env_id)
    exp_id = exp_id or latest_run_id(log_path, name)
    run = log_path / f"{name}_{exp_id}"
    if exp_id < 1 or not (run / f"{name}.zip").is_file():
        raise FileNotFoundError(f"no trained {algo} model for {env_id} in {log_path} (looked for {run / f'{name}.zip'}).")
    return run


def enjoy(argv: list[str] | None = None) -> dict[str, Any]:
    """
    Evaluate a saved run from command-line arguments and print per-agent returns.

    :param argv: arguments (``None``: ``sys.argv[1:]``)
    :return: ``{"run": folder, "per_agent": [...], "global_return": mean}``
    """
    args = build_parser().parse_args(argv)
    if args.n_episodes < 1:
        raise ValueError(f"--n-episodes must be >= 1, got {args.n_episodes}.")
    if (args.render or args.record_video) and args.n_timesteps < 1:
        raise ValueError(f"--n-timesteps must be >= 1, got {args.n_timesteps}.")

    import torch as th

    from sb3_fedpg import make_federated_vec_env
    from sb3_fedpg.common.evaluation import evaluate_agents
    from sb3_fedpg.zoo import get_algo_class
    from sb3_fedpg.zoo.config import parse_yaml, validate_hyperparams

    if args.num_threads > 0:
        th.set_num_threads(args.num_threads)
    algo_class = get_algo_class(args.algo)
    run = find_run(args.log_folder, args.algo, args.env, args.exp_id)
    name = env_name(args.env)
    config_file = run / name / "config.yml"
    hyperparams = validate_hyperparams(
        parse_yaml(config_file.read_text(), os.fspath(config_file)), algo_class, os.fspath(config_file)
    )
    if args.render or args.record_video:
        from sb3_fedpg.envs.families import check_render_mode

        # Before anything runs: a family whose dynamics draw no frames says so, naming the env.
        try:
            check_render_mode(args.env, "rgb_array" if args.record_video else "human")
        except ValueError as error:
            raise ValueError(f"{error} Without --render / --record-video, enjoy prints the per-agent returns.") from error

    # One episode on each of n_episodes sub-envs per agent, all in lock-step.
    env = make_federated_vec_env(
        args.env,
        n_agents=hyperparams.n_agents,
        n_envs_per_agent=args.n_episodes,
        env_kwargs=hyperparams.env_kwargs,
        seed=args.seed,
    )
    stats_file = run / name / VEC_NORMALIZE_FILE
    if stats_file.is_file():  # trained with `normalize`: the saved statistics, fixed (rl-zoo does the same)
        from stable_baselines3.common.vec_env import VecNormalize

        env = VecNormalize.load(os.fspath(stats_file), env)
        env.training = False
    model = algo_class.load(run / f"{name}.zip", device=args.device)
    per_agent = evaluate_agents(model, env, n_episodes_per_env=1, deterministic=not args.stochastic)
    n_agents = env.n_agents
    env.close()

    result: dict[str, Any] = {
        "run": os.fspath(run),
        "per_agent": [float(r) for r in per_agent],
        "global_return": float(per_agent.mean()),
    }
    print(f"{args.algo} on {args.env} ({run}), {args.n_episodes} episode(s) per agent:")
    for i, value in enumerate(per_agent):
        print(f"  agent {i:>3}: {value:12.3f}")
    print(f"  {'mean':>9}: {result['global_return']:12.3f}   (global objective J: mean over agents of their own returns)")
    if args.render or args.record_video:
        video_folder = pathlib.Path(args.video_folder) if args.video_folder is not None else run / "videos"
        result["videos"] = show_agents(model, args, n_agents, hyperparams.env_kwargs, video_folder)
    if args.output is not None:
        pathlib.Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    return result


def show_agents(
    model: Any, args: argparse.Namespace, n_agents: int, env_kwargs: dict[str, Any], video_folder: pathlib.Path
) -> list[str]:
    """
    Run the policy for ``args.n_timesteps`` steps in each agent's own env, one agent after the other: shown in a
    window (``args.render``) and/or recorded to ``<video_folder>/agent_<i>-episode-0.mp4`` (``args.record_video``).

    :param model: the loaded model
    :param args: the parsed arguments
    :param n_agents: agents in the federation
    :param env_kwargs: the family parameters of the run
    :param video_folder: where the videos go
    :return: the videos written (empty without ``--record-video``)
    """
    import warnings

    from gymnasium.wrappers import HumanRendering, RecordVideo

    from sb3_fedpg.common.evaluation import make_agent_env, play_agent

    videos = []
    for agent in range(n_agents):
        agent_env = make_agent_env(
            args.env, agent, n_agents, env_kwargs, render_mode="rgb_array" if args.record_video else "human"
        )
        if args.record_video:
            with warnings.catch_warnings():  # "Overwriting existing videos": the folder is shared by the agents
                warnings.filterwarnings("ignore", message=".*Overwriting existing videos.*")
                agent_env = RecordVideo(
                    agent_env,
                    os.fspath(video_folder),
                    episode_trigger=lambda episode: episode == 0,
                    video_length=args.n_timesteps,
                    name_prefix=f"agent_{agent}",
                )
            if args.render:  # the recorded frames, shown as well
                agent_env = HumanRendering(agent_env)
        returns = play_agent(model, agent_env, args.n_timesteps, deterministic=not args.stochastic, seed=args.seed + agent)
        agent_env.close()  # writes the video
        done = (
            f"{len(returns)} episode(s) ended, mean return {sum(returns) / len(returns):.3f}"
            if returns
            else "no episode ended"
        )
        line = f"  agent {agent:>3}: {args.n_timesteps} steps, {done}"
        if args.record_video:
            videos.append(os.fspath(video_folder / f"agent_{agent}-episode-0.mp4"))
            line += f" -> {videos[-1]}"
        print(line)
    return videos


def main() -> None:
    """Command-line entry point."""
    try:
        enjoy()
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
