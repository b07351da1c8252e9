"""``zoo.train --eval-freq`` (evaluations.npz), ``zoo.plot`` and the plotting module (issue 28, item 4)."""

import numpy as np
import pytest

from sb3_fedpg import demo
from sb3_fedpg.common import plotting
from sb3_fedpg.zoo import CONFIG_DIR
from sb3_fedpg.zoo.plot import plot
from sb3_fedpg.zoo.train import train

DEMO_CONF = CONFIG_DIR / "demo.yml"

FAMILY = "sb3_fedpg/HeteroCartPole-v0"
TINY = ["policy_kwargs:{net_arch: [16]}", "n_agents:2", "n_envs:4", "n_steps:16"]


def run(tmp_path, algo, seed, extra=(), n=640):
    argv = ["--algo", algo, "--env", FAMILY, "-n", str(n), "--seed", str(seed), "-f", str(tmp_path / "logs"), "--verbose", "0"]
    return train([*argv, "--eval-freq", "128", "--eval-episodes", "2", "-params", *TINY, *extra])


def test_evaluations_and_plot_match_the_files(tmp_path):
    runs = [run(tmp_path, "fedpg", seed, ["local_steps:2"]) for seed in (0, 1)]
    other = run(tmp_path, "fedppo", 0, ["batch_size:32", "n_epochs:1"])
    for folder in [*runs, other]:
        data = np.load(folder / "evaluations.npz")
        n_evals = len(data["timesteps"])
        assert data["timesteps"][0] == 0 and data["timesteps"][-1] >= 640 and n_evals >= 3
        assert data["results_per_agent"].shape == (n_evals, 2, 2)  # evaluations x agents x episodes
        assert np.allclose(data["results"], data["results_per_agent"].mean(axis=1))
        assert data["ep_lengths"].shape == (n_evals, 2)

    output = tmp_path / "curves.png"
    result = plot(
        ["-f", str(tmp_path / "logs"), "--algo", "fedpg", "fedppo", "--env", FAMILY, "-o", str(output), "--per-agent"]
    )
    assert output.stat().st_size > 0 and result["source"] == "eval"
    fedpg, fedppo = result["lines"]
    assert fedpg["runs"] == [str(r) for r in runs] and fedppo["runs"] == [str(other)]

    # By hand from the files: J̄ = mean over agents of each agent's mean episode return; mean and std over seeds.
    files = [np.load(r / "evaluations.npz") for r in runs]
    assert np.array_equal(files[0]["timesteps"], files[1]["timesteps"])  # same grid: nothing interpolated
    agents = np.array([f["results_per_agent"].mean(axis=2) for f in files])  # seeds x evaluations x agents
    j_bar = agents.mean(axis=2)
    curve = fedpg["curve"]
    assert np.array_equal(curve.x, files[0]["timesteps"])
    assert np.allclose(curve.mean, j_bar.mean(axis=0)) and np.allclose(curve.std, j_bar.std(axis=0))
    assert np.allclose(curve.low, curve.mean - curve.std) and np.allclose(curve.high, curve.mean + curve.std)
    for i in range(2):
        assert np.allclose(fedpg["per_agent"][i].mean, agents[:, :, i].mean(axis=0))
    assert fedppo["curve"].n_runs == 1 and np.allclose(fedppo["curve"].std, 0.0)

    # min-max band and the training curves of progress.csv
    minmax = plot(["-f", str(tmp_path / "logs"), "-a", "fedpg", "-e", FAMILY, "-o", str(output), "--band", "minmax"])
    assert np.allclose(minmax["lines"][0]["curve"].low, j_bar.min(axis=0))
    progress = plot(["-f", str(tmp_path / "logs"), "-a", "fedpg", "-e", FAMILY, "-o", str(output), "--source", "progress"])
    assert progress["source"] == "progress" and progress["lines"][0]["curve"].n_runs == 2

    with pytest.raises(FileNotFoundError, match="no run of"):
        plot(["-f", str(tmp_path / "logs"), "-a", "a2c", "-e", FAMILY, "-o", str(output)])


