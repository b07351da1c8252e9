import json

from sb3_fedpg import demo


def test_demo_runs_and_writes_outputs(tmp_path, capsys):
    payload = demo.main(
        ["--timesteps", "1500", "--n-agents", "2", "--local-steps", "2", "--eval-every", "1", "--output", str(tmp_path)]
    )
    assert (tmp_path / "learning_curve.png").stat().st_size > 0
    saved = json.loads((tmp_path / "demo.json").read_text())
    for name in ("Fast-FedPG", "FedAvg-PG"):
        result = saved["results"][name]
        assert len(result["per_agent"]) == 2
        assert result["curve"]["timesteps"][-1] >= 1500
        assert len(result["curve"]["global_return"]) >= 2
    assert payload["args"]["n_agents"] == 2
    out = capsys.readouterr().out
    assert "average (J)" in out and "Fast-FedPG" in out
