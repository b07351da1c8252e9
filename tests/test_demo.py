import json

from sb3_fedpg import demo


def test_demo_runs_and_writes_outputs(tmp_path, capsys):
    payload = demo.main(
        [
            "--timesteps",
            "2000",
            "--n-agents",
            "2",
            "--local-steps",
            "2",
            "--seeds",
            "2",
            "--eval-every",
            "2",
            "--output",
            str(tmp_path),
        ]
    )
    assert (tmp_path / "learning_curve.png").stat().st_size > 0
    saved = json.loads((tmp_path / "demo.json").read_text())
    for name in demo.METHODS:
        runs = saved["results"][name]
        assert len(runs) == 2
        for run in runs:
            assert len(run["per_agent"]) == 2
            assert run["curve"]["timesteps"][-1] >= 2000
            assert len(run["curve"]["global_return"]) >= 2
    assert payload["args"]["n_agents"] == 2
    out = capsys.readouterr().out
    assert "average J̄" in out and "Fast-FedPG" in out and "FedAvg-PG" in out