def test_zoo_runs_reproduce_the_demo_curves_exactly(tmp_path):
    """The demo's three methods as zoo runs (zoo_configs/demo.yml): the same J̄ curves."""
    args = ["--timesteps", "2000", "--n-agents", "2", "--local-steps", "2", "--seeds", "1", "--eval-every", "2"]
    payload = demo.main([*args, "--output", str(tmp_path / "demo")])
    chunk = 2 * 16 * 10 * 2 * 2  # the demo's evaluation period: n_envs x n_steps x H x eval_every
    for method, extra in demo_methods().items():
        argv = [
            "--algo",
            "fedpg",
            "--conf-file",
            str(DEMO_CONF),
            "--env",
            "sb3_fedpg/HeteroArm-v0",
            "-n",
            "2000",
            "--seed",
            "0",
            "--verbose",
            "0",
        ]
        evaluation = ["--eval-freq", str(chunk), "--eval-episodes", "8"]
        train([*argv, "-f", str(tmp_path / method), *evaluation, "-params", "n_agents:2", "local_steps:2", *extra])
        result = plot(
            ["-f", str(tmp_path / method), "-a", "fedpg", "-e", "sb3_fedpg/HeteroArm-v0", "-o", str(tmp_path / "x.png")]
        )
        curve = payload["results"][method][0]["curve"]
        assert result["lines"][0]["curve"].x.tolist() == curve["timesteps"]
        assert result["lines"][0]["curve"].mean.tolist() == curve["global_return"]  # bit for bit


def demo_methods():
    return {"Fast-FedPG": [], "FedAvg-PG": ["correction:false"], "centralised PG (H = 1)": ["local_steps:1"]}


def test_aggregation_interpolates_onto_a_common_grid():
    a = (np.array([0.0, 10.0, 20.0]), np.array([0.0, 1.0, 2.0]))
    b = (np.array([0.0, 5.0, 15.0, 25.0]), np.array([0.0, 1.0, 3.0, 5.0]))
    curve = plotting.aggregate_curves([a, b], band="minmax")
    assert curve.x.tolist() == [0.0, 5.0, 10.0, 15.0, 20.0]  # every x of either run inside the common range
    assert curve.runs[0].tolist() == [0.0, 0.5, 1.0, 1.5, 2.0] and curve.runs[1].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert curve.mean.tolist() == [0.0, 0.75, 1.5, 2.25, 3.0] and curve.high.tolist() == curve.runs[1].tolist()
    assert plotting.smooth(np.array([1.0, 3.0, 5.0, 7.0]), 2).tolist() == [1.0, 2.0, 4.0, 6.0]
    with pytest.raises(ValueError, match="do not overlap"):
        plotting.aggregate_curves([(np.array([0.0, 1.0]), np.zeros(2)), (np.array([2.0, 3.0]), np.zeros(2))])


def test_aggregation_on_a_given_grid_and_of_a_sweep():
    """The benchmark scripts' statistics: a given grid, the median with min-max, ddof = 1, runs a guard stopped."""
    a = (np.array([0.0, 10.0, 20.0]), np.array([0.0, 1.0, 2.0]))
    b = (np.array([0.0, 5.0, 15.0, 25.0]), np.array([0.0, 1.0, 3.0, 5.0]))
    curve = plotting.aggregate_curves([a, b], grid=a[0])  # the first run's grid, no common range needed
    assert curve.x.tolist() == [0.0, 10.0, 20.0] and curve.runs[1].tolist() == [0.0, 2.0, 4.0]
    values = np.array([[1.0, 5.0], [2.0, np.nan], [9.0, 7.0]])
    sweep = plotting.aggregate_values([0.5, 1.0], values, "minmax", "median", skip_nan=True)
    assert sweep.line.tolist() == [2.0, 6.0] and sweep.low.tolist() == [1.0, 5.0] and sweep.high.tolist() == [9.0, 7.0]
    assert np.isnan(plotting.aggregate_values([0.5, 1.0], values, "minmax", "median").line[1])
    spread = plotting.aggregate_values([0.5, 1.0], values[[0, 2]], ddof=1)
    assert spread.line.tolist() == spread.mean.tolist() == [5.0, 6.0] and np.allclose(spread.std, [np.sqrt(32), np.sqrt(2)])
    with pytest.raises(ValueError, match="center"):
        plotting.aggregate_values([0.5, 1.0], values, center="mode")
