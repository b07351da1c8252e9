import os

import pytest

pytest.importorskip("flwr")


@pytest.fixture(autouse=True)
def flower_env(tmp_path, monkeypatch):
    """Flower writes under FLWR_HOME: keep it in the test's folder; no telemetry, no update checks."""
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "flwr_home"))
    monkeypatch.setenv("FLWR_TELEMETRY_ENABLED", "0")
    monkeypatch.setenv("FLWR_DISABLE_UPDATE_CHECK", "1")
    monkeypatch.setenv("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    os.makedirs(tmp_path / "flwr_home", exist_ok=True)
